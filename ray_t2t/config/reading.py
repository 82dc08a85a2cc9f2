"""Reading YAML from users within bounds: a config file or an override's value ends quickly in data
or in one ConfigError naming the file (and line), whatever its bytes.

Limits (each refused with its own message; `RAY_T2T_MAX_CONFIG_BYTES` raises the first):
- the file: MAX_CONFIG_BYTES (1 MiB), UTF-8;
- nesting: MAX_DEPTH levels of mappings and lists;
- size: MAX_VALUES values once anchors and aliases are expanded (an alias bomb of a few lines
  would otherwise expand to billions);
- a key given twice in one mapping is refused (YAML would silently keep the last).
Messages quote at most MAX_SHOWN characters of any value (errors.shorten).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from ray_t2t.errors import ConfigError, shorten

MAX_CONFIG_BYTES = 1 << 20
MAX_DEPTH = 32
MAX_VALUES = 100_000
MAX_OVERRIDE_CHARS = 64 * 1024


def max_config_bytes() -> int:
    value = os.environ.get("RAY_T2T_MAX_CONFIG_BYTES")
    if value is None:
        return MAX_CONFIG_BYTES
    try:
        return max(1, int(value))
    except ValueError:
        raise ConfigError(f"RAY_T2T_MAX_CONFIG_BYTES={shorten(value)} is not a number of bytes") from None


def read_config_text(path: Path) -> str:
    """The text of a config file: at most max_config_bytes(), UTF-8. Reads no more than the limit, so
    a device (/dev/zero) or a huge file ends at once."""
    limit = max_config_bytes()
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: a folder, not a config file") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    if len(data) > limit:
        raise ConfigError(
            f"{path}: larger than {limit:,} bytes, the limit for a config file (a config is a few KB; "
            "RAY_T2T_MAX_CONFIG_BYTES raises the limit)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{path}: line {line}, column {column}: not UTF-8 (byte 0x{data[err.start]:02x}); save the config as UTF-8"
        ) from None


def load_yaml(text: str, source: str, plain_fallback: bool = False) -> Any:
    """yaml.safe_load with the limits above; raises ConfigError naming `source` (and the line). With
    `plain_fallback`, text that is not valid YAML is returned as the string it is (an override's value)."""
    loader = None
    try:
        loader = _BoundedLoader(text, source)
        node = loader.get_single_node()
        if node is None:
            return None
        values = _expanded_values(node)
        if values > MAX_VALUES:
            raise ConfigError(
                f"{source}: expands to more than {MAX_VALUES:,} values (anchors and aliases included); "
                "a config is a few hundred"
            )
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        if plain_fallback:
            return text
        raise ConfigError(f"{source}: not valid YAML: {shorten(str(err), 400)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: nested more than {MAX_DEPTH} levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()


class _BoundedLoader(yaml.SafeLoader):
    def __init__(self, text: str, source: str) -> None:
        super().__init__(text)
        self.source, self.depth = source, 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise ConfigError(f"{self.source}: line {mark.line + 1}: nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    hash(key)
                except TypeError:
                    continue  # PyYAML refuses an unhashable key itself, with its own message
                if key in seen:
                    raise ConfigError(
                        f"{self.source}: line {key_node.start_mark.line + 1}: key {shorten(repr(key))} is given "
                        f"twice in one mapping (first on line {seen[key]}); keep one"
                    )
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_values(root: yaml.Node) -> int:
    """How many values the document holds once every alias is expanded (linear in the nodes: an
    alias is the same node object, counted once per use through the memo)."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if id(node) in sizes:
            continue
        if isinstance(node, yaml.ScalarNode):
            sizes[id(node)] = 1
            continue
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else node.value
        if children_done:
            sizes[id(node)] = min(MAX_VALUES + 1, 1 + sum(sizes[id(child)] for child in children))
            open_nodes.discard(id(node))
            continue
        if any(id(child) in open_nodes for child in children):
            return MAX_VALUES + 1  # an alias inside its own anchor: endless once expanded
        open_nodes.add(id(node))
        stack.append((node, True))
        stack.extend((child, False) for child in children if id(child) not in sizes)
    return sizes[id(root)]

"""Raw config dicts before validation: ``a.b=value`` overrides, dotted paths, unknown keys named
with their section's valid keys, and pydantic errors as one line each."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from ray_t2t.config.reading import MAX_OVERRIDE_CHARS, load_yaml
from ray_t2t.errors import ConfigError, shorten


def unknown_keys(raw: Any, model: type[BaseModel], path: str = "") -> list[str]:
    """One message per unknown key anywhere in `raw`, naming its section and that section's valid keys."""
    if not isinstance(raw, dict):
        return []
    problems = []
    unknown = [key for key in raw if key not in model.model_fields]
    if unknown:
        where = f"section '{path}'" if path else "top level"
        names = ", ".join(shorten(repr(str(key)), 60) for key in unknown[:10])
        if len(unknown) > 10:
            names += f" and {len(unknown) - 10:,} more"
        problems.append(f"{where}: unknown key {names}. Valid keys: {', '.join(model.model_fields)}")
    for key, value in raw.items():
        if key in model.model_fields:
            annotation = model.model_fields[key].annotation
            problems += _unknown_keys_in_value(value, annotation, f"{path}.{key}" if path else str(key))
    return problems


def _unknown_keys_in_value(value: Any, annotation: Any, path: str) -> list[str]:
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown_keys_in_value(item, annotation, f"{path}.{i}")]
    sections = sections_in(annotation)
    if not isinstance(value, dict) or not sections:
        return []
    if len(sections) > 1:  # the methods union: the entry's `name` picks its section
        sections = [s for s in sections if typing.get_args(s.model_fields["name"].annotation) == (value.get("name"),)]
        if len(sections) != 1:
            return []  # an unknown method name; pydantic reports it with the valid names
    return unknown_keys(value, sections[0], path)


def format_error(error: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    shown = error.get("input")
    got = (
        ""
        if error["type"] in ("missing", "value_error") or isinstance(shown, dict)
        else f" (got {shorten(repr(shown))})"
    )
    return f"{shorten(loc) or 'top level'}: {shorten(message, 400)}{got}"


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override in place. The value is read as YAML (``1``, ``true``, ``[1, 2]``,
    ``{a: 1}``); list items are addressed by index (``methods.0.rank=16``)."""
    shown = f"override {shorten(repr(override))}"
    if len(override) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"{shown}: longer than {MAX_OVERRIDE_CHARS:,} characters; put the value in the config file")
    key, sep, value_text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"{shown} is not of the form section.key=value")
    set_path(raw, key, load_yaml(value_text, shown, plain_fallback=True), shown)


def set_path(raw: dict, key: str, value: Any, context: str) -> None:
    """Set the dotted `key` of a raw config dict in place (list items by index); `context` starts
    the error message."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{context}: {where} is not an index of a list of {len(node)}")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{context}: {'.'.join(parts[:i])} is a value, not a section")


def sections_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        for section in sections_in(arg):
            if section not in found:
                found.append(section)
    return found

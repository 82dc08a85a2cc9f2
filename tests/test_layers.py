"""The package's layers only point down, and a method is one file plus one registry line.

Layers, top to bottom (a module may import its own layer's modules and any layer below it):

    cli → pipeline → sweep → (train | inference | report) → soft_targets → (preflight | ray_cluster)
        → config.experiment → methods → (models | data | batching | teachers | ...) → config.sections ...

Imports under `if TYPE_CHECKING:` are type hints, never executed, and do not count.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "ray_t2t"

# Top first. A package name stands for every module in it.
LAYERS = [
    ["cli", "api"],
    ["pipeline"],
    ["sweeps", "tune_search"],
    ["training", "inference", "reporting"],
    ["soft_targets"],
    ["preflight", "ray_cluster"],
    ["config.experiment", "config.explain"],
    ["methods"],
    ["models", "data", "batching", "decoding", "teachers", "ledger", "tokenizer", "tracking"],
    [
        "config.sections",
        "config.overrides",
        "config.reading",
        "config",
        "storage",
        "metrics",
        "errors",
        "presets",
        "placement",
        "run_record",
        "model_card",
        "plugins",
        "console",
        "__init__",
    ],
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    if rank is None:
        raise AssertionError(f"ray_t2t.{module} is in no layer: add it to LAYERS in {__file__}")
    return rank


def runtime_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ray_t2t import the module executes, at top level or in a function."""
    tree = ast.parse(path.read_text())
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "ray_t2t":
                found += [(node.lineno, alias.name) for alias in node.names]
            elif node.module.startswith("ray_t2t."):
                base = node.module.removeprefix("ray_t2t.")
                # `from ray_t2t.methods import kd_logits` imports a module of the package
                for alias in node.names:
                    sub = PACKAGE / base.replace(".", "/") / f"{alias.name}.py"
                    found.append((node.lineno, f"{base}.{alias.name}" if sub.exists() else base))
        elif isinstance(node, ast.Import):
            found += [
                (node.lineno, a.name.removeprefix("ray_t2t.")) for a in node.names if a.name.startswith("ray_t2t.")
            ]
    return found


def test_every_import_points_down_or_sideways():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        mine = layer_of(module)
        for line, target in runtime_imports(path):
            if target == "__version__" or (module, target) == ("__init__", "api"):
                continue  # the package's own facade: `ray_t2t.training` imports ray_t2t.api on first use
            if layer_of(target) < mine:
                upward.append(f"ray_t2t/{path.relative_to(PACKAGE)}:{line} imports ray_t2t.{target} (a layer above)")
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_cycle():
    graph: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        graph[module_name(path)] = {t for _, t in runtime_imports(path) if t != "__version__"}

    def resolve(target: str) -> str:
        while target not in graph and "." in target:
            target = target.rsplit(".", 1)[0]
        return target

    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            target = resolve(target)
            # a package's __init__ importing its own submodules is how a package is built
            if target.startswith(node + ".") or target == node:
                continue
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if state.get(target) is None:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if state.get(node) is None:
            visit(node)


def test_only_the_command_line_imports_inside_functions():
    """An import of the package inside a function hides a dependency (and, once, hid a cycle). Only
    the entry points keep them there: cli.py and api.py (`ray-t2t --help`, `validate` and
    `import ray_t2t` start without torch and Ray) and the package's lazy facade."""
    hidden = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name in ("cli.py", "api.py", "__init__.py") and path.parent == PACKAGE:
            continue
        tree = ast.parse(path.read_text())
        typing_only = {
            id(n)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
            for child in node.body
            for n in ast.walk(child)
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.col_offset > 0
                and id(node) not in typing_only
                and (node.module or "").startswith("ray_t2t")
            ):
                hidden.append(f"ray_t2t/{path.relative_to(PACKAGE)}:{node.lineno}: {ast.unparse(node)}")
    assert not hidden, "\n".join(hidden)


@pytest.mark.parametrize("module", ["ray_t2t.methods", "ray_t2t.config.sections", "ray_t2t.teachers"])
def test_lower_layers_import_without_the_upper_ones(module):
    """Importing a layer pulls in nothing above it (checked in a fresh interpreter)."""
    import subprocess
    import sys

    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('ray_t2t.')))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    mine = layer_of(module.removeprefix("ray_t2t."))
    above = [m for m in loaded if layer_of(m.removeprefix("ray_t2t.")) < mine]
    assert not above, f"importing {module} imported {above}"

"""Plug-ins: methods, tasks and metrics from installed packages, through entry points.

A package adds them in its pyproject.toml (examples/custom_method/ is one):

    [project.entry-points."ray_t2t.methods"]
    smooth_ce = "my_package.method:METHOD"        # a ray_t2t.methods.base.Method
    [project.entry-points."ray_t2t.tasks"]
    reverse = "my_package.task:load"              # (DataSection) -> {split: [Example, ...]} or [Example, ...]
    [project.entry-points."ray_t2t.metrics"]
    char_accuracy = "my_package.metric:METRIC"    # a ray_t2t.metrics.Metric

Every installed plug-in is loaded when its registry is first imported, whatever the config says; a
config only chooses among the registered names. Nothing is imported because a config names it, so
a config stays data (docs/plugins.md).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from ray_t2t.errors import UserError

GROUPS = ("ray_t2t.methods", "ray_t2t.tasks", "ray_t2t.metrics")


class PluginError(UserError):
    """An installed plug-in that cannot be used: it fails to import, or is not what its group needs."""


def names(group: str) -> list[str]:
    """The names the installed plug-ins of `group` register, without importing them."""
    return sorted({point.name for point in entry_points(group=group)})


def load(group: str, builtin: set[str] | frozenset[str] = frozenset()) -> list[tuple[str, Any, str]]:
    """(name, object, where) of every installed plug-in of `group`, sorted by name; `where` names the
    distribution and the entry point for messages. PluginError when one fails to import, or reuses a
    built-in name or another plug-in's."""
    found: dict[str, tuple[Any, str]] = {}
    for point in sorted(entry_points(group=group), key=lambda p: (p.name, p.value)):
        dist = f"{point.dist.name} {point.dist.version}" if point.dist is not None else "an unknown package"
        where = f"plug-in {point.name!r} of {dist} ({group}: {point.value})"
        if point.name in builtin:
            raise PluginError(f"{where}: {point.name!r} is a built-in name; the plug-in must use another")
        if point.name in found:
            raise PluginError(f"{where}: {found[point.name][1]} registers {point.name!r} too; uninstall one")
        try:
            found[point.name] = (point.load(), where)
        except Exception as err:  # any import-time failure of third-party code, reported with its origin
            raise PluginError(f"{where} failed to load: {type(err).__name__}: {err}") from err
    return [(name, obj, where) for name, (obj, where) in found.items()]

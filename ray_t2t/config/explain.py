"""``ray-t2t validate --explain``: every field of the config with its type, default and description
(and a config's values), the methods' entries under methods[name=...]."""

from __future__ import annotations

import json
import types
import typing
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel

from ray_t2t.config.experiment import ExperimentConfig, schema
from ray_t2t.config.overrides import sections_in
from ray_t2t.errors import ConfigError
from ray_t2t.methods import METHODS


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(path, type, default, description) for every field, sections expanded recursively."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        sections = sections_in(annotation)
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "" if sections else json.dumps(_jsonable(field.default_factory()))
        else:
            default = json.dumps(_jsonable(field.default))
        rows.append((path, _type_name(annotation), default, field.description or ""))
        if name == "methods" and issubclass(model, ExperimentConfig):
            for method_name, spec in METHODS.items():
                rows.append((f"methods[name={method_name}]", "method", "", spec.params.__doc__ or ""))
                rows += [
                    r
                    for r in describe_fields(spec.params, f"methods[name={method_name}].")
                    if r[0] != f"methods[name={method_name}].name"
                ]
        else:
            for section in sections:
                rows += describe_fields(section, f"{path}.")
    return rows


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join(dict.fromkeys("null" if a is type(None) else _type_name(a) for a in args))
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map {_type_name(args[0])} -> {_type_name(args[1])}"
    if origin is Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def explain(cfg: ExperimentConfig | None = None, section: str | None = None) -> str:
    """Text listing every field with type, default and description; with a config, its values too."""
    values = _flatten(cfg.model_dump(mode="json")) if cfg is not None else {}
    lines = []
    for path, type_name, default, description in describe_fields(schema()):
        if section and not (path == section or path.startswith(section + ".") or path.startswith(section + "[")):
            continue
        head = f"{path}  ({type_name}"
        head += f", default {default})" if default and default != "required" else (", required)" if default else ")")
        if path in values and type_name != "section":
            head += f"  = {json.dumps(values[path])}"
        lines.append(head)
        if description:
            lines.append(f"    {description}")
    if not lines:
        valid = ", ".join(ExperimentConfig.model_fields)
        raise ConfigError(f"no config section {section!r}. Valid sections: {valid}")
    return "\n".join(lines)


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """{'a.b': value} for every node of a nested dict (sections and their leaves)."""
    out = {path: value} if path else {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flatten(item, f"{path}.{key}" if path else key))
    return out

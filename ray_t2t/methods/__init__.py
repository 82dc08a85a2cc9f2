"""Training methods: one file each, registered here by name.

A method file holds the method's parameters model, its traits and its hooks, and ends with one
`METHOD = Method(...)` (the protocol and its defaults: ray_t2t.methods.base). The config's `methods`
entries are validated against the registered methods' parameter models; the launcher, preflight and
the report ask a method's traits. Names in a config map to this registry only: nothing named in a
config is ever imported. Adding a method: its file, one line below, its test and a config
(docs/methods.md).

Methods that run a live teacher in the workers (kd_logits online, kd_hidden, kd_attention,
kd_relational) share ray_t2t.methods.distill: the teacher found before training and loaded once per
worker, frozen and outside the DeepSpeed engine; layer maps; hidden states and attention maps.
"""

from __future__ import annotations

from ray_t2t import plugins
from ray_t2t.methods import (
    fewshot,
    finetune,
    gan,
    kd_attention,
    kd_hidden,
    kd_logits,
    kd_multi_teacher,
    kd_relational,
    kd_sequence,
    lora,
    multitask,
    partial,
    pretrain,
    qlora,
    scratch,
    sft,
    vae,
)
from ray_t2t.methods.base import (
    Method,
    Setup,
    collate,
    cross_entropy,
    model_spec,
    save_pretrained,
)

__all__ = [
    "METHODS",
    "Method",
    "Setup",
    "collate",
    "cross_entropy",
    "get_method",
    "model_spec",
    "register",
    "save_pretrained",
]

METHODS: dict[str, Method] = {}
_version = [0]


def register(method: Method) -> Method:
    """Make `method` available to configs (`{name: <method.name>, ...}`) and to every command. A name
    is registered once."""
    if method.name in METHODS and METHODS[method.name] is not method:
        raise ValueError(f"a method named {method.name!r} is registered already")
    params_name = method.params.model_fields["name"].annotation
    if getattr(params_name, "__args__", None) != (method.name,):
        raise ValueError(f"{method.params.__name__}.name must be Literal[{method.name!r}]")
    METHODS[method.name] = method
    _version[0] += 1
    return method


def registry_version() -> int:
    """Changes whenever a method is registered (the config schema is rebuilt then)."""
    return _version[0]


def get_method(name: str) -> Method:
    """The method registered as `name`. Raises KeyError naming the methods there are."""
    if name not in METHODS:
        raise KeyError(f"method {name!r} is not implemented yet. Implemented: {', '.join(METHODS)}")
    return METHODS[name]


register(scratch.METHOD)
register(pretrain.METHOD)
register(finetune.METHOD)
register(lora.METHOD)
register(qlora.METHOD)
register(partial.METHOD)
register(sft.METHOD)
register(kd_logits.METHOD)
register(kd_sequence.METHOD)
register(kd_hidden.METHOD)
register(kd_attention.METHOD)
register(kd_relational.METHOD)
register(kd_multi_teacher.METHOD)
register(gan.METHOD)
register(vae.METHOD)
register(fewshot.METHOD)
register(multitask.METHOD)
for _name, _method, _where in plugins.load("ray_t2t.methods", builtin=set(METHODS)):
    if not isinstance(_method, Method) or _method.name != _name:
        raise plugins.PluginError(f"{_where}: a method is a ray_t2t.methods.base.Method named {_name!r}")
    register(_method)

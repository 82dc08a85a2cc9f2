"""Adding a method is one file plus one registration: a toy method from its own module (toy_method.py)
goes through config validation, --explain, the traits every layer asks, and a short training run."""

from __future__ import annotations

from pathlib import Path

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.config.explain import explain
from ray_t2t.data import prepare_data
from ray_t2t.errors import ConfigError
from ray_t2t.methods import METHODS, Method, get_method, register
from ray_t2t.methods.base import FAMILIES

from conftest import LOCAL_DATA, minimal_config, train_locally


def test_every_registered_method_declares_its_parameters_and_traits():
    for name, method in METHODS.items():
        assert isinstance(method, Method) and method.name == name
        assert method.params.__doc__, f"{name}: its parameters model has no docstring (its summary)"
        assert method.kind in ("normal", "distillation", "alternative")
        assert set(method.families) <= set(FAMILIES)
        # a distillation method is one that uses the teacher, and only those do
        params = method.params.model_construct()
        assert (method.kind == "distillation") == (method.teacher_use(params) is not None), name


def test_a_method_file_hands_every_hook_it_defines_to_its_method():
    """A module-level function named like a hook that the Method does not carry would silently not run."""
    import dataclasses
    import importlib

    hooks = [f.name for f in dataclasses.fields(Method) if "Callable" in str(f.type)]
    assert {"build", "check", "prepare", "collate", "loss", "export", "batch_order"} <= set(hooks)
    package = Path(importlib.import_module("ray_t2t.methods").__file__).parent
    for name, method in METHODS.items():
        if not (package / f"{name}.py").exists():
            continue  # registered from elsewhere (a test's own method)
        module = importlib.import_module(f"ray_t2t.methods.{name}")
        assert module.METHOD is method
        for hook in hooks:
            defined = getattr(module, hook, None)
            if callable(defined):
                assert getattr(method, hook) is defined, f"{name}.{hook} is defined but not given to its Method"


def test_a_toy_method_from_its_own_module_validates_and_explains(tmp_path):
    import toy_method  # registers toy_smooth

    assert get_method("toy_smooth") is toy_method.METHOD
    cfg = validate_config(minimal_config(tmp_path, methods=[{"name": "toy_smooth", "smoothing": 0.2}]))
    assert cfg.methods[0].smoothing == 0.2 and type(cfg.methods[0]) is toy_method.SmoothParams
    with pytest.raises(ConfigError, match=r"methods\.0\.toy_smooth\.smoothing: .*less than 1"):
        validate_config(minimal_config(tmp_path, methods=[{"name": "toy_smooth", "smoothing": 1.5}]))
    with pytest.raises(ConfigError, match=r"section 'methods\.0': unknown key 'rank'\. Valid keys: .*smoothing"):
        validate_config(minimal_config(tmp_path, methods=[{"name": "toy_smooth", "rank": 4}]))
    text = explain(section="methods")
    assert "methods[name=toy_smooth].smoothing  (float, default 0.1)" in text
    assert "Probability mass spread over the whole vocabulary." in text
    with pytest.raises(ValueError, match="registered already"):
        register(Method("toy_smooth", toy_method.SmoothParams, toy_method.build))


def test_a_toy_method_trains_and_the_run_record_says_so(tmp_path):
    import toy_method  # noqa: F401  (registers toy_smooth here, for validation; the worker imports it too)

    raw = minimal_config(
        tmp_path,
        data=LOCAL_DATA,
        methods=[{"name": "toy_smooth", "smoothing": 0.1}],
        training={"max_steps": 30, "batch_size": 32, "learning_rate": 3e-3, "warmup_steps": 3},
        eval={"every_n_steps": 15},
    )
    cfg = validate_config(raw)
    prepared = prepare_data(cfg)
    record = train_locally(cfg, "toy_smooth", prepared.path, tmp_path / "run", imports=("toy_method",))
    assert record["status"] == "finished" and record["method"] == "toy_smooth"
    assert record["params"]["smoothing"] == 0.1
    curve = record["learning_curve"]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]  # it learned
    assert "train_plain_loss" in curve[-1]  # the statistics its loss hook returned

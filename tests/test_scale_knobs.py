"""Scale-up knobs: training.epochs, training.gradient_checkpointing, models.*.attn_implementation and
deepspeed.config_overrides: each is checked by validate, reaches the training it names, and trains."""

from __future__ import annotations

import math

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import ConfigError
from ray_t2t.training.launcher import entry_config, steps_from_epochs
from ray_t2t.training.loop import check_deepspeed_config, deepspeed_config

from conftest import LOCAL_DATA, TINY_T5, minimal_config, train_locally


def config(tmp_path, **sections):
    return validate_config(minimal_config(tmp_path, methods=[{"name": "scratch"}], **sections))


# ---------------------------------------------------------------------------------------- epochs


def test_epochs_become_steps_over_the_global_batch(tmp_path):
    cfg = config(tmp_path, training={"epochs": 3, "batch_size": 32})
    assert steps_from_epochs(cfg, 1000).training.max_steps == math.ceil(3 * 1000 / 32)
    cfg = config(
        tmp_path,
        training={"epochs": 0.5, "batch_size": 16},
        deepspeed={"gradient_accumulation_steps": 2},
        scaling={"num_workers": 2},
    )
    assert steps_from_epochs(cfg, 1000).training.max_steps == math.ceil(0.5 * 1000 / 64)
    assert steps_from_epochs(config(tmp_path), 1000).training.max_steps == 2000  # no epochs: max_steps decides
    with pytest.raises(ConfigError, match="is 1,000,000,000,000 steps, more than"):
        steps_from_epochs(config(tmp_path, training={"epochs": 100_000, "batch_size": 1}), 10**7)


def test_a_method_entrys_own_max_steps_wins_over_epochs(tmp_path):
    raw = minimal_config(tmp_path, methods=[{"name": "scratch", "max_steps": 7}], training={"epochs": 2})
    cfg = validate_config(raw)
    trained = entry_config(cfg, cfg.methods[0])
    assert trained.training.max_steps == 7 and trained.training.epochs is None


def test_asha_needs_steps_not_epochs(tmp_path):
    with pytest.raises(ConfigError, match="give training.max_steps instead of training.epochs"):
        config(tmp_path, training={"epochs": 2}, tune={"scheduler": "asha"})


def test_a_run_of_one_epoch_takes_one_pass_of_steps(tmp_path):
    from ray_t2t.training.launcher import train

    cfg = config(
        tmp_path,
        training={"epochs": 1, "batch_size": 32, "warmup_steps": 1},
        scaling={"local_mode": True},
        eval={"every_n_steps": 5},
    )
    record = train(cfg, log=lambda message: None)
    assert record["steps"] == {"planned": math.ceil(300 / 32), "done": math.ceil(300 / 32)}  # 300 training examples


# ------------------------------------------------------------------------------ checkpointing, attention


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    from ray_t2t.data import prepare_data

    folder = tmp_path_factory.mktemp("knobs")
    raw = minimal_config(folder, methods=[{"name": "scratch"}], models={"student": TINY_T5})
    raw["data"] = LOCAL_DATA
    raw["training"] = {"batch_size": 32, "max_steps": 20, "warmup_steps": 2}
    raw["eval"] = {"every_n_steps": 10}
    return folder, raw, prepare_data(validate_config(raw))


def test_gradient_checkpointing_trains_identically(prepared):
    folder, raw, data = prepared
    runs = {}
    for checkpointing in (False, True):
        cfg = validate_config({**raw, "training": {**raw["training"], "gradient_checkpointing": checkpointing}})
        runs[checkpointing] = train_locally(cfg, "scratch", data.path, folder / f"gc_{checkpointing}")
    losses = [[p["val_loss"] for p in runs[c]["learning_curve"]] for c in (False, True)]
    assert losses[0][-1] < losses[0][0]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)


def test_gradient_checkpointing_reaches_the_model(prepared):
    from ray_t2t.config.experiment import validate_config as validated
    from ray_t2t.methods import Setup, get_method
    from ray_t2t.training.loop import enable_gradient_checkpointing

    _, raw, data = prepared
    cfg = validated(raw)
    model = get_method("scratch").build(Setup(cfg, cfg.methods[0], data.tokenizer(), seed=0))
    enable_gradient_checkpointing(model)
    assert model.is_activation_checkpointing


@pytest.mark.parametrize("preset", ["t5-tiny", "gpt2-tiny"])
def test_attention_implementations_agree(prepared, preset):
    import torch

    from ray_t2t.config.sections import ModelSpec
    from ray_t2t.models import build_model

    _, _, data = prepared
    tokenizer = data.tokenizer()
    ids = torch.tensor([tokenizer.encode_sources(["hello", "world"])[0]])
    losses = {}
    for attention in ("eager", "sdpa"):
        model, _ = build_model(ModelSpec(preset=preset, attn_implementation=attention), tokenizer, seed=0)
        assert model.config._attn_implementation == attention
        with torch.no_grad():
            losses[attention] = float(model(input_ids=ids, labels=ids).loss)
    assert losses["eager"] == pytest.approx(losses["sdpa"], rel=1e-5)


# --------------------------------------------------------------------------------- DeepSpeed overrides


def test_deepspeed_overrides_are_merged_and_checked(tmp_path):
    overrides = {"zero_optimization": {"overlap_comm": True, "reduce_bucket_size": 1_000_000}}
    cfg = config(tmp_path, deepspeed={"zero_stage": 2, "config_overrides": overrides})
    merged = deepspeed_config(cfg, world_size=1)
    assert merged["zero_optimization"] == {"stage": 2, "overlap_comm": True, "reduce_bucket_size": 1_000_000}
    check_deepspeed_config(cfg, 1)  # DeepSpeed accepts it
    bad = config(tmp_path, deepspeed={"zero_stage": 2, "config_overrides": {"zero_optimization": {"no_such": 1}}})
    with pytest.raises(ConfigError, match="deepspeed.config_overrides: DeepSpeed refuses it: .*no_such"):
        check_deepspeed_config(bad, 1)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"optimizer": {"type": "Adam"}}, "'optimizer' is set by ray_t2t: every method trains with the same AdamW"),
        ({"train_batch_size": 64}, "use training.batch_size"),
        ({"zero_optimization": {"stage": 3}}, "zero_optimization.stage is set by ray_t2t: use deepspeed.zero_stage"),
        ({"no_such_key": 1}, "'no_such_key' is not a DeepSpeed config key ray_t2t passes on"),
    ],
)
def test_deepspeed_overrides_of_what_ray_t2t_sets_are_refused(tmp_path, overrides, expected):
    with pytest.raises(ConfigError, match=expected):
        config(tmp_path, deepspeed={"config_overrides": overrides})


def test_a_run_trains_with_deepspeed_overrides(prepared):
    folder, raw, data = prepared
    cfg = validate_config(
        {
            **raw,
            "deepspeed": {"zero_stage": 2, "config_overrides": {"zero_optimization": {"reduce_bucket_size": 10**6}}},
        }
    )
    record = train_locally(cfg, "scratch", data.path, folder / "ds_overrides")
    curve = [p["val_loss"] for p in record["learning_curve"]]
    assert record["status"] == "finished" and curve[-1] < curve[0]

"""Every model family trains for real: a tiny T5, BART, GPT-2 and Llama each learn from scratch
(validation loss down, token accuracy up against step 0)."""

from __future__ import annotations

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.data import prepare_data

from conftest import LOCAL_DATA, minimal_config, train_locally

FAMILIES = ["t5-tiny", "bart-tiny", "gpt2-tiny", "llama-tiny"]
TRAINING = {"batch_size": 32, "max_steps": 80, "warmup_steps": 4, "learning_rate": 3e-3}


def learned(record: dict) -> None:
    first, last = record["learning_curve"][0], record["learning_curve"][-1]
    assert record["status"] == "finished" and record["steps"]["done"] == TRAINING["max_steps"]
    assert last["val_loss"] < first["val_loss"], record["learning_curve"]
    assert last["val_token_accuracy"] > first["val_token_accuracy"], record["learning_curve"]


@pytest.mark.parametrize("preset", FAMILIES)
def test_a_model_of_each_family_learns_from_scratch(tmp_path, preset):
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], models={"student": {"preset": preset}})
    raw.update(data=LOCAL_DATA, training=TRAINING, eval={"every_n_steps": 40})
    cfg = validate_config(raw)
    data = prepare_data(cfg)
    learned(train_locally(cfg, "scratch", data.path, tmp_path / "scratch"))

"""The multitask method through real Ray Train (one local Ray on loopback): the driver's prepare()
builds the pooled dataset, the workers train on it and record every task. ~40 s on 2 cores."""

from __future__ import annotations

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.ray_cluster import start_local_ray
from ray_t2t.training.launcher import train

from conftest import minimal_config

pytestmark = pytest.mark.ray


@pytest.fixture
def ray_session():
    import ray

    start_local_ray(
        {"env_vars": {"RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0", "DS_ACCELERATOR": "cpu"}}, num_cpus=2
    )
    yield
    ray.shutdown()


@pytest.mark.usefixtures("ray_session")
def test_multitask_trains_through_ray_train(tmp_path):
    tasks = [
        {"task": "g2p_cmudict", "split_sizes": {"train": 500, "validation": 16, "test": 16}},
        {
            "task": "num2words",
            "split_sizes": {"train": 200, "validation": 8, "test": 8},
            "num2words": {"languages": ["en", "fr"], "max_number": 999},
            "target": "per <= 100",
        },
    ]
    raw = minimal_config(tmp_path, methods=[{"name": "multitask", "tasks": tasks, "mixing": "fixed"}])
    raw["methods"][0]["tasks"][0]["weight"] = 1
    raw["methods"][0]["tasks"][1]["weight"] = 3
    raw["data"] |= {
        "tokenizer": {"source_level": "char", "target_level": "char"},
        "max_source_length": 80,
        "max_target_length": 80,
    }
    raw["training"] = {"batch_size": 16, "max_steps": 20, "warmup_steps": 2}
    raw["eval"] = {"every_n_steps": 10, "max_new_tokens": 16}
    record = train(validate_config(raw), "multitask", log=lambda message: None)
    assert record["status"] == "finished" and record["data"]["task"] == "multitask"
    assert record["data"]["train_examples"] == 500 + 400  # the pooled folder, not the experiment's g2p data
    assert record["multitask"]["tasks"]["n2w"]["probability"] == pytest.approx(0.75)
    last = record["learning_curve"][-1]
    assert last["step"] == 20 and {"val_wer_g2p", "val_wer_n2w", "val_loss_n2w"} <= set(last)
    assert record["time_to_target_by_task"] == {"g2p": None, "n2w": record["time_to_target_by_task"]["n2w"]}
    assert record["time_to_target_by_task"]["n2w"]["step"] == 0
    assert {"wer_g2p", "wer_n2w"} <= set(record["final"]["test"])

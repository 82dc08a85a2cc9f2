"""Data parallel across nodes: on a three-node loopback cluster (a head that runs nothing and two worker
nodes of one CPU each, `ray.cluster_utils.Cluster`), 2 Ray Train workers on 2 different nodes train
under ZeRO-2 and follow the learning curve of a single worker with the same global batch."""

from __future__ import annotations

import pytest

from ray_t2t.config.experiment import validate_config

from conftest import loopback_cluster, minimal_config, train_locally

pytestmark = pytest.mark.ray

# A model without dropout, whose steps depend only on the batches: the two runs differ by how the
# global batch's gradient is averaged (per worker's tokens, then over workers) and by float rounding.
STUDENT = {"preset": "llama-2m"}
STEPS = 40


@pytest.fixture
def three_nodes(monkeypatch):
    """The head and two worker nodes of one CPU each: 2 workers of 1 CPU can only run one a node."""
    with loopback_cluster(monkeypatch, cpus_per_node=1) as nodes:
        yield nodes


def experiment(tmp_path, name: str, batch_size: int, workers: int) -> dict:
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], models={"student": STUDENT})
    raw["run"] = {"name": name, "storage_path": str(tmp_path / "runs"), "checkpoint_every_n_steps": STEPS}
    raw["data"] = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}
    raw["training"] = {"batch_size": batch_size, "max_steps": STEPS, "learning_rate": 3e-3, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 10, "metric": "per"}
    raw["deepspeed"] = {"zero_stage": 2}
    raw["scaling"] = {
        "num_workers": workers,
        "resources_per_worker": {"CPU": 1},
        "placement_strategy": "STRICT_SPREAD",
    }
    return raw


def test_two_workers_on_two_nodes_follow_one_worker_with_the_same_global_batch(three_nodes, tmp_path):
    from ray_t2t.data import prepare_data
    from ray_t2t.training.launcher import train

    cfg = validate_config(experiment(tmp_path, "spread", batch_size=16, workers=2))
    record = train(cfg, "scratch", log=print)
    assert record["status"] == "finished" and record["steps"]["done"] == STEPS
    assert record["hardware"]["workers"] == 2 and record["hardware"]["nodes"] == 2

    # the reference: one worker, 32 examples a step (the same global batch of the same examples)
    single_cfg = validate_config(experiment(tmp_path, "single", batch_size=32, workers=1))
    single = train_locally(single_cfg, "scratch", prepare_data(single_cfg).path, tmp_path / "single")
    assert single["hardware"]["nodes"] == 1

    spread, alone = record["learning_curve"], single["learning_curve"]
    assert [p["step"] for p in spread] == [p["step"] for p in alone] == [0, 10, 20, 30, 40]
    for two, one in zip(spread, alone):
        assert two["val_loss"] == pytest.approx(one["val_loss"], rel=0.02), (spread, alone)
    assert spread[-1]["val_loss"] < spread[0]["val_loss"] - 0.5
    assert record["data"]["tokens_seen"] == pytest.approx(single["data"]["tokens_seen"], rel=0.05)

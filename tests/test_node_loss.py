"""Node loss on a multi-node Ray cluster on this machine, as when a spot instance is reclaimed.

`ray.cluster_utils.Cluster` starts a head that runs no work (0 CPUs) and two worker nodes, each its
own raylet, bound to 127.0.0.1. ray_t2t joins it through RAY_ADDRESS, as under `ray job submit`. A
watcher thread waits until the job has written durable progress (a soft-target shard, a training
checkpoint), finds the worker node whose raylet hosts the work (walking the worker process's parents
to a raylet) and removes that node, killing every process on it. The job must finish anyway:

- teacher inference: Ray Data restarts the lost replica on the surviving node and reruns its shard;
  the manifest is valid and holds exactly one row per example, and no half-written shard is left;
- training (`run.max_failures: 1`): Ray Train restarts the worker group on the surviving node from
  the last registered checkpoint in storage_path and finishes at the planned step count.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.config.sections import ModelSpec
from ray_t2t.data import prepare_data
from ray_t2t.models import build_model

from conftest import TINY_T5, loopback_cluster, minimal_config

pytestmark = pytest.mark.ray


@pytest.fixture
def cluster(monkeypatch):
    """A head (no CPUs) and two worker nodes with 2 logical CPUs each, on loopback; RAY_ADDRESS names it."""
    with loopback_cluster(monkeypatch, cpus_per_node=2) as nodes:
        yield nodes


def raylet_pid(node) -> int:
    from ray._private import ray_constants

    return node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid


def node_running(nodes, marker: str):
    """The worker node whose raylet is an ancestor of a live process whose title names `marker`."""
    raylets = {raylet_pid(node): node for node in nodes.worker_nodes}
    for process in psutil.process_iter(["cmdline"]):
        if marker not in " ".join(process.info["cmdline"] or []):
            continue
        try:
            for parent in process.parents():
                if parent.pid in raylets:
                    return raylets[parent.pid]
        except psutil.NoSuchProcess:
            continue
    return None


class NodeKiller(threading.Thread):
    """Once `ready()` holds, removes the worker node that runs a process titled `marker`."""

    def __init__(self, nodes, ready, marker: str, timeout: float = 300):
        super().__init__(daemon=True)
        self.nodes, self.ready, self.marker, self.timeout = nodes, ready, marker, timeout
        self.removed = None
        self.progress_at_removal = None

    def run(self) -> None:
        deadline = time.time() + self.timeout
        while time.time() < deadline:
            progress = self.ready()
            if progress:
                node = node_running(self.nodes, self.marker)
                if node is not None:
                    self.progress_at_removal = progress
                    self.nodes.remove_node(node, allow_graceful=False)
                    self.removed = node
                    return
            time.sleep(0.05)


def shards_written(folder: Path) -> int:
    return len(list(folder.glob("shard-*.parquet")))


def test_teacher_inference_survives_losing_a_worker_node(cluster, tmp_path):
    from ray_t2t.soft_targets import produce_soft_targets
    from ray_t2t.teachers import MANIFEST, verify_manifest

    raw = minimal_config(tmp_path, data={"split_sizes": {"train": 6000, "validation": 20, "test": 20}})
    prepared = prepare_data(validate_config(raw))
    teacher, _ = build_model(ModelSpec(**TINY_T5), prepared.tokenizer(), seed=0)
    teacher.save_pretrained(tmp_path / "teacher")
    raw["models"]["teacher"] = {"name_or_path": str(tmp_path / "teacher")}
    raw["soft_targets"] = {
        "rows_per_shard": 100,
        "batch_size": 50,
        "top_k": 8,
        "generations": "greedy",
        "replicas": 2,
        "cpus_per_replica": 1,
    }
    cfg = validate_config(raw)
    folder = cfg.experiment_dir / "soft_targets" / "teacher"

    killer = NodeKiller(cluster, lambda: shards_written(folder), marker="TeacherReplica")
    killer.start()
    manifest = produce_soft_targets(cfg, log=print)
    killer.join(timeout=5)

    assert killer.removed is not None, "no worker node was removed"
    assert 1 <= killer.progress_at_removal < 60, "the node was not removed mid-inference"
    assert verify_manifest(folder) == manifest and (folder / MANIFEST).is_file()
    ids = []
    for shard in manifest["shards"]:
        ids += pq.read_table(folder / shard["name"], columns=["example_id"]).column("example_id").to_pylist()
    assert sorted(ids) == list(range(6000))  # exactly one row per example
    assert not list(folder.glob(".*.tmp")), "a half-written shard was left behind"


def test_training_resumes_from_its_checkpoint_after_losing_its_node(cluster, tmp_path):
    from ray_t2t.training.launcher import train

    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}])
    raw["run"] = {
        "name": "nodeloss",
        "storage_path": str(tmp_path / "runs"),
        "checkpoint_every_n_steps": 100,
        "max_failures": 1,
    }
    raw["data"] = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}
    raw["models"] = {"student": TINY_T5}
    raw["training"] = {"batch_size": 32, "max_steps": 400, "learning_rate": 3e-3, "warmup_steps": 10}
    raw["eval"] = {"every_n_steps": 100, "metric": "per"}
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}}
    cfg = validate_config(raw)
    checkpoints = cfg.experiment_dir / "train" / "scratch"

    # A checkpoint folder appears before Ray Train has registered it, and a run resumes from registered
    # checkpoints only: once the second is on disk, the first is certainly registered.
    killer = NodeKiller(cluster, lambda: len(list(checkpoints.glob("checkpoint_*"))) >= 2, marker="RayTrainWorker")
    killer.start()
    record = train(cfg, "scratch", log=print)
    killer.join(timeout=5)

    assert killer.removed is not None, "no worker node was removed"
    assert record["resumes"] == 1, "the run did not resume after losing its node"
    assert record["steps"]["done"] == 400
    curve = record["learning_curve"]
    assert [p["step"] for p in curve] == [0, 100, 200, 300, 400]  # each point once: resumed, not restarted
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]
    # everything the run wrote is under storage_path, which any node reads
    assert (cfg.experiment_dir / "runs" / "scratch" / "record.json").is_file() and list(
        checkpoints.glob("checkpoint_*")
    )

"""The small context the training loop sees: rank, world size, report, latest checkpoint.

RayTrainContext runs inside a Ray Train worker; InProcessContext in Ray Train's local mode
(scaling.local_mode); LocalContext in a plain process (benchmarks and Ray-free tests). The loop and the
methods never import Ray themselves.
"""

from __future__ import annotations

import gc
import os
import shutil
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray_t2t.storage import local_copy, location, remove_tree, staged_folder


class RayTrainContext:
    def __init__(self) -> None:
        import ray
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.local_rank = context.get_local_rank()
        # Ray's node id, not Train's node rank: that groups workers by IP address, and the nodes of a
        # cluster on one machine share one
        self.node_id = ray.get_runtime_context().get_node_id()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        """Every rank calls this at the same steps (it is a barrier); rank 0's metrics are kept."""
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)

    @contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            yield None
        else:
            with checkpoint.as_directory() as folder:
                yield folder


class InProcessContext:
    """Ray Train's local mode: the loop runs in the process that called fit() (a sweep's Tune trial,
    or the driver), as rank 0 of one. Ray Train keeps no checkpoints in local mode, so this context
    keeps the newest `keep` under `folder` itself (step_NNNNNNNNN, each written whole, so a killed
    process leaves the previous one readable), and in a sweep hands every report to Tune (with workers,
    Ray Train's TuneReportCallback does that). Use it in `single_process_group()`."""

    def __init__(self, folder: str, keep: int, to_tune: bool) -> None:

        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.folder = location(folder)
        self.keep = keep
        self.to_tune = to_tune

    def checkpoints(self) -> list:
        if not self.folder.is_dir():
            return []
        return sorted(p for p in self.folder.iterdir() if p.name.startswith("step_"))

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:

        if checkpoint_dir:
            with staged_folder(self.folder / f"step_{int(metrics['step']):09d}") as staging:
                shutil.copytree(checkpoint_dir, staging, dirs_exist_ok=True)
            for old in self.checkpoints()[: -self.keep]:
                remove_tree(old)
        if self.to_tune:
            from ray import tune

            tune.report(dict(metrics))

    @contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:

        found = self.checkpoints()
        yield str(local_copy(found[-1])) if found else None


# torch.distributed's environment for rank 0 of a group of one (DeepSpeed needs a group even then),
# with MASTER_PORT from _free_loopback_port()
_ONE_RANK_ENV = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1"}


def _free_loopback_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


@contextmanager
def single_process_group() -> Iterator[None]:
    """torch.distributed's environment for a group of one (DeepSpeed needs a process group even for one
    process), on a free loopback port; afterwards the group is destroyed and the environment restored,
    so the next run in the same process (a reused Tune trial) starts clean, also after a failure, with
    the memory of the run before released."""
    saved = {key: os.environ.get(key) for key in (*_ONE_RANK_ENV, "MASTER_PORT")}
    os.environ.update(_ONE_RANK_ENV, MASTER_PORT=_free_loopback_port())
    try:
        yield
    finally:
        comm = sys.modules.get("deepspeed.comm")
        if comm is not None and comm.is_initialized():
            comm.destroy_process_group()  # also drops DeepSpeed's own references to the group's clones
        elif "torch.distributed" in sys.modules:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        gc.collect()  # the run's model, engine and optimizer, before the next run in this process builds its own
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()


class LocalContext:
    """One process, no Ray: checkpoints are copied to `folder`/checkpoint, reports kept in a list."""

    def __init__(self, folder: str | Path) -> None:
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.folder = Path(folder)
        self.reports: list[dict] = []
        # torch.distributed (which DeepSpeed needs even for one process) reads these; set ones are kept.
        for key, value in _ONE_RANK_ENV.items():
            os.environ.setdefault(key, value)
        if "MASTER_PORT" not in os.environ:
            os.environ["MASTER_PORT"] = _free_loopback_port()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint_dir:
            target = self.folder / "checkpoint"
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(checkpoint_dir, target)

    @contextmanager
    def latest_checkpoint(self) -> Iterator[str | None]:
        target = self.folder / "checkpoint"
        yield str(target) if target.is_dir() else None

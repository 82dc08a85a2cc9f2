"""The small context the training loop sees: rank, world size, report, latest checkpoint.

RayTrainContext runs inside a Ray Train worker; LocalContext runs in a plain process (benchmarks and
Ray-free tests). The loop and the methods never import Ray themselves.
"""

from __future__ import annotations

import os
import shutil
import socket
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class RayTrainContext:
    def __init__(self) -> None:
        import ray.train

        context = ray.train.get_context()
        self.rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self.local_rank = context.get_local_rank()

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


class LocalContext:
    """One process, no Ray: checkpoints are copied to `folder`/checkpoint, reports kept in a list."""

    def __init__(self, folder: str | Path) -> None:
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.folder = Path(folder)
        self.reports: list[dict] = []
        # torch.distributed (which DeepSpeed needs even for one process) reads these.
        for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "127.0.0.1")):
            os.environ.setdefault(key, value)
        if "MASTER_PORT" not in os.environ:
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                os.environ["MASTER_PORT"] = str(probe.getsockname()[1])

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

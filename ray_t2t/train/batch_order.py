"""Which examples each worker trains on at each micro-step: deterministic, resumable, length-grouped.

    order = BatchOrder(lengths, batch_size=128, world_size=2, rank=0, seed=0, group_by_length=True)
    order.indices(micro_step)       # example indices of this rank's micro-batch

The batch at micro-step i depends only on (i, seed, sizes), so a run resumed at step s continues with
exactly the batches it would have seen: the data position is the step count, nothing more to save.

Each epoch is a seeded permutation. With length grouping, the permutation is cut into pools of 64
global batches, each pool is sorted by length and cut into global batches, and the batches are
shuffled: batches hold examples of similar length (little padding) while their order stays random.
A global batch is split into one micro-batch per rank. The last incomplete global batch of an epoch
is dropped, so every rank sees the same number of batches.
"""

from __future__ import annotations

import random
from typing import Sequence

POOL_BATCHES = 64


class BatchOrder:
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
    ):
        self.lengths = list(lengths)
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.seed, self.group_by_length = seed, group_by_length
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = len(self.lengths) // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(self.lengths)} training examples cannot fill one batch of {batch_size} x {world_size} workers"
            )
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.group_by_length:
            pool = self.global_batch * POOL_BATCHES
            grouped = []
            for start in range(0, len(order), pool):
                grouped += sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            order = grouped
        batches = [order[b * self.global_batch : (b + 1) * self.global_batch] for b in range(self.batches_per_epoch)]
        if self.group_by_length:
            rng.shuffle(batches)
        return batches

    def indices(self, micro_step: int) -> list[int]:
        epoch, position = divmod(micro_step, self.batches_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        batch = self._batches[position]
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


class SubsetOrder:
    """The batches over chosen `rows` of the training split only (a method's `train_rows`, e.g. fewshot's
    k examples); indices() returns row numbers of the whole split.

    Each epoch is a seeded permutation of the rows, and the epochs are read back to back as one stream:
    global batch i is the stream's i-th slice of batch_size x world_size rows, so no row is dropped and
    every row is fed once per epoch (a batch may cross an epoch boundary). A batch never holds more rows
    than there are: the micro-batch is min(batch_size, len(rows) // world_size). No length grouping: with
    few rows a batch holds most of them anyway. Like BatchOrder, a function of (micro-step, seed, sizes).
    """

    def __init__(self, rows: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0):
        self.rows = list(rows)
        if len(set(self.rows)) != len(self.rows):
            raise ValueError("training rows are listed more than once")
        if len(self.rows) < world_size:
            raise ValueError(f"{len(self.rows)} training examples cannot give each of {world_size} workers one")
        self.batch_size = min(batch_size, len(self.rows) // world_size)
        self.world_size, self.rank, self.seed = world_size, rank, seed
        self.global_batch = self.batch_size * world_size
        self._epochs: dict[int, list[int]] = {}

    def _epoch(self, epoch: int) -> list[int]:
        if epoch not in self._epochs:
            if len(self._epochs) > 2:  # a batch reads at most two epochs
                self._epochs.clear()
            order = list(self.rows)
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._epochs[epoch] = order
        return self._epochs[epoch]

    def indices(self, micro_step: int) -> list[int]:
        start = micro_step * self.global_batch + self.rank * self.batch_size
        return [self._epoch(p // len(self.rows))[p % len(self.rows)] for p in range(start, start + self.batch_size)]

    def rows_fed(self, micro_steps: int) -> int:
        """Distinct rows the first `micro_steps` micro-steps fed, all workers together (every row is fed
        once in each epoch, and the rows are distinct)."""
        return min(len(self.rows), micro_steps * self.global_batch)

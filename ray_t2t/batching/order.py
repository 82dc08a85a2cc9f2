"""Which examples each worker trains on at each micro-step: deterministic, resumable, length-grouped.

    order = BatchOrder(lengths, batch_size=128, world_size=2, rank=0, seed=0, group_by_length=True)
    order.indices(micro_step)       # example indices of this rank's micro-batch

The batch at micro-step i depends only on (i, seed, sizes), so a run resumed at step s continues with
exactly the batches it would have seen: the data position is the step count, nothing more to save.

Each epoch is a seeded permutation. With length grouping, the permutation is cut into pools of 64
global batches, each pool is sorted by length and cut into global batches, and the batches are
shuffled: batches hold examples of similar length (little padding) while their order stays random.
The length is a sort key per example (length_keys): for an encoder-decoder model, which pads
sources and targets apart, (source length, target length), so a batch shares its source length and
holds neighbouring target lengths (5.4% padding on the quickstart's split against 13.8% sorting by
source + target; benchmarks/suite.py); for a decoder-only model, source + target, its one sequence.
A global batch is split into one micro-batch per rank. The last incomplete global batch of an epoch
is dropped, so every rank sees the same number of batches.

MixtureOrder is the multi-task variant (the `multitask` method's batch_order hook): examples drawn
from several tasks by mixture probabilities (mixture_probabilities), equally resumable.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

POOL_BATCHES = 64


def length_keys(source_lengths: Sequence[int], target_lengths: Sequence[int], encoder_decoder: bool) -> list:
    """Each example's length-grouping key, as its batch is padded: (source, target) lengths for an
    encoder-decoder model (each padded to its own longest), source + target for a decoder-only one."""
    if encoder_decoder:
        return list(zip(source_lengths, target_lengths))
    return [s + t for s, t in zip(source_lengths, target_lengths)]


class _CachedBatches:
    """Global batches made one unit (an epoch, a pool) at a time, the current unit kept; a subclass
    sets self._unit_size (global batches per unit), and defines _make_batches(unit)."""

    _unit, _batches = -1, []

    def indices(self, micro_step: int) -> list[int]:
        unit, position = divmod(micro_step, self._unit_size)
        if unit != self._unit:
            self._unit, self._batches = unit, self._make_batches(unit)
        batch = self._batches[position]
        return batch[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]


def _cut(examples: list[int], global_batch: int, count: int, rng: random.Random, shuffle: bool) -> list[list[int]]:
    """The first `count` global batches of `examples`, in a shuffled order when `shuffle`."""
    batches = [examples[b * global_batch : (b + 1) * global_batch] for b in range(count)]
    if shuffle:
        rng.shuffle(batches)
    return batches


class BatchOrder(_CachedBatches):
    def __init__(
        self,
        lengths: Sequence,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> None:
        self.lengths = list(lengths)  # sort keys: ints, or (source, target) tuples (length_keys)
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.seed, self.group_by_length = seed, group_by_length
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = len(self.lengths) // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(self.lengths)} training examples cannot fill one batch of {batch_size} x {world_size} workers"
            )
        self._unit_size = self.batches_per_epoch

    def _make_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        if self.group_by_length:
            pool = self.global_batch * POOL_BATCHES
            grouped = []
            for start in range(0, len(order), pool):
                grouped += sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            order = grouped
        return _cut(order, self.global_batch, self.batches_per_epoch, rng, self.group_by_length)


class SubsetOrder:
    """The batches over chosen `rows` of the training split only (a method's `train_rows`, e.g. fewshot's
    k examples); indices() returns row numbers of the whole split.

    Each epoch is a seeded permutation of the rows, and the epochs are read back to back as one stream:
    global batch i is the stream's i-th slice of batch_size x world_size rows, so no row is dropped and
    every row is fed once per epoch (a batch may cross an epoch boundary). A batch never holds more rows
    than there are: the micro-batch is min(batch_size, len(rows) // world_size). No length grouping: with
    few rows a batch holds most of them anyway. Like BatchOrder, a function of (micro-step, seed, sizes).
    """

    def __init__(self, rows: Sequence[int], batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
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


# ------------------------------------------------------------------------------- multi-task mixture


def mixture_probabilities(
    sizes: dict[str, int], mixing: str, temperature: float = 1.0, weights: dict[str, float] | None = None
) -> dict[str, float]:
    """The probability of drawing each task's examples: proportional (p_i ∝ n_i, the tasks' training
    examples), temperature (p_i ∝ n_i^(1/T), T5's temperature-scaled mixing) or fixed (p_i ∝ w_i)."""
    if mixing == "proportional":
        raw = {task: float(n) for task, n in sizes.items()}
    elif mixing == "temperature":
        raw = {task: float(n) ** (1.0 / temperature) for task, n in sizes.items()}
    elif mixing == "fixed":
        raw = {task: float((weights or {})[task]) for task in sizes}
    else:
        raise ValueError(f"unknown mixing {mixing!r}; valid: proportional, temperature, fixed")
    total = sum(raw.values())
    if not total > 0:
        raise ValueError(f"the {mixing} mixture of {sizes} has no positive weight")
    return {task: value / total for task, value in raw.items()}


class MixtureOrder(_CachedBatches):
    """BatchOrder for a pooled multi-task training split: examples drawn by a task mixture.

        order = MixtureOrder(tasks, {"g2p": 0.5, "p2g": 0.5}, lengths, batch_size=128, seed=0)
        order.indices(micro_step)      # this rank's micro-batch

    `tasks` is each training row's task name. Batches come in pools of POOL_BATCHES global batches (one
    batch without length grouping). A pool's task counts are a multinomial draw (seeded by the pool
    number) of its size over the mixture; each task supplies its count from its own stream of rows, a
    fresh seeded permutation per pass over the task (a small task is repeated sooner, a large one
    visited more slowly). The pool is shuffled, then, with length grouping, sorted by length and cut
    into batches whose order is shuffled. Everything is a function of (micro_step, seed, sizes): a
    resumed run sees exactly the batches it would have seen.
    """

    def __init__(
        self,
        tasks: Sequence[str],
        probabilities: dict[str, float],
        lengths: Sequence[int],
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        group_by_length: bool = True,
    ) -> None:
        self.names = [task for task, p in probabilities.items() if p > 0]
        rows: dict[str, list[int]] = {task: [] for task in self.names}
        for i, task in enumerate(tasks):
            if task in rows:
                rows[task].append(i)
        empty = [task for task in self.names if not rows[task]]
        if empty:
            raise ValueError(f"the mixture draws from task(s) {', '.join(empty)} with no training examples")
        self.rows = [rows[task] for task in self.names]
        self.probabilities = [probabilities[task] for task in self.names]
        self.lengths = list(lengths)
        self.batch_size, self.world_size, self.rank = batch_size, world_size, rank
        self.seed, self.group_by_length = seed, group_by_length
        self.global_batch = batch_size * world_size
        self.pool_batches = POOL_BATCHES if group_by_length else 1
        self._counts: list = []  # per pool: examples drawn from each task
        self._starts: list[list[int]] = [[0] * len(self.names)]  # per pool: each task's stream position
        self._unit_size = self.pool_batches
        self._passes: dict[tuple[int, int], list[int]] = {}  # (task, pass) -> that pass's permutation

    def _pool_counts(self, pool: int) -> list[int]:
        import numpy as np

        while len(self._counts) <= pool:
            rng = np.random.default_rng([self.seed, len(self._counts)])
            counts = rng.multinomial(self.global_batch * self.pool_batches, self.probabilities).tolist()
            self._counts.append(counts)
            self._starts.append([s + c for s, c in zip(self._starts[-1], counts)])
        return self._counts[pool]

    def _stream(self, task: int, start: int, count: int) -> list[int]:
        """Rows at positions start..start+count-1 of the task's stream (a seeded permutation per pass)."""
        rows = self.rows[task]
        picked, position = [], start
        while len(picked) < count:
            rounds, offset = divmod(position, len(rows))
            order = self._passes.get((task, rounds))
            if order is None:
                order = list(rows)
                random.Random(f"{self.seed}/{self.names[task]}/{rounds}").shuffle(order)
                self._passes = {
                    key: value for key, value in self._passes.items() if key[0] != task or key[1] > rounds - 2
                }
                self._passes[(task, rounds)] = order
            take = min(count - len(picked), len(rows) - offset)
            picked += order[offset : offset + take]
            position += take
        return picked

    def _make_batches(self, pool: int) -> list[list[int]]:
        counts = self._pool_counts(pool)
        starts = self._starts[pool]
        examples = []
        for task, (start, count) in enumerate(zip(starts, counts)):
            examples += self._stream(task, start, count)
        rng = random.Random(self.seed * 1_000_003 + pool)
        rng.shuffle(examples)
        if self.group_by_length:
            examples.sort(key=lambda i: self.lengths[i])
        return _cut(examples, self.global_batch, self.pool_batches, rng, self.group_by_length)

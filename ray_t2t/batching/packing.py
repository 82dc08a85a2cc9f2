"""Sequence packing for decoder-only batches: a micro-batch's examples share rows instead of padding.

    batch = collate_decoder_only(sources, targets, pad_id, sep_id)  # right-padded, one example a row
    packed = pack_batch(batch, pad_id)                               # fewer rows, the same examples
    loss = model(**packed).loss                                      # the same loss as model(**batch)

The examples of one micro-batch are placed first-fit-decreasing into rows no longer than the batch's
longest example, so a step trains on exactly the examples it would unpacked (the learning curve is
the same; only the padding goes) and no row's attention is longer than unpacked. Within a row every
example's positions restart at 0, and the batch has no attention_mask: transformers then reads the
example boundaries from the position ids (masking_utils.find_packed_sequence_indices) and masks
attention block-diagonally, for eager and SDPA attention alike. Loss never crosses a boundary: an
example's first token is a prompt token, labelled -100. `use_cache=False` keeps the model from
creating a cache, which would turn that detection off.

Tensors a method flattens over the batch's labelled positions (kd_logits' teacher top-k) are
reordered with their examples: `position_keys`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ray_t2t.batching import IGNORE_INDEX


def pack_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Example indices per row, first-fit decreasing into rows of at most `capacity` tokens; ties keep
    the given order, so the result depends on the lengths only."""
    if any(n > capacity for n in lengths):
        raise ValueError(f"an example of {max(lengths)} tokens does not fit a row of {capacity}")
    rows: list[list[int]] = []
    free: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        row = next((r for r, room in enumerate(free) if room >= lengths[index]), None)
        if row is None:
            rows.append([])
            free.append(capacity)
            row = len(rows) - 1
        rows[row].append(index)
        free[row] -= lengths[index]
    return rows


def pack_batch(batch: dict, pad_id: int, position_keys: Sequence[str] = ()) -> dict:
    """The packed form of a right-padded decoder-only batch {input_ids, attention_mask, labels, ...}:
    {input_ids, labels, position_ids, use_cache: False} plus `position_keys` reordered; other keys are
    refused (a key packing does not know how to move would silently misalign)."""
    import torch

    unknown = set(batch) - {"input_ids", "attention_mask", "labels", *position_keys}
    if unknown:
        raise ValueError(f"cannot pack a batch with {sorted(unknown)}: only per-position keys can be reordered")
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    rows = pack_rows(lengths, max(lengths))
    width = max(sum(lengths[i] for i in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for r, row in enumerate(rows):
        start = 0
        for i in row:
            n = lengths[i]
            input_ids[r, start : start + n] = batch["input_ids"][i, :n]
            labels[r, start : start + n] = batch["labels"][i, :n]
            position_ids[r, start : start + n] = torch.arange(n)
            start += n
        position_ids[r, start:] = torch.arange(width - start)  # padding: a sequence of its own
    packed = {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "use_cache": False}
    order = [i for row in rows for i in row]
    counts = (batch["labels"] != IGNORE_INDEX).sum(dim=1).tolist()
    for key in position_keys:
        pieces = torch.split(batch[key], counts)
        packed[key] = torch.cat([pieces[i] for i in order])
    return packed


def to_device(value: Any, device: Any) -> Any:
    """A batch value on `device` (a packed batch's use_cache flag stays as it is)."""
    return value.to(device, non_blocking=True) if hasattr(value, "to") else value


class _PackedBatchWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "since your input_ids may be padded" not in record.getMessage()


def quiet_packed_batch_warning() -> None:
    """Silence transformers' advice to pass an attention_mask: a packed batch leaves it out on
    purpose, and its rows end in padding, which the advice looks for."""
    logger = logging.getLogger("transformers.modeling_utils")
    if not any(isinstance(f, _PackedBatchWarning) for f in logger.filters):
        logger.addFilter(_PackedBatchWarning())

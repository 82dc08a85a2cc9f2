"""Batches: tokenized examples -> the tensors a model takes, padded to the longest in the batch.

    from ray_t2t.batching import (
        collate_decoder_only, collate_encoder_decoder, prompts_decoder_only, prompts_encoder_decoder,
    )

    sources, targets = tok.encode_sources(words), tok.encode_targets(phonemes)
    batch = collate_encoder_decoder(sources, targets, tok.pad_id)          # T5, BART
    batch = collate_decoder_only(sources, targets, tok.pad_id, tok.sep_id)  # GPT-2, Llama
    loss = model(**batch).loss

    # generation inputs: the same source side as in training
    input_ids, attention_mask = prompts_encoder_decoder(sources, tok.pad_id)            # right-padded
    input_ids, attention_mask = prompts_decoder_only(sources, tok.pad_id, tok.sep_id)   # left-padded

Sources and targets are given as PairTokenizer.encode_* returns them: each ends in end-of-sequence.

A decoder-only model reads one sequence per example,

    source tokens (without their end-of-sequence)  <sep>  target tokens  </s>
    |------------ prompt: label -100 ----------------|    |-- labelled --|

so the loss is on the target only, and the model learns to end it with </s>. The source's own
end-of-sequence is replaced by the separator rather than kept: it would add a token that carries no
information, and in a pretrained vocabulary (GPT-2's) eos, sep and pad are one token, so keeping it
would give "source </s> </s> target". Training batches are right-padded (positions then start at 0 for
every example); generation prompts are left-padded, so every prompt ends where generation begins.

Labels use -100, the index Hugging Face models' cross-entropy ignores. Encoder-decoder models build
their decoder inputs from the labels themselves (shifted right, starting from decoder_start_token_id).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ray_t2t.tokenizer import PairTokenizer

IGNORE_INDEX = -100  # label of positions without loss (torch cross_entropy's default ignore_index)

Ids = Sequence[Sequence[int]]


def collate_encoder_decoder(source_ids: Ids, target_ids: Ids, pad_id: int) -> dict[str, torch.Tensor]:
    """{input_ids, attention_mask, labels} for a T5/BART batch; labels padded with -100.

    Raises ValueError if the batch is empty, the two lists differ in length, or a sequence is empty.
    """
    _check_pairs(source_ids, target_ids)
    input_ids, attention_mask = prompts_encoder_decoder(source_ids, pad_id)
    labels, _ = pad(target_ids, IGNORE_INDEX, left=False)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def collate_decoder_only(source_ids: Ids, target_ids: Ids, pad_id: int, sep_id: int) -> dict[str, torch.Tensor]:
    """{input_ids, attention_mask, labels} for a GPT-2/Llama batch, right-padded.

    Each row is prompt (source without its end-of-sequence, then sep) + target (with its
    end-of-sequence); labels are -100 on the prompt and on padding, the target ids elsewhere.

    Raises ValueError if the batch is empty, the two lists differ in length, or a sequence is empty.
    """
    _check_pairs(source_ids, target_ids)
    sequences, labels = [], []
    for source, target in zip(source_ids, target_ids):
        prompt = decoder_only_prompt(source, sep_id)
        sequences.append(prompt + list(target))
        labels.append([IGNORE_INDEX] * len(prompt) + list(target))
    input_ids, attention_mask = pad(sequences, pad_id, left=False)
    labels_tensor, _ = pad(labels, IGNORE_INDEX, left=False)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels_tensor}


def family_collate(
    encoder_decoder: bool, tokenizer: PairTokenizer, source_ids: Ids, target_ids: Ids
) -> dict[str, torch.Tensor]:
    """The standard training batch of the model's family (loss on the target only)."""
    if encoder_decoder:
        return collate_encoder_decoder(source_ids, target_ids, tokenizer.pad_id)
    return collate_decoder_only(source_ids, target_ids, tokenizer.pad_id, tokenizer.sep_id)


def prompts_encoder_decoder(source_ids: Ids, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of right-padded encoder inputs, for training and generation alike.

    Raises ValueError if the batch or a source is empty.
    """
    _check_sequences("source", source_ids)
    return pad(source_ids, pad_id, left=False)


def prompts_decoder_only(source_ids: Ids, pad_id: int, sep_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask) of left-padded generation prompts, the same prompts as in training.

    Raises ValueError if the batch or a source is empty.
    """
    if not source_ids:
        raise ValueError("empty batch")
    return pad([decoder_only_prompt(source, sep_id) for source in source_ids], pad_id, left=True)


def decoder_only_prompt(source: Sequence[int], sep_id: int) -> list[int]:
    """The prompt of one source: its tokens without the final end-of-sequence, then sep.

    Raises ValueError for an empty source (a PairTokenizer source always has at least its eos).
    """
    if not source:
        raise ValueError("empty source sequence; sources end in end-of-sequence (PairTokenizer.encode_sources)")
    return [int(i) for i in source[:-1]] + [sep_id]


# ------------------------------------------------------------------------------------ helpers


def _check_pairs(source_ids: Ids, target_ids: Ids) -> None:
    if len(source_ids) != len(target_ids):
        raise ValueError(f"{len(source_ids)} sources but {len(target_ids)} targets")
    _check_sequences("source", source_ids)
    _check_sequences("target", target_ids)


def _check_sequences(name: str, sequences: Ids) -> None:
    if not sequences:
        raise ValueError("empty batch")
    if any(len(ids) == 0 for ids in sequences):
        raise ValueError(f"empty {name} sequence; sequences end in end-of-sequence (PairTokenizer.encode_*)")


def pad(sequences: Ids, value: int, *, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(padded ids, attention mask) as int64 tensors of shape (batch, longest)."""
    import torch

    longest = max(len(ids) for ids in sequences)
    ids = torch.full((len(sequences), longest), value, dtype=torch.long)
    mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        n = len(sequence)
        span = slice(longest - n, longest) if left else slice(0, n)
        ids[row, span] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask

"""pretrain: self-supervised pretraining on unlabeled text; its exported model is a base to fine-tune.

    ray-t2t train CONFIG method=pretrain
    ray-t2t train CONFIG method=finetune models.base.name_or_path=<storage>/<name>/runs/pretrain/model

The unlabeled text is the training split's sources and targets, each on its own, unpaired (on the
embedded task: spellings and pronunciations). Objectives (`objective: auto` picks by family):
- span_corruption (encoder-decoder): spans covering `noise_density` of the tokens, of mean length
  `mean_span_length`, are each replaced by one mask token (the tokenizer's unknown token, which
  real text rarely contains); the model restores the whole sequence (BART-style text infilling,
  which needs no T5 sentinel tokens in a vocabulary built from the task).
- causal_lm (decoder-only): next-token prediction over each text.
Validation loss is the same objective on the validation texts (with a fixed mask), not the task.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field

from ray_t2t.batching import IGNORE_INDEX, pad
from ray_t2t.config.sections import MethodParams, ModelRole
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup, model_spec
from ray_t2t.methods.scratch import build as build_scratch

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.tokenizer import PairTokenizer


class PretrainParams(MethodParams):
    """Self-supervised pretraining on unlabeled text; its output is a base model for fine-tuning."""

    name: Literal["pretrain"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to pretrain.")
    objective: Literal["auto", "span_corruption", "causal_lm"] = Field(
        "auto", description="auto = span corruption for encoder-decoder, causal LM for decoder-only."
    )
    noise_density: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked (span corruption).")
    mean_span_length: float = Field(3.0, ge=1, description="Mean masked span length (span corruption).")


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    spec = model_spec(cfg, params.model)
    if spec is None:
        raise ConfigError(f"method 'pretrain' trains models.{params.model}, which is not set")


def build(setup: Setup) -> torch.nn.Module:
    return build_scratch(setup)  # random init of the chosen model's architecture


def _objective(setup: Setup) -> str:
    chosen = setup.params.objective
    if chosen == "auto":
        return "span_corruption" if setup.encoder_decoder else "causal_lm"
    if (chosen == "span_corruption") != bool(setup.encoder_decoder):
        raise ConfigError(
            f"pretrain objective {chosen!r} does not fit a "
            f"{'encoder-decoder' if setup.encoder_decoder else 'decoder-only'} model"
        )
    return chosen


def corrupt_spans(
    ids: list[int], mask_id: int, density: float, mean_span: float, generator: torch.Generator | None
) -> list[int]:
    """`ids` with random spans (about `density` of the tokens, mean length `mean_span`) each replaced
    by one `mask_id`; at least one span when the sequence has a token to mask."""
    body, eos = ids[:-1], ids[-1:]
    if not body:
        return list(ids)
    n_noise = max(1, round(len(body) * density))
    n_spans = max(1, round(n_noise / mean_span))
    starts = sorted(torch.randperm(len(body), generator=generator)[:n_spans].tolist())
    out, position = [], 0
    span = max(1, round(mean_span))
    for start in starts:
        if start < position:
            continue
        out += body[position:start] + [mask_id]
        position = min(len(body), start + span)
    return out + body[position:] + eos


def collate(
    setup: Setup,
    source_ids: list[list[int]],
    target_ids: list[list[int]],
    generator: torch.Generator | None = None,
    indices: list[int] | None = None,
) -> dict:
    texts = [list(ids) for ids in source_ids] + [list(ids) for ids in target_ids]  # unpaired
    tok = setup.tokenizer
    labels, _ = pad(texts, IGNORE_INDEX, left=False)
    if _objective(setup) == "causal_lm":
        input_ids, attention_mask = pad(texts, tok.pad_id, left=False)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
    mask_id = getattr(tok, "mask_id", None)
    mask_id = mask_id if mask_id is not None else _unknown_id(tok)
    params = setup.params
    corrupted = [corrupt_spans(t, mask_id, params.noise_density, params.mean_span_length, generator) for t in texts]
    input_ids, attention_mask = pad(corrupted, tok.pad_id, left=False)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _unknown_id(tok: PairTokenizer) -> int:
    vocab = tok.meta.get("vocab")
    if vocab is not None:
        return vocab["<unk>"]
    hf = tok.source
    return hf.mask_token_id if hf.mask_token_id is not None else hf.unk_token_id


METHOD = Method("pretrain", PretrainParams, build, check=check, collate=collate, evaluates_task=False, makes_base=True)

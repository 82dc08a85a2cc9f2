"""smooth_ce: a randomly initialized student trained with label-smoothed cross-entropy. In a config:
`methods: [{name: smooth_ce, smoothing: 0.1}]`."""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.methods.base import Method, Setup
from ray_t2t.models import build_model


class SmoothParams(MethodParams):
    """Train a random student with label-smoothed cross-entropy."""

    name: Literal["smooth_ce"] = Field(description="Method name.")
    smoothing: float = Field(0.1, ge=0, lt=1, description="Probability mass spread over the whole vocabulary.")


def build(setup: Setup) -> torch.nn.Module:
    model, _ = build_model(setup.model_spec("student"), setup.tokenizer, seed=setup.seed)
    return model


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    outputs = model(**batch)
    logits, labels = outputs.logits, batch["labels"]
    if not setup.encoder_decoder:  # a decoder-only model predicts token t+1 at position t
        logits, labels = logits[:, :-1], labels[:, 1:]
    smoothed = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=-100,
        label_smoothing=setup.params.smoothing,
    )
    return smoothed, {"plain_loss": float(outputs.loss)}  # recorded as train_plain_loss


METHOD = Method("smooth_ce", SmoothParams, build, loss=loss)

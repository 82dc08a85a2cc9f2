"""A method defined outside the package, as docs/methods.md shows: label-smoothed cross-entropy on a
randomly initialized student. Importing this module registers it."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.methods import Method, Setup, register
from ray_t2t.models import build_model


class SmoothParams(MethodParams):
    """Train a random student with label-smoothed cross-entropy."""

    name: Literal["toy_smooth"] = Field(description="Method name.")
    smoothing: float = Field(0.1, ge=0, lt=1, description="Probability mass spread over the whole vocabulary.")


def build(setup: Setup):
    model, _ = build_model(setup.model_spec("student"), setup.tokenizer, seed=setup.seed)
    return model


def loss(model, batch: dict, setup: Setup):
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
    return smoothed, {"plain_loss": float(outputs.loss)}


METHOD = register(Method("toy_smooth", SmoothParams, build, loss=loss))

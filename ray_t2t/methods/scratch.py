"""scratch: a randomly initialized model trained on the task — the baseline with no prior knowledge.

    ray-t2t train configs/quickstart.yaml method=scratch

Parameters: `model` (student, teacher or base: which of `models` to build). A Hugging Face name or
path is used for its architecture only; its weights are not loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams, ModelRole
from ray_t2t.methods.base import Method, Setup
from ray_t2t.models import build_model

if TYPE_CHECKING:
    import torch


class ScratchParams(MethodParams):
    """Train a randomly initialized model on the task."""

    name: Literal["scratch"] = Field(description="Method name.")
    model: ModelRole = Field("student", description="Which of `models` to build and train.")


def build(setup: Setup) -> torch.nn.Module:
    spec = setup.model_spec(setup.params.model)
    if spec.name_or_path is not None:
        spec = spec.model_copy(update={"pretrained": False})
    model, _ = build_model(spec, setup.tokenizer, seed=setup.seed)
    return model


METHOD = Method("scratch", ScratchParams, build, packs=True)

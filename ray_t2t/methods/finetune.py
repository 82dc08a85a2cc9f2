"""finetune: full fine-tuning — every weight of a pretrained model trains on the task.

    ray-t2t train examples/huggingface_xsum.yaml method=finetune
    ray-t2t train CONFIG method=finetune models.base.name_or_path=ray_t2t_runs/x/runs/pretrain/model

Parameters: `model` (default base). The model must carry pretrained weights: a Hugging Face name, or
the folder a ray_t2t run exported (for example the `pretrain` method's model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams, ModelRole
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup, model_spec
from ray_t2t.models import build_model

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class FinetuneParams(MethodParams):
    """Full fine-tuning: every weight of a pretrained model trains."""

    name: Literal["finetune"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to start from.")


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    """Raises ConfigError when the model to start from has no pretrained weights."""
    role = params.model
    spec = model_spec(cfg, role)
    if spec.name_or_path is None or not spec.pretrained:
        raise ConfigError(
            f"method {params.name!r} starts from pretrained weights, but models.{role} is "
            f"{'preset ' + repr(spec.preset) if spec.preset else 'set to pretrained: false'}; set models.{role}."
            "name_or_path to a Hugging Face name or a model folder exported by a ray_t2t run"
        )


def build(setup: Setup) -> torch.nn.Module:
    model, _ = build_model(setup.model_spec(setup.params.model), setup.tokenizer, seed=setup.seed)
    return model


METHOD = Method("finetune", FinetuneParams, build, check=check, packs=True)

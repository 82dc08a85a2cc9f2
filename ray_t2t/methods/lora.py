"""lora: PEFT LoRA adapters on a frozen pretrained model; only the adapters train.

    ray-t2t train CONFIG method=lora methods.0.rank=16

Parameters: `model` (default base), `rank`, `alpha`, `dropout`, `target_modules` (auto = the
attention query and value projections of the family), `merge_on_export` (export merged weights that
load with plain transformers, or the adapter alone, which loads with peft).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams, ModelRole
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.finetune import check  # LoRA needs pretrained weights too
from ray_t2t.models import build_model

if TYPE_CHECKING:
    import torch

    from ray_t2t.storage import StoragePath


class LoraParams(MethodParams):
    """PEFT LoRA adapters on a frozen pretrained model."""

    name: Literal["lora"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to adapt.")
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="Module names to adapt; auto = the attention projections of the family."
    )
    merge_on_export: bool = Field(True, description="Export merged weights (true) or the adapter alone.")


# Query and value projections, as in the LoRA paper, by the config's model_type.
AUTO_TARGETS = {
    "t5": ["q", "v"],
    "bart": ["q_proj", "v_proj"],
    "gpt2": ["c_attn"],
    "llama": ["q_proj", "v_proj"],
}


def lora_config(model: torch.nn.Module, params: MethodParams) -> Any:
    from peft import LoraConfig, TaskType

    targets = params.target_modules
    if targets == "auto":
        model_type = model.config.model_type
        if model_type not in AUTO_TARGETS:
            raise ValueError(
                f"no automatic LoRA targets for model type {model_type!r}; set target_modules "
                f"(auto knows {', '.join(AUTO_TARGETS)})"
            )
        targets = AUTO_TARGETS[model_type]
    task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
    return LoraConfig(
        r=params.rank, lora_alpha=params.alpha, lora_dropout=params.dropout, target_modules=targets, task_type=task
    )


def build(setup: Setup) -> torch.nn.Module:
    from peft import get_peft_model

    base, _ = build_model(setup.model_spec(setup.params.model), setup.tokenizer, seed=setup.seed)
    return get_peft_model(base, lora_config(base, setup.params))


def export(model: torch.nn.Module, folder: StoragePath, setup: Setup) -> None:
    if setup.params.merge_on_export:
        model.merge_and_unload().save_pretrained(folder)
    else:
        model.save_pretrained(folder)  # adapter_config.json + adapter weights


METHOD = Method("lora", LoraParams, build, check=check, export=export, packs=True)

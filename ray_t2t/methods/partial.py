"""partial: fine-tune only part of a pretrained model; everything else stays frozen.

    ray-t2t train CONFIG method=partial methods.0.trainable=top_layers methods.0.top_n_layers=2

Parameters: `model` (default base), `trainable`:
- top_layers: the last `top_n_layers` blocks of the decoder (decoder-only: of the stack), its final
  norm and the output layer. T5 ties its output layer to the shared embedding, which then trains too.
- decoder: the whole decoder of an encoder-decoder model (the encoder stays frozen).
- adapters: (IA)^3 adapters (peft): learned rescaling vectors on attention keys/values and the
  feed-forward output; the smallest trainable set of all. Exported merged into the weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams, ModelRole
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.finetune import check  # needs pretrained weights too
from ray_t2t.models import build_model

if TYPE_CHECKING:
    import torch

    from ray_t2t.storage import StoragePath


class PartialParams(MethodParams):
    """Fine-tune only part of a pretrained model; the rest is frozen."""

    name: Literal["partial"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to start from.")
    trainable: Literal["top_layers", "decoder", "adapters"] = Field(
        "top_layers",
        description="top_layers = the last `top_n_layers` blocks (and the head); decoder = the decoder; "
        "adapters = (IA)^3 adapters only.",
    )
    top_n_layers: int = Field(2, ge=1, description="Blocks trained with trainable=top_layers.")


def decoder_stack(model: torch.nn.Module) -> Any:
    """(decoder module, its list of blocks): T5/BART decoders, GPT-2 and Llama stacks."""
    stack = model.get_decoder() if model.config.is_encoder_decoder else model.base_model
    for name in ("block", "layers", "h"):
        blocks = getattr(stack, name, None)
        if blocks is not None:
            return stack, blocks
    raise ValueError(f"cannot find the decoder blocks of {type(model).__name__}")


def build(setup: Setup) -> torch.nn.Module:
    params = setup.params
    model, _ = build_model(setup.model_spec(params.model), setup.tokenizer, seed=setup.seed)
    if params.trainable == "adapters":
        from peft import IA3Config, TaskType, get_peft_model

        task = TaskType.SEQ_2_SEQ_LM if model.config.is_encoder_decoder else TaskType.CAUSAL_LM
        return get_peft_model(model, IA3Config(task_type=task))  # peft's default targets per model type
    model.requires_grad_(False)
    stack, blocks = decoder_stack(model)
    if params.trainable == "decoder":
        if not model.config.is_encoder_decoder:
            raise ConfigError("partial with trainable=decoder needs an encoder-decoder model; use top_layers")
        stack.requires_grad_(True)
    else:
        if params.top_n_layers > len(blocks):
            raise ConfigError(f"partial: top_n_layers={params.top_n_layers} but the model has {len(blocks)} blocks")
        for block in blocks[-params.top_n_layers :]:
            block.requires_grad_(True)
        for name, module in stack.named_children():  # the final norm after the blocks
            if "norm" in name or name == "ln_f":
                module.requires_grad_(True)
    model.get_output_embeddings().requires_grad_(True)
    return model


def export(model: torch.nn.Module, folder: StoragePath, setup: Setup) -> None:
    if hasattr(model, "merge_and_unload"):  # the adapters option: a plain model again
        model = model.merge_and_unload()
    model.save_pretrained(folder)


METHOD = Method("partial", PartialParams, build, check=check, export=export, packs=True)

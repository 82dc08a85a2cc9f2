"""qlora: LoRA adapters on a 4-bit quantized, frozen pretrained model (bitsandbytes). GPU only.

    ray-t2t train CONFIG method=qlora scaling.use_gpu=true

Parameters: those of `lora`, plus `quant_type` (nf4 or fp4) and `double_quant`. Needs the
`bitsandbytes` package (`pip install bitsandbytes`, or the `gpu` extra of ray-t2t) and a CUDA GPU.
On a CPU-only config it refuses before any work.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup, model_spec
from ray_t2t.methods.finetune import check as check_pretrained
from ray_t2t.methods.lora import LoraParams, lora_config
from ray_t2t.storage import local_model_path

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.config.sections import MethodParams
    from ray_t2t.storage import StoragePath


class QloraParams(LoraParams):
    """LoRA on a 4-bit quantized base (bitsandbytes). GPU only."""

    name: Literal["qlora"] = Field(description="Method name.")  # type: ignore[assignment]
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too.")


# DeepSpeed's bf16/fp16 modes cast every parameter, which would destroy the packed 4-bit weights. The
# engine runs in fp32 (the LoRA weights and their optimizer state); the quantized layers compute in
# bf16 through bitsandbytes' compute dtype, as in the QLoRA recipe.


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    if not cfg.scaling.use_gpu:
        raise ConfigError(
            "method 'qlora' quantizes the base model to 4 bits with bitsandbytes, which needs a CUDA GPU: "
            "set scaling.use_gpu=true on a GPU machine, or use method 'lora' on CPU"
        )
    if cfg.deepspeed.precision in ("bf16", "fp16"):
        raise ConfigError(
            f"method 'qlora' keeps deepspeed.precision at auto or fp32 (got {cfg.deepspeed.precision}): the 4-bit "
            "layers already compute in bf16, and DeepSpeed's half-precision modes would cast the packed weights"
        )
    if cfg.deepspeed.zero_stage == 3:
        raise ConfigError("method 'qlora' cannot shard 4-bit weights with ZeRO-3; use deepspeed.zero_stage <= 2")
    check_pretrained(cfg, params)


def build(setup: Setup) -> torch.nn.Module:
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForSeq2SeqLM,
        BitsAndBytesConfig,
    )

    params = setup.params
    spec = model_spec(setup.cfg, params.model)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=params.quant_type,
        bnb_4bit_use_double_quant=params.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    weights = local_model_path(spec.name_or_path)  # an object-store URI: this node's download of it
    config = AutoConfig.from_pretrained(weights, trust_remote_code=spec.trust_remote_code)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(setup.seed)
    base = auto.from_pretrained(
        weights,
        quantization_config=quantization,
        device_map={"": torch.cuda.current_device()},
        trust_remote_code=spec.trust_remote_code,
    )
    base.config.pad_token_id = setup.tokenizer.pad_id
    base.config.eos_token_id = setup.tokenizer.eos_id
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    return get_peft_model(base, lora_config(base, params))


def export(model: torch.nn.Module, folder: StoragePath, setup: Setup) -> None:
    """Merged: LoRA folded into the base, de-quantized to bf16, so plain transformers loads it (no
    bitsandbytes needed). Otherwise the adapter alone, for peft on top of the original base."""
    if setup.params.merge_on_export:
        merged = model.merge_and_unload()
        merged.dequantize()
        merged.save_pretrained(folder)
    else:
        model.save_pretrained(folder)


METHOD = Method("qlora", QloraParams, build, check=check, export=export, engine_precision="fp32", packs=True)

"""qlora: LoRA adapters on a 4-bit quantized, frozen pretrained model (bitsandbytes). GPU only.

    ray-t2t train CONFIG method=qlora scaling.use_gpu=true

Parameters: those of `lora`, plus `quant_type` (nf4 or fp4) and `double_quant`. Needs the
`bitsandbytes` package (`pip install bitsandbytes`, or the `gpu` extra of ray-t2t) and a CUDA GPU.
On a CPU-only config it refuses before any work.
"""

from ray_t2t.errors import ConfigError
from ray_t2t.methods import Setup, model_spec
from ray_t2t.methods.finetune import check as check_pretrained
from ray_t2t.methods.lora import export, lora_config  # noqa: F401  (export: merge or adapter, as lora)


def check(cfg, params) -> None:
    if not cfg.scaling.use_gpu:
        raise ConfigError(
            "method 'qlora' quantizes the base model to 4 bits with bitsandbytes, which needs a CUDA GPU: "
            "set scaling.use_gpu=true on a GPU machine, or use method 'lora' on CPU"
        )
    if cfg.deepspeed.zero_stage == 3:
        raise ConfigError("method 'qlora' cannot shard 4-bit weights with ZeRO-3; use deepspeed.zero_stage <= 2")
    check_pretrained(cfg, params)


def build(setup: Setup):
    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, BitsAndBytesConfig

    params = setup.params
    spec = model_spec(setup.cfg, params.model)
    quantization = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=params.quant_type,
        bnb_4bit_use_double_quant=params.double_quant,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )
    config = AutoConfig.from_pretrained(spec.name_or_path, trust_remote_code=spec.trust_remote_code)
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    torch.manual_seed(setup.seed)
    base = auto.from_pretrained(
        spec.name_or_path,
        quantization_config=quantization,
        device_map={"": torch.cuda.current_device()},
        trust_remote_code=spec.trust_remote_code,
    )
    base.config.pad_token_id = setup.tokenizer.pad_id
    base.config.eos_token_id = setup.tokenizer.eos_id
    base = prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)
    return get_peft_model(base, lora_config(base, params))

"""Models: build one from a preset or a Hugging Face name/path, and describe its size.

    from ray_t2t.config.sections import ModelSpec
    from ray_t2t.models import build_model, count_parameters, model_info

    model, info = build_model(ModelSpec(preset="t5-tiny"), tokenizer, seed=0)
    info.describe()                  # 't5 encoder-decoder, 0.03M parameters (0.03M trainable)'
    model, info = build_model(ModelSpec(name_or_path="runs/base/checkpoint"), tokenizer)

    for p in model.encoder.parameters():
        p.requires_grad_(False)
    count_parameters(model)          # (total, trainable), recounted after freezing or PEFT
    model_info(model).describe()

Token ids always come from the PairTokenizer, so a model and its tokenizer agree: pad and
end-of-sequence everywhere; for a freshly initialized model also the start ids (an encoder-decoder's
decoder starts from pad, as in T5; a decoder-only model's bos is its eos, as in GPT-2). A model
loaded with pretrained weights keeps the start ids it was trained with.

Models are created in float32 (mixed precision is the training engine's job) and returned in eval
mode, whether built or loaded: call model.train() to train. Importing this module is cheap: torch and
transformers are imported inside the functions that need them.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ray_t2t.errors import ConfigError
from ray_t2t.presets import FAMILIES, PRESETS
from ray_t2t.storage import local_model_path

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedModel

    from ray_t2t.config.sections import ModelSpec
    from ray_t2t.storage import StoragePath
    from ray_t2t.tokenizer import PairTokenizer

ENCODER_DECODER = "encoder_decoder"
DECODER_ONLY = "decoder_only"

# Set from the tokenizer, never by `overrides`: a model whose ids disagree with its tokenizer trains
# and decodes garbage without any error.
TOKEN_ID_KEYS = ("pad_token_id", "eos_token_id", "bos_token_id", "decoder_start_token_id")


class ModelConfigError(ConfigError, ValueError):
    """A model spec that cannot be built (unknown preset or override key, invalid value).

    A ConfigError, so the command line prints the message without a traceback, and a ValueError.
    """


@dataclass(frozen=True)
class ModelInfo:
    """What a built model is, for logs, run records and reports."""

    family: str  # ENCODER_DECODER or DECODER_ONLY
    architecture: str  # the config's model_type: "t5", "bart", "gpt2", "llama", ...
    total_params: int
    trainable_params: int

    def describe(self) -> str:
        """E.g. 't5 encoder-decoder, 0.52M parameters (0.52M trainable)'."""
        kind = self.family.replace("_", "-")
        return (
            f"{self.architecture} {kind}, {_millions(self.total_params)} parameters "
            f"({_millions(self.trainable_params)} trainable)"
        )


def _millions(count: int) -> str:
    return f"{count / 1e6:.2f}M"


# ------------------------------------------------------------------------------------ inspection


def is_encoder_decoder(model: Any) -> bool:
    """True for encoder-decoder models (T5, BART), False for decoder-only ones (GPT-2, Llama).

    Works on PEFT-wrapped models too (they forward `.config` to the base model).
    """
    return bool(getattr(model.config, "is_encoder_decoder", False))


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts. Call again after freezing parameters or adding adapters.

    Tied weights (T5's shared embedding and output layer) count once, as module.parameters() yields a
    shared tensor once.
    """
    total = trainable = 0
    for param in model.parameters():
        count = _numel(param)
        total += count
        if param.requires_grad:
            trainable += count
    return total, trainable


def training_flops_per_token(model: torch.nn.Module) -> tuple[float, float]:
    """Training FLOPs per (source token, target token): forward 2N, backward 2N for activation
    gradients, plus 2N for the weight gradients of trainable parameters (attention's own FLOPs are
    left out: short sequences). A decoder-only model runs every token through all its weights; an
    encoder-decoder runs source tokens through the encoder and target tokens through the decoder and
    output layer (the encoder's embedding is a lookup, no FLOPs)."""
    (source, source_trainable), (target, target_trainable) = _parameters_by_side(model)
    return 4.0 * source + 2 * source_trainable, 4.0 * target + 2 * target_trainable


def forward_flops_per_token(model: torch.nn.Module) -> tuple[float, float]:
    """Forward-pass FLOPs per (source token, target token), 2N, split as training_flops_per_token
    splits them: what a frozen model costs that only runs forward (a live teacher)."""
    (source, _), (target, _) = _parameters_by_side(model)
    return 2.0 * source, 2.0 * target


def _parameters_by_side(model: torch.nn.Module) -> tuple[tuple[int, int], tuple[int, int]]:
    """((total, trainable) parameters a source token runs through, the same for a target token)."""
    total, trainable = count_parameters(model)
    if not is_encoder_decoder(model):
        return (total, trainable), (total, trainable)
    encoder = model.get_encoder()
    embedding = {id(p) for p in encoder.get_input_embeddings().parameters()}
    enc_total = enc_trainable = 0
    for param in encoder.parameters():
        if id(param) not in embedding:
            enc_total += _numel(param)
            enc_trainable += _numel(param) if param.requires_grad else 0
    return (enc_total, enc_trainable), (total - enc_total, trainable - enc_trainable)


def _numel(param: torch.Tensor) -> int:
    if hasattr(param, "ds_numel"):  # partitioned by ZeRO-3 (numel() is this rank's share, or 0): the whole
        return param.ds_numel
    # bitsandbytes packs two 4-bit weights per byte of storage (QLoRA), so numel() counts half of them;
    # PEFT's own parameter count makes the same correction.
    if param.__class__.__name__ == "Params4bit":
        storage_bytes = param.quant_storage.itemsize if hasattr(param, "quant_storage") else 1
        return param.numel() * 2 * storage_bytes
    return param.numel()


def model_info(model: Any) -> ModelInfo:
    """A ModelInfo for `model` as it is now (frozen parts and adapters included)."""
    total, trainable = count_parameters(model)
    return ModelInfo(
        family=ENCODER_DECODER if is_encoder_decoder(model) else DECODER_ONLY,
        architecture=str(getattr(model.config, "model_type", None) or type(model).__name__),
        total_params=total,
        trainable_params=trainable,
    )


# -------------------------------------------------------------------------------------- building


def build_model(
    spec: ModelSpec, tokenizer: PairTokenizer, seed: int | None = None
) -> tuple[PreTrainedModel, ModelInfo]:
    """The model `spec` describes, with its token ids taken from `tokenizer`, and its ModelInfo.

    A preset or `pretrained: false` gives a fresh initialization with exactly the tokenizer's
    vocabulary; `pretrained: true` loads the checkpoint's weights and grows its embeddings when the
    tokenizer has more tokens than the checkpoint. With `seed`, initialization (and any new embedding
    rows) is reproducible: the same seed gives identical weights. The global torch RNG is left as it
    was, so seeding here does not change the caller's random stream. The model is returned in eval
    mode; call model.train() before training it.

    Raises ModelConfigError (a ValueError) for an unknown preset, an override key that is not an
    attribute of the model's config, an override of a token id, or a value the config rejects.
    Loading by name/path raises what transformers raises (OSError for a missing folder or model).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if spec.preset is not None:
            model = _build_preset(spec, tokenizer)
        else:
            model = _build_named(spec, tokenizer)
    return model, model_info(model)


def model_config(spec: ModelSpec) -> PretrainedConfig:
    """The architecture `spec` describes (its overrides applied), without building or loading weights:
    for checks before any work (family, block counts, hidden size). The vocabulary and token ids are
    not set from a tokenizer here. Raises ModelConfigError like build_model, and OSError for a
    name/path whose config cannot be read."""
    import transformers
    from transformers import AutoConfig

    if spec.preset is not None:
        if spec.preset not in PRESETS:
            raise ModelConfigError(f"unknown preset {spec.preset!r}. Valid presets: {', '.join(PRESETS)}")
        family, kwargs = PRESETS[spec.preset]
        config_class = getattr(transformers, FAMILIES[family][0])
        where = f"preset {spec.preset!r}"
        overrides = _checked_overrides(config_class(**kwargs), spec.overrides, where)
        return _make_config(lambda: config_class(**{**kwargs, **overrides}), where)
    config = AutoConfig.from_pretrained(local_model_path(spec.name_or_path), trust_remote_code=spec.trust_remote_code)
    where = f"model {spec.name_or_path!r}"
    values = {**config.to_dict(), **_checked_overrides(config, spec.overrides, where)}
    return _make_config(lambda: type(config).from_dict(values), where)


def _build_preset(spec: ModelSpec, tokenizer: PairTokenizer) -> PreTrainedModel:
    import transformers

    if spec.preset not in PRESETS:
        raise ModelConfigError(f"unknown preset {spec.preset!r}. Valid presets: {', '.join(PRESETS)}")
    family, kwargs = PRESETS[spec.preset]
    class_name, encoder_decoder = FAMILIES[family]
    config_class = getattr(transformers, class_name)
    where = f"preset {spec.preset!r}"
    overrides = _checked_overrides(config_class(**kwargs), spec.overrides, where)
    # One constructor call with everything, so values the config derives in __post_init__ (Llama's
    # head_dim from hidden_size, T5's activation flags, ...) follow the overrides.
    settings = {**kwargs, "vocab_size": tokenizer.vocab_size, **overrides}
    settings.update(_fresh_token_ids(tokenizer, encoder_decoder))
    config = _make_config(lambda: config_class(**settings), where)
    _drop_forced_eos(config)
    return _instantiate(config, tokenizer, weights_from=None, attention=spec.attn_implementation)


def _build_named(spec: ModelSpec, tokenizer: PairTokenizer) -> PreTrainedModel:
    from transformers import AutoConfig

    where = f"model {spec.name_or_path!r}"
    name = local_model_path(spec.name_or_path)  # an object-store URI: this node's download of it
    config = AutoConfig.from_pretrained(name, trust_remote_code=spec.trust_remote_code)
    overrides = _checked_overrides(config, spec.overrides, where)
    if spec.pretrained:
        # The checkpoint was trained with its own start ids; only pad/eos must match the tokenizer.
        ids = {"pad_token_id": tokenizer.pad_id, "eos_token_id": tokenizer.eos_id}
        if config.is_encoder_decoder and getattr(config, "decoder_start_token_id", None) is None:
            ids["decoder_start_token_id"] = tokenizer.pad_id
        settings = {**overrides, **ids}
    else:
        settings = {**overrides, "vocab_size": tokenizer.vocab_size}
        settings.update(_fresh_token_ids(tokenizer, config.is_encoder_decoder))
    # Rebuilt from a dict rather than setattr, so the config validates the new values as a whole.
    values = {**config.to_dict(), **settings}
    config = _make_config(lambda: type(config).from_dict(values), where)
    if not spec.pretrained:
        _drop_forced_eos(config)
    return _instantiate(
        config,
        tokenizer,
        weights_from=name if spec.pretrained else None,
        trust_remote_code=spec.trust_remote_code,
        attention=spec.attn_implementation,
    )


def _checked_overrides(config: PretrainedConfig, overrides: dict[str, Any], where: str) -> dict[str, Any]:
    """`overrides` with aliases resolved (T5's hidden_size -> d_model).

    Raises ModelConfigError for a key the config does not have (transformers would silently keep it
    as an unused attribute) or a token id key.
    """
    checked = {}
    for key, value in overrides.items():
        if key in TOKEN_ID_KEYS:
            raise ModelConfigError(f"{where}: override {key!r} is not allowed; token ids are set from the tokenizer")
        if not hasattr(config, key):
            known = [k for k in config.to_dict() if not k.startswith("_")]
            close = difflib.get_close_matches(key, known, n=3)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            raise ModelConfigError(
                f"{where}: unknown override {key!r}: {type(config).__name__} has no such attribute.{hint}"
            )
        checked[config.attribute_map.get(key, key)] = value
    return checked


def _fresh_token_ids(tokenizer: PairTokenizer, encoder_decoder: bool) -> dict[str, int]:
    """Special ids of a freshly initialized model: all from the tokenizer."""
    ids = {"pad_token_id": tokenizer.pad_id, "eos_token_id": tokenizer.eos_id}
    if encoder_decoder:
        # T5's convention: the decoder starts from pad (BART's default, eos, would be another id here).
        ids["bos_token_id"] = ids["decoder_start_token_id"] = tokenizer.pad_id
    else:
        ids["bos_token_id"] = tokenizer.eos_id  # GPT-2's convention; prompts never start with it here
    return ids


def _drop_forced_eos(config: PretrainedConfig) -> None:
    # BartConfig defaults to forced_eos_token_id=2, which generate copies into the generation config:
    # it would force id 2 (not eos in a built vocabulary) as the last token at max_new_tokens. Fresh
    # models of every family decode the same way, without forcing.
    if getattr(config, "forced_eos_token_id", None) is not None:
        config.forced_eos_token_id = None


def _make_config(make: Callable, where: str) -> PretrainedConfig:
    """Run `make`, turning the config's validation errors into a ModelConfigError naming the model."""
    try:
        return make()
    except Exception as err:  # strict-dataclass, type and value errors: all mean "bad override value"
        raise ModelConfigError(f"{where}: invalid model config: {err}") from err


def _instantiate(
    config: PretrainedConfig,
    tokenizer: PairTokenizer,
    *,
    weights_from: str | None,
    trust_remote_code: bool = False,
    attention: str | None = None,
) -> PreTrainedModel:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    # float32 explicitly: otherwise a config carrying dtype=bfloat16 (saved from a bf16 run) builds a
    # bf16 model, and the training engine's precision setting would no longer decide.
    options: dict[str, Any] = {"dtype": torch.float32, "trust_remote_code": trust_remote_code}
    if attention is not None:
        options["attn_implementation"] = attention
    try:
        if weights_from is None:
            model = auto.from_config(config, **options)
        else:
            model = auto.from_pretrained(weights_from, config=config, **options)
    except (ValueError, ImportError) as err:
        if attention is None or "attn" not in str(err).lower() and "flash" not in str(err).lower():
            raise
        raise ModelConfigError(
            f"attn_implementation={attention!r} is not available for {type(config).__name__} here: {err}"
        ) from None
    if tokenizer.vocab_size > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(tokenizer.vocab_size)
    _sync_generation_config(model)
    # from_pretrained returns eval mode and from_config train mode; every built model starts the same
    # way, in eval mode (a teacher then gives deterministic outputs). Trainers call model.train().
    model.eval()
    return model


def _sync_generation_config(model: PreTrainedModel) -> None:
    # A checkpoint's generation_config.json is loaded as is and may disagree with the ids set above.
    generation = model.generation_config
    for key in TOKEN_ID_KEYS + ("forced_eos_token_id",):
        if hasattr(model.config, key):
            setattr(generation, key, getattr(model.config, key))


# ---------------------------------------------------------------------------------------- exports

# Keys of an exported config.json that do not change what the model computes or how fast.
_VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "architectures", "torch_dtype", "dtype")


def check_positions(config: PretrainedConfig, longest_source: int, longest_target: int, where: str) -> None:
    """Refuse sequences longer than a model's learned position embeddings (GPT-2, BART), which would
    fail mid-run with an index error (a device-side assert on a GPU). Lengths in tokens, end-of-sequence
    included; a decoder-only model reads source + target as one sequence. Rotary (Llama) and relative
    (T5) positions have no such table."""
    if config.model_type == "gpt2":
        needed, positions, what = longest_source + longest_target, config.n_positions, "source + target"
    elif config.model_type == "bart":
        needed, positions = max(longest_source, longest_target + 1), config.max_position_embeddings
        what = "the longer of source and target"
    else:
        return
    if needed > positions:
        raise ModelConfigError(
            f"{where}: the data's longest {what} is {needed} tokens, but the model has {positions} positions; "
            f"lower data.max_source_length / max_target_length (or eval.max_new_tokens), or choose a model "
            f"with more positions"
        )


def exported_parameters(folder: StoragePath) -> int | None:
    """Parameters of an exported model folder, from its *.safetensors headers (no weights are
    loaded): what is deployed, whatever trained beside it. Tied weights are saved once, as
    count_parameters counts them. None when the folder holds no safetensors file."""
    import math
    from pathlib import Path

    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for path in files:
        with safe_open(str(path), framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return total


def architecture_key(folder: StoragePath, extra: dict | None = None) -> str | None:
    """What decides an exported model's inference speed, hashed: its config.json without names and
    versions, its parameter count, and `extra` (e.g. in-context demonstrations read before every
    query). Models of one key decode at one speed whatever their weights, for a fixed output length.
    None without a config.json (an adapter exported alone)."""
    import hashlib
    import json
    from pathlib import Path

    config_file = Path(folder) / "config.json"
    if not config_file.is_file():
        return None
    config = {k: v for k, v in json.loads(config_file.read_text()).items() if k not in _VOLATILE_CONFIG_KEYS}
    described = {"config": config, "params": exported_parameters(folder), "extra": extra or {}}
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:16]

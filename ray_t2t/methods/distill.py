"""What the live-teacher distillation methods share: kd_logits (teacher_source: online), kd_hidden,
kd_attention and kd_relational. Not a method itself (METHODS does not list it).

The live teacher

- is resolved on the driver, in the method's prepare(), by prepare_live_teacher: models.teacher when
  it has weights, or else the model trained by the config's `model: teacher` entry (the same rule as
  `ray-t2t teacher`, soft_targets.resolve_teacher). Its path reaches the workers as
  setup.extras["teacher"];
- must share the student's token ids, since both read the one batch the loop collates: a ray_t2t
  export carries its tokenizer (model/ray_t2t_tokenizer), which must be this experiment's; a
  checkpoint without one is refused only when its vocabulary is smaller than the tokenizer's
  (nothing else about it can be checked);
- must be of the student's family (both encoder-decoder or both decoder-only), for the same reason;
- is loaded once per worker process by live_teacher(): frozen (requires_grad False), in eval mode,
  on the student's device and in its dtype, and outside the DeepSpeed engine: it takes no gradients,
  no optimizer state, and is not in checkpoints. Its forward passes are part of each training step,
  so the step time (and the run's cost) includes them, and so do the run record's FLOPs: each method
  adds the teacher's forward FLOPs per token (extra_flops_per_token, which also loads the teacher
  during setup rather than in the first step).

Layers are transformer blocks, 0-based, per stack: a block's hidden state is its output (transformers'
hidden_states[i + 1]; the last block's is after the final norm, as transformers returns it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ray_t2t.config.sections import ModelSpec
from ray_t2t.data import prepare_data
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Setup, model_spec
from ray_t2t.methods.sft import LAYER_COUNTS
from ray_t2t.models import build_model, forward_flops_per_token, model_config
from ray_t2t.storage import absolute, local_model_path, location
from ray_t2t.teachers import resolve_teacher
from ray_t2t.tokenizer import META_FILE

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.config.sections import MethodParams
    from ray_t2t.tokenizer import PairTokenizer

EPS = 1e-8
_teachers: dict = {}  # per worker process: (path, device, dtype, attention) -> the loaded teacher


# ------------------------------------------------------------------------------- checks (driver)


LayerMap = dict[int, int] | Literal["auto"]
LAYER_MAP_DESCRIPTION = (
    "Student block -> teacher block, 0-based, e.g. {0: 1, 1: 3}; auto = uniform spacing: student block i "
    "of S matches teacher block ceil((i + 1) * T / S) - 1 of T, so the last matches the last."
)


def key_of(cfg: ExperimentConfig, params: MethodParams, field: str) -> str:
    """`methods.<index>.<field>` of this method entry, as an override would name it."""
    for index, entry in enumerate(cfg.methods):
        if entry is params:
            return f"methods.{index}.{field}"
    return f"{params.name}.{field}"


def architectures(cfg: ExperimentConfig, params: MethodParams) -> tuple[Any, Any]:
    """(student config, teacher config) from the config alone, before any work. Raises ConfigError
    when they are of different families or the teacher's config cannot be read."""

    configs = []
    for role in ("student", "teacher"):
        spec = model_spec(cfg, role)
        try:
            configs.append(model_config(spec))
        except OSError as err:
            raise ConfigError(f"models.{role}: cannot read the config of {spec.name_or_path!r}: {err}") from None
    student, teacher = configs
    if bool(student.is_encoder_decoder) != bool(teacher.is_encoder_decoder):
        kinds = {True: "encoder-decoder", False: "decoder-only"}
        raise ConfigError(
            f"method {params.name!r} runs a live teacher on the student's batches: student "
            f"({kinds[bool(student.is_encoder_decoder)]}) and teacher ({kinds[bool(teacher.is_encoder_decoder)]}) "
            "must be of one family (distill across families with kd_logits' offline soft targets)"
        )
    return student, teacher


def check_stack(cfg: ExperimentConfig, params: MethodParams, field: str, stack: str, config: Any) -> None:
    """An encoder stack exists only in encoder-decoder models."""
    if stack == "encoder" and not config.is_encoder_decoder:
        raise ConfigError(
            f"{key_of(cfg, params, field)}: decoder-only models have no encoder; use the decoder (their one stack)"
        )


def blocks(config: Any, stack: str) -> int:
    """Number of transformer blocks of `stack` ("encoder" or "decoder") in a model config."""

    keys = LAYER_COUNTS.get(config.model_type)
    if keys is None:  # another family: transformers' generic name (the encoder's, where there are two)
        return int(config.num_hidden_layers)
    return int(getattr(config, keys[0] if stack == "encoder" else keys[1]))


def auto_layer_map(student_blocks: int, teacher_blocks: int) -> dict[int, int]:
    """Uniform spacing: student block i of S -> teacher block ceil((i + 1) * T / S) - 1."""
    return {i: math.ceil((i + 1) * teacher_blocks / student_blocks) - 1 for i in range(student_blocks)}


def layer_map(
    cfg: ExperimentConfig, params: MethodParams, student_config: Any, teacher_config: Any, stack: str
) -> dict[int, int]:
    """The method's `layer_map`, resolved and checked against both models' blocks of `stack`.
    Raises ConfigError naming the key for an index out of range or an empty map."""
    student_blocks, teacher_blocks = blocks(student_config, stack), blocks(teacher_config, stack)
    if params.layer_map == "auto":
        return auto_layer_map(student_blocks, teacher_blocks)
    key = key_of(cfg, params, "layer_map")
    if not params.layer_map:
        raise ConfigError(f"{key}: empty; map at least one student block to a teacher block, or use auto")
    for student, teacher in params.layer_map.items():
        for index, count, who in ((student, student_blocks, "student"), (teacher, teacher_blocks, "teacher")):
            if not 0 <= index < count:
                raise ConfigError(
                    f"{key}: {who} block {index} is out of range: the {who}'s {stack} has "
                    f"{count} blocks (0-{count - 1})"
                )
    return dict(sorted(params.layer_map.items()))


def check_tokenizer(teacher_path: str, tokenizer: PairTokenizer) -> None:
    """Refuse a teacher whose token ids may differ from the experiment's (see the module docstring)."""

    saved = location(teacher_path) / "ray_t2t_tokenizer" / META_FILE
    if saved.is_file():
        theirs = json.loads(saved.read_text())
        if json.dumps(theirs, sort_keys=True) != json.dumps(tokenizer.meta, sort_keys=True):
            differ = sorted(k for k in set(theirs) | set(tokenizer.meta) if theirs.get(k) != tokenizer.meta.get(k))
            raise ConfigError(
                f"the teacher {teacher_path} was trained with another tokenizer than this experiment's "
                f"(they differ in {', '.join(differ)}); a live teacher reads the student's token ids: use a "
                "teacher trained with this config's data and data.tokenizer"
            )
        return
    from transformers import AutoConfig

    vocab = AutoConfig.from_pretrained(local_model_path(teacher_path)).vocab_size
    if vocab < tokenizer.vocab_size:
        raise ConfigError(
            f"the teacher {teacher_path} has a vocabulary of {vocab}, the experiment's tokenizer "
            f"{tokenizer.vocab_size}: they do not share token ids"
        )


def prepare_live_teacher(cfg: ExperimentConfig, log: Callable[[str], None]) -> dict:
    """Driver side, before training: the teacher's path for the workers (setup.extras["teacher"]).
    Raises ConfigError/UserError when there is no trained teacher or it has another tokenizer."""

    teacher = resolve_teacher(cfg)
    tokenizer = prepare_data(cfg, log=log).tokenizer()
    path = absolute(teacher.path)
    check_tokenizer(path, tokenizer)
    log(f"live teacher: {path}")
    return {"teacher": path}


# ------------------------------------------------------------------------------ the teacher (worker)


def live_teacher(setup: Setup, student: torch.nn.Module, attn_implementation: str | None = None) -> torch.nn.Module:
    """The teacher at setup.extras["teacher"], loaded once per process: frozen, eval mode, on the
    student's device and in its dtype, never part of the student (nor of its engine or optimizer)."""

    student = getattr(student, "module", student)  # the DeepSpeed engine's model
    reference = next(p for p in student.parameters() if p.is_floating_point())
    path = setup.extras["teacher"]
    key = (path, str(reference.device), str(reference.dtype), attn_implementation)
    if key not in _teachers:
        teacher, _ = build_model(ModelSpec(name_or_path=path), setup.tokenizer)
        if attn_implementation is not None:
            teacher.set_attn_implementation(attn_implementation)
        teacher.requires_grad_(False)
        _teachers[key] = teacher.to(device=reference.device, dtype=reference.dtype).eval()
    return _teachers[key]


def teacher_flops_per_token(
    setup: Setup, student: torch.nn.Module, attn_implementation: str | None = None
) -> tuple[float, float]:
    """The live teacher's forward FLOPs per (source, target) token: work each training step does
    besides the student's. Loads the teacher (as teacher_outputs will) if it is not loaded yet."""

    return forward_flops_per_token(live_teacher(setup, student, attn_implementation))


def extra_flops_per_token(setup: Setup, model: torch.nn.Module) -> tuple[float, float]:
    """A live-teacher method's hook (ray_t2t.methods): the teacher's forward passes, which the loop adds
    to the student's training FLOPs."""
    return teacher_flops_per_token(setup, model)


def teacher_outputs(
    setup: Setup, student: torch.nn.Module, batch: dict, attn_implementation: str | None = None, **flags: Any
) -> Any:
    """The live teacher's outputs on the student's batch, without gradients."""
    import torch

    teacher = live_teacher(setup, student, attn_implementation)
    with torch.no_grad():
        return teacher(**batch, **flags)


# ------------------------------------------------------------------------- reading model outputs


def block_states(outputs: Any, stack: str, encoder_decoder: bool) -> tuple:
    """Per block of `stack`, its output hidden states [batch, positions, hidden] (embeddings left out)."""
    if not encoder_decoder:
        return outputs.hidden_states[1:]
    states = outputs.encoder_hidden_states if stack == "encoder" else outputs.decoder_hidden_states
    return states[1:]


def attention_maps(outputs: Any, attention: str, encoder_decoder: bool) -> tuple:
    """Per block, attention probabilities [batch, heads, queries, keys] of the chosen kind."""
    if not encoder_decoder:
        return outputs.attentions
    return {
        "decoder_self": outputs.decoder_attentions,
        "cross": outputs.cross_attentions,
        "encoder_self": outputs.encoder_attentions,
    }[attention]


def positions(batch: dict, stack: str, encoder_decoder: bool) -> torch.Tensor:
    """[batch, positions] bool: the real (non-padding) positions of `stack`'s sequence: source tokens
    for an encoder, target tokens for an encoder-decoder's decoder, every token of a decoder-only
    sequence (prompt and target)."""
    if encoder_decoder and stack == "decoder":
        return batch["labels"] != -100
    return batch["attention_mask"].bool()


def mix(alpha: float, distillation: torch.Tensor, hard_loss: torch.Tensor) -> torch.Tensor:
    """alpha x the distillation term + (1 - alpha) x the task's cross-entropy."""
    return alpha * distillation + (1 - alpha) * hard_loss

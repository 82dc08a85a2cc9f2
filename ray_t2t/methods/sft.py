"""sft: shrink and fine-tune (the DistilBART baseline). The student is the teacher with fewer blocks,
initialized by copying chosen teacher blocks, then fine-tuned on the task.

    ray-t2t train CONFIG method=sft models.teacher.name_or_path=<storage>/<name>/runs/teacher/model

Parameters: `encoder_layers` and `decoder_layers`: teacher block indices to copy, in order, or
`alternate` (every other block, starting with the first). Decoder-only models use `decoder_layers`.
Embeddings, final norms and the output layer are copied as they are. The student's size comes from the
teacher and these lists, not from models.student. The teacher must carry trained weights (a Hugging
Face name or a ray_t2t run's exported model).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup, model_spec
from ray_t2t.models import build_model

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class SftParams(MethodParams):
    """Shrink and fine-tune (DistilBART): copy chosen teacher layers into a smaller student, then fine-tune."""

    name: Literal["sft"] = Field(description="Method name.")
    encoder_layers: list[int] | Literal["alternate"] = Field(
        "alternate", description="Teacher encoder layers copied into the student; alternate = every other one."
    )
    decoder_layers: list[int] | Literal["alternate"] = Field(
        "alternate", description="Teacher decoder (or decoder-only block) layers copied into the student."
    )


# Per model_type: config attribute holding each stack's block count (encoder, decoder).
LAYER_COUNTS = {
    "t5": ("num_layers", "num_decoder_layers"),
    "bart": ("encoder_layers", "decoder_layers"),
    "gpt2": (None, "n_layer"),
    "llama": (None, "num_hidden_layers"),
}
# A block's parameters: "<stack>.<container>.<index>." in the state dict.
BLOCK_KEY = re.compile(
    r"^(?P<head>.*?(?P<stack>encoder|decoder|transformer|model)\.(?:block|layers|h)\.)(?P<index>\d+)\."
)


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    spec = model_spec(cfg, "teacher")
    if spec.name_or_path is None or not spec.pretrained:
        raise ConfigError(
            "method 'sft' copies layers of a trained teacher: set models.teacher.name_or_path to a Hugging Face "
            "name or to a ray_t2t run's exported model (e.g. <storage>/<name>/runs/<teacher label>/model)"
        )


def chosen_layers(choice: Any, available: int, which: str) -> list[int]:
    if choice == "alternate":
        return list(range(0, available, 2))
    bad = [i for i in choice if not 0 <= i < available]
    if bad or not choice:
        raise ConfigError(
            f"sft {which}_layers {choice}: the teacher has {available} {which} blocks (0-{available - 1})"
        )
    return list(choice)


def build(setup: Setup) -> torch.nn.Module:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    teacher, _ = build_model(model_spec(setup.cfg, "teacher"), setup.tokenizer, seed=setup.seed)
    config = teacher.config
    if config.model_type not in LAYER_COUNTS:
        raise ConfigError(f"sft knows the layer layout of {', '.join(LAYER_COUNTS)}, not {config.model_type!r}")
    encoder_key, decoder_key = LAYER_COUNTS[config.model_type]
    maps = {}  # stack -> student index -> teacher index
    student_config = config.__class__.from_dict(config.to_dict())
    for key, choice, which in (
        (encoder_key, setup.params.encoder_layers, "encoder"),
        (decoder_key, setup.params.decoder_layers, "decoder"),
    ):
        if key is None:
            continue
        layers = chosen_layers(choice, getattr(config, key), which)
        setattr(student_config, key, len(layers))
        maps[which] = dict(enumerate(layers))
    auto = AutoModelForSeq2SeqLM if config.is_encoder_decoder else AutoModelForCausalLM
    student = auto.from_config(student_config)
    teacher_state = teacher.state_dict()
    state = {}
    for key in student.state_dict():
        state[key] = teacher_state[_teacher_key(key, maps, teacher_state)]
    student.load_state_dict(state)
    student.generation_config = teacher.generation_config
    return student


def _teacher_key(key: str, maps: dict, teacher_state: dict) -> str:
    match = BLOCK_KEY.match(key)
    if match is None:
        return key  # embeddings, final norms, output layer
    stack = "encoder" if match["stack"] == "encoder" else "decoder"
    mapped = f"{match['head']}{maps[stack][int(match['index'])]}." + key[match.end() :]
    # T5 keeps its relative-position table in block 0 only: a student's block 0 copied from another
    # teacher block takes the table from the teacher's block 0.
    return mapped if mapped in teacher_state else key


METHOD = Method(
    "sft", SftParams, build, kind="distillation", teacher_use=lambda params: "weights", check=check, packs=True
)

"""kd_sequence: sequence-level distillation (Kim & Rush, 2016) — the student learns the teacher's own
outputs instead of (or mixed with) the gold targets.

    ray-t2t train configs/g2p_full.yaml method=kd_sequence

The teacher's greedy or beam outputs come from `ray-t2t teacher` with `soft_targets.generations:
greedy` (or `beam`, with `soft_targets.num_beams`); they are computed before training when missing.
Parameter: `gold_mix`, the share of training examples that keep their gold target (chosen per
example, seeded, so the same examples keep gold in every epoch and after a resume). The loss is the
plain cross-entropy; validation and test still score against the gold references.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.base import collate as task_collate

# As kd_logits: a randomly initialized student, and soft targets computed (or reused) before training.
from ray_t2t.methods.kd_logits import build
from ray_t2t.teachers import load_generations

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class KdSequenceParams(MethodParams):
    """Sequence-level distillation (Kim & Rush): train on the teacher's own generations."""

    name: Literal["kd_sequence"] = Field(description="Method name.")
    gold_mix: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of examples that keep the gold target. The generations come from "
        "soft_targets.generations (greedy or beam).",
    )


_generations: dict = {}  # per worker process: folder -> {example_id: ids}


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    if cfg.soft_targets.generations == "none":
        raise ConfigError(
            "kd_sequence trains on the teacher's generations: set soft_targets.generations to greedy or beam"
        )


def keeps_gold(example: int, gold_mix: float, seed: int) -> bool:
    return random.Random(seed * 1_000_003 + example).random() < gold_mix


def collate(
    setup: Setup,
    source_ids: list[list[int]],
    target_ids: list[list[int]],
    generator: torch.Generator | None = None,
    indices: list[int] | None = None,
) -> dict:
    if indices is not None:  # training: the teacher's output replaces the gold target
        folder = setup.extras["soft_targets"][0]
        if folder not in _generations:
            _generations[folder] = load_generations(folder)
        generated = _generations[folder]
        eos = setup.tokenizer.eos_id
        targets = []
        for example, gold in zip(indices, target_ids):
            ids = generated[example]
            use_gold = keeps_gold(example, setup.params.gold_mix, setup.seed) or not ids
            targets.append(gold if use_gold else (ids if ids[-1] == eos else ids + [eos]))
        target_ids = targets
    return task_collate(setup, source_ids, target_ids)


METHOD = Method(
    "kd_sequence",
    KdSequenceParams,
    build,
    kind="distillation",
    teacher_use=lambda params: "soft_targets",
    check=check,
    collate=collate,
    packs=True,
)

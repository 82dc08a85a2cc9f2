"""kd_multi_teacher: distillation from several teachers' stored soft targets at once.

    ray-t2t train CONFIG method=kd_multi_teacher      # models.teacher: a list of teachers

Each teacher's top-`top_k` distribution (softened by `temperature`, renormalized on its top-k) is
weighted (`weights`, normalized; default equal) into one mixture over the union of the teachers'
supports. The student minimizes

    alpha * T^2 * D(mixture || student_T on the union)  +  (1 - alpha) * cross-entropy(gold target)

with D the forward KL, reverse KL or Jensen-Shannon divergence, as kd_logits. With one teacher this
is exactly kd_logits. `ray-t2t teacher CONFIG` computes every teacher's soft targets (each in its
own folder with its own manifest and ledger record); they are computed before training when missing.
Teachers must share the student's tokenizer (teachers trained by ray_t2t on the same data do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from ray_t2t.config.sections import MethodParams
from ray_t2t.errors import ConfigError
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.base import collate as task_collate
from ray_t2t.methods.kd_logits import (  # build: a random init
    build,
    soft_target_rows,
    teacher_rows,
)

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class KdMultiTeacherParams(MethodParams):
    """Distillation from several teachers: a weighted mixture of their stored top-k distributions."""

    name: Literal["kd_multi_teacher"] = Field(description="Method name.")
    weights: list[float] | None = Field(
        None, description="Weight of each teacher in models.teacher order (normalized); null = equal weights."
    )
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation term; 1 - alpha on hard labels.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of teachers and student.")
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field("forward_kl", description="Divergence.")
    top_k: int = Field(32, ge=1, description="Tokens kept per position from each teacher's soft targets.")

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: list[float] | None) -> Any:
        if weights is not None and (not weights or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        return weights


TEACHER_KEYS = ("teacher_topk_ids", "teacher_topk_logprobs")


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    teachers = len(cfg.models.teachers)
    if params.weights is not None and len(params.weights) != teachers:
        raise ConfigError(
            f"kd_multi_teacher weights has {len(params.weights)} entries for {teachers} teacher(s) in models.teacher"
        )
    if params.top_k > cfg.soft_targets.top_k:
        raise ConfigError(
            f"kd_multi_teacher top_k={params.top_k} exceeds soft_targets.top_k="
            f"{cfg.soft_targets.top_k}, the number of teacher tokens stored per position"
        )


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    """Driver side, before training (the launcher has stored every teacher's soft targets: all_teachers):
    the teachers' weights, normalized."""
    weights = params.weights or [1.0] * len(cfg.models.teachers)
    return {"weights": [w / sum(weights) for w in weights]}


def collate(
    setup: Setup,
    source_ids: list[list[int]],
    target_ids: list[list[int]],
    generator: torch.Generator | None = None,
    indices: list[int] | None = None,
) -> dict:
    """The task batch plus every teacher's top-k ids and log-probs at the labelled positions,
    stacked: [teachers, positions, k]."""
    import torch

    batch = task_collate(setup, source_ids, target_ids)
    if indices is None:  # evaluation: the task alone
        return batch
    params = setup.params
    per_teacher = [
        teacher_rows(soft_target_rows(folder), indices, params.top_k, stored_t, params.temperature)
        for folder, stored_t in zip(setup.extras["soft_targets"], setup.extras["stored_temperatures"])
    ]
    batch["teacher_topk_ids"] = torch.stack([ids for ids, _ in per_teacher])
    batch["teacher_topk_logprobs"] = torch.stack([logprobs for _, logprobs in per_teacher])
    return batch


def mixture_kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    weights: list[float],
    encoder_decoder: bool,
    params: MethodParams,
) -> Any:
    """T^2 x the mean over labelled positions of D(teacher mixture || student), both on the union of
    the teachers' top-k supports. teacher_ids/logprobs: [teachers, positions, k]."""
    import torch

    if not encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    student = logits[labels != -100].float() / params.temperature  # [positions, vocab]
    mixture = torch.zeros_like(student)
    for t, weight in enumerate(weights):
        mixture.scatter_add_(-1, teacher_ids[t], weight * torch.softmax(teacher_logprobs[t].float(), dim=-1))
    support = mixture > 0
    student_lp = torch.log_softmax(student.masked_fill(~support, float("-inf")), dim=-1).masked_fill(~support, 0.0)
    teacher_lp = torch.log(mixture.masked_fill(~support, 1.0))  # 0 off the support, where both masses are 0
    q = student_lp.exp() * support
    if params.divergence == "forward_kl":
        per_position = (mixture * (teacher_lp - student_lp)).sum(-1)
    elif params.divergence == "reverse_kl":
        per_position = (q * (student_lp - teacher_lp)).sum(-1)
    else:
        middle = torch.log(((mixture + q) / 2).masked_fill(~support, 1.0))
        per_position = 0.5 * (mixture * (teacher_lp - middle)).sum(-1) + 0.5 * (q * (student_lp - middle)).sum(-1)
    return per_position.mean() * params.temperature**2


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    teacher_ids, teacher_logprobs = (batch.pop(key) for key in TEACHER_KEYS)
    outputs = model(**batch)
    params = setup.params
    kd = mixture_kd_loss(
        outputs.logits,
        batch["labels"],
        teacher_ids,
        teacher_logprobs,
        setup.extras["weights"],
        setup.encoder_decoder,
        params,
    )
    return params.alpha * kd + (1 - params.alpha) * outputs.loss


METHOD = Method(
    "kd_multi_teacher",
    KdMultiTeacherParams,
    build,
    kind="distillation",
    teacher_use=lambda params: "soft_targets",
    all_teachers=True,
    check=check,
    prepare=prepare,
    collate=collate,
    loss=loss,
)

"""kd_relational: relation-based distillation (RKD, Park et al. 2019) — the student keeps the
teacher's geometry of a batch: how far apart its examples are, and at which angles.

    ray-t2t train configs/quickstart_smoke.yaml method=kd_relational

Each example's representation is its final hidden state mean-pooled over real tokens: of the
decoder (target tokens; default) or of the encoder (source tokens) for an encoder-decoder, of every
token (prompt and target) for a decoder-only model (`stack`). Over the batch's examples, the student
minimizes

    alpha * (distance_weight * L_D + angle_weight * L_A)  +  (1 - alpha) * cross-entropy(gold target)

- L_D, distance-wise: smooth L1 between the pairwise Euclidean distances of student and teacher
  representations, each divided by its mean over pairs (so scale does not matter);
- L_A, angle-wise: smooth L1 between the cosines of the angles that every triplet (i, j, k) forms
  at j, for student and teacher.

Relations compare examples with each other, not the student's vectors with the teacher's, so hidden
sizes may differ and no projection is learned. Both terms are unchanged when either side is scaled,
translated or rotated. L_A costs batch^3 x hidden per step (fine at these batch sizes; it grows
fast). A batch of one example has no relations: the term is 0. The teacher runs live in each worker
(ray_t2t.methods.distill): frozen, no gradients, no optimizer state; it must share the student's
tokenizer and family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from ray_t2t.config.sections import MethodParams
from ray_t2t.methods import distill
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.distill import (
    extra_flops_per_token,  # the live teacher's forward passes
)
from ray_t2t.methods.kd_logits import build  # a randomly initialized student

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class KdRelationalParams(MethodParams):
    """Relation-based distillation (RKD): distances and angles between a batch's examples match a live teacher's."""

    name: Literal["kd_relational"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the relational term; 1 - alpha on hard labels.")
    stack: Literal["decoder", "encoder"] = Field(
        "decoder",
        description="Whose final hidden state is pooled: the decoder's (over target tokens; "
        "decoder-only models: over every token) or the encoder's (over source tokens).",
    )
    distance_weight: float = Field(
        1.0, ge=0, description="Weight of the distance term: smooth L1 between mean-normalized pairwise distances."
    )
    angle_weight: float = Field(
        2.0, ge=0, description="Weight of the angle term: smooth L1 between the cosines of triplet angles."
    )

    @model_validator(mode="after")
    def _some_relation(self) -> KdRelationalParams:
        if self.distance_weight == 0 and self.angle_weight == 0:
            raise ValueError("kd_relational needs distance_weight or angle_weight above 0")
        return self


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    student, _ = distill.architectures(cfg, params)
    distill.check_stack(cfg, params, "stack", params.stack, student)


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    return distill.prepare_live_teacher(cfg, log)


def pooled(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[batch, positions, hidden] -> [batch, hidden]: the mean over the positions in `mask`."""
    weights = mask.unsqueeze(-1).to(states.dtype)
    return (states * weights).sum(1) / weights.sum(1).clamp_min(1)


def _pairwise_distances(x: torch.Tensor) -> Any:
    import torch

    squared = x.pow(2).sum(-1)
    d2 = (squared.unsqueeze(0) + squared.unsqueeze(1) - 2 * x @ x.T).clamp_min(1e-12)
    off_diagonal = ~torch.eye(len(x), dtype=torch.bool, device=x.device)
    return d2.sqrt() * off_diagonal, off_diagonal


def distance_loss(student: torch.Tensor, teacher: torch.Tensor) -> Any:
    """RKD distance-wise term: smooth L1 between mean-normalized pairwise distances."""
    import torch.nn.functional as F

    s, off = _pairwise_distances(student.float())
    t, _ = _pairwise_distances(teacher.float())
    s = s / s[off].mean().clamp_min(distill.EPS)
    t = t / t[off].mean().clamp_min(distill.EPS)
    return F.smooth_l1_loss(s[off], t[off])


def angle_loss(student: torch.Tensor, teacher: torch.Tensor) -> Any:
    """RKD angle-wise term: smooth L1 between cos(angle at j of i-j-k) of every triplet."""
    import torch.nn.functional as F

    def cosines(x: torch.Tensor) -> Any:
        directions = F.normalize(x.unsqueeze(0) - x.unsqueeze(1), p=2, dim=2)  # [j, i, hidden]: i - j
        return (directions @ directions.transpose(1, 2)).reshape(-1)

    return F.smooth_l1_loss(cosines(student.float()), cosines(teacher.float()))


def relational_loss(student: torch.Tensor, teacher: torch.Tensor, params: MethodParams) -> Any:
    """distance_weight x L_D + angle_weight x L_A between [batch, hidden] representations."""
    if len(student) < 2:
        return student.sum() * 0.0  # no pairs: nothing to match (and the graph stays connected)
    total = 0.0
    if params.distance_weight:
        total = total + params.distance_weight * distance_loss(student, teacher)
    if params.angle_weight:
        total = total + params.angle_weight * angle_loss(student, teacher)
    return total


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    params, encoder_decoder = setup.params, setup.encoder_decoder
    outputs = model(**batch, output_hidden_states=True)
    teacher = distill.teacher_outputs(setup, model, batch, output_hidden_states=True)
    mask = distill.positions(batch, params.stack, encoder_decoder)
    student_repr = pooled(distill.block_states(outputs, params.stack, encoder_decoder)[-1], mask)
    teacher_repr = pooled(distill.block_states(teacher, params.stack, encoder_decoder)[-1], mask)
    return distill.mix(params.alpha, relational_loss(student_repr, teacher_repr, params), outputs.loss)


METHOD = Method(
    "kd_relational",
    KdRelationalParams,
    build,
    kind="distillation",
    teacher_use=lambda params: "live",
    check=check,
    prepare=prepare,
    loss=loss,
    extra_flops_per_token=extra_flops_per_token,
)

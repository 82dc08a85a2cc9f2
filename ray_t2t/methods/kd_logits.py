"""kd_logits: response-based distillation from the teacher's token distributions, stored (offline,
top-k) or computed live (online, full vocabulary).

    ray-t2t train configs/quickstart.yaml method=kd_logits
    ray-t2t train configs/quickstart_smoke.yaml method=kd_logits_online    # teacher_source: online

The student (models.student, randomly initialized) minimizes

    alpha * T^2 * D(teacher_T || student_T)  +  (1 - alpha) * cross-entropy(gold target)

at every target position, where both distributions are softened by `temperature` T. D is the forward
KL, the reverse KL or the Jensen-Shannon divergence (`divergence`).

- offline (default): both distributions are restricted to the teacher's top-`top_k` tokens
  (renormalized there: a proper distribution on a shared support). The soft targets come from
  `ray-t2t teacher` (computed before training when missing, reused otherwise); log-probs stored at
  another temperature are re-tempered exactly, since on the top-k support
  log p_T = log p_S * S / T + const.
- online: a live teacher in each worker (ray_t2t.methods.distill: frozen, no gradients, no optimizer
  state, on the student's device) computes its logits on every training batch, and D runs over the
  whole vocabulary; top_k is ignored. It is the reference that measures what top-k loses, and costs a
  teacher forward pass per step instead of stored shards. Teacher and student must share the
  tokenizer and the family (encoder-decoder or decoder-only).

Parameters: alpha, temperature, divergence, teacher_source, top_k (offline: at most the stored k).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.errors import ConfigError
from ray_t2t.methods import distill
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.base import collate as task_collate
from ray_t2t.models import build_model
from ray_t2t.teachers import load_soft_targets

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class KdLogitsParams(MethodParams):
    """Response-based distillation: match the teacher's softened token distribution."""

    name: Literal["kd_logits"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the distillation term; 1 - alpha on hard labels.")
    temperature: float = Field(2.0, gt=0, description="Softmax temperature of teacher and student.")
    divergence: Literal["forward_kl", "reverse_kl", "jsd"] = Field("forward_kl", description="Divergence.")
    teacher_source: Literal["offline", "online"] = Field(
        "offline",
        description="offline = stored top-k soft targets; online = a live teacher in each worker, full logits "
        "over the whole vocabulary (the reference that measures what top-k loses).",
    )
    top_k: int = Field(
        32, ge=1, description="Teacher tokens kept per position in offline soft targets (ignored online)."
    )


TEACHER_KEYS = ("teacher_topk_ids", "teacher_topk_logprobs")
_soft_targets: dict = {}  # per worker process: folder -> {example_id: (ids, logprobs)}


def _online(params: MethodParams) -> bool:
    return params.teacher_source == "online"


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    if _online(params):
        distill.architectures(cfg, params)  # one family
        return
    if params.top_k > cfg.soft_targets.top_k:
        raise ConfigError(
            f"kd_logits top_k={params.top_k} exceeds soft_targets.top_k={cfg.soft_targets.top_k}, "
            "the number of teacher tokens stored per position"
        )


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    """Driver side, before training: online, find the teacher (offline, the launcher has stored its
    soft targets: teacher_use)."""
    return distill.prepare_live_teacher(cfg, log) if _online(params) else {}


def build(setup: Setup) -> torch.nn.Module:
    model, _ = build_model(setup.model_spec("student"), setup.tokenizer, seed=setup.seed)  # random init
    return model


def soft_target_rows(folder: str) -> dict:
    """{example_id: (ids, logprobs)} of a soft-target folder, loaded once per worker process."""

    if folder not in _soft_targets:
        _soft_targets[folder] = load_soft_targets(folder)  # verifies the manifest first
    return _soft_targets[folder]


def teacher_rows(
    rows: dict, indices: list[int] | None, top_k: int, stored_t: float, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's teacher top-k ids and log-probs at `temperature`, flattened over its labelled
    positions (row by row, left to right), as tensors."""
    import numpy as np
    import torch

    ids = np.concatenate([rows[i][0][:, :top_k] for i in indices])
    logprobs = np.concatenate([rows[i][1][:, :top_k] for i in indices])
    if stored_t != temperature:
        logprobs = logprobs * stored_t / temperature  # renormalized over the top-k in the loss
    return torch.from_numpy(ids), torch.from_numpy(logprobs)


def collate(
    setup: Setup,
    source_ids: list[list[int]],
    target_ids: list[list[int]],
    generator: torch.Generator | None = None,
    indices: list[int] | None = None,
) -> dict:
    """The task batch plus the teacher's top-k ids and log-probs of its target positions, flattened
    in the order of the batch's labelled positions (row by row, left to right)."""
    batch = task_collate(setup, source_ids, target_ids)
    if indices is None or _online(setup.params):  # evaluation, or a live teacher: the task alone
        return batch
    params = setup.params
    rows = soft_target_rows(setup.extras["soft_targets"][0])
    batch["teacher_topk_ids"], batch["teacher_topk_logprobs"] = teacher_rows(
        rows, indices, params.top_k, setup.extras["stored_temperatures"][0], params.temperature
    )
    return batch


def divergence(student_logprobs: torch.Tensor, teacher_logprobs: torch.Tensor, kind: str) -> Any:
    """Per-position divergence between two distributions given as log-probs over the same support."""
    import torch

    p, q = teacher_logprobs.exp(), student_logprobs.exp()
    if kind == "forward_kl":
        return (p * (teacher_logprobs - student_logprobs)).sum(-1)
    if kind == "reverse_kl":
        return (q * (student_logprobs - teacher_logprobs)).sum(-1)
    middle = torch.log((p + q) / 2 + 1e-12)
    return 0.5 * (p * (teacher_logprobs - middle)).sum(-1) + 0.5 * (q * (student_logprobs - middle)).sum(-1)


def kd_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    teacher_ids: torch.Tensor,
    teacher_logprobs: torch.Tensor,
    encoder_decoder: bool,
    params: MethodParams,
) -> Any:
    """(distillation term, as a mean over positions times T^2) for one batch."""
    import torch

    if not encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    student = logits[labels != -100].float() / params.temperature  # [positions, vocab]
    student_topk = torch.log_softmax(student.gather(-1, teacher_ids), dim=-1)
    teacher_topk = torch.log_softmax(teacher_logprobs, dim=-1)
    return divergence(student_topk, teacher_topk, params.divergence).mean() * params.temperature**2


def full_kd_loss(
    logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    encoder_decoder: bool,
    params: MethodParams,
    vocab_size: int | None = None,
) -> Any:
    """Online: the distillation term over the whole vocabulary (the first `vocab_size` logits: a
    checkpoint may pad its output layer beyond the tokenizer's ids), mean over positions times T^2."""
    import torch

    if not encoder_decoder:
        logits, teacher_logits, labels = logits[:, :-1], teacher_logits[:, :-1], labels[:, 1:]
    keep = labels != -100
    student = logits[keep][:, :vocab_size].float() / params.temperature
    teacher = teacher_logits[keep][:, :vocab_size].float() / params.temperature
    kd = divergence(torch.log_softmax(student, -1), torch.log_softmax(teacher, -1), params.divergence)
    return kd.mean() * params.temperature**2


def extra_flops_per_token(setup: Setup, model: torch.nn.Module) -> tuple[float, float]:
    """Online: the live teacher's forward passes (the loop adds them to the student's training
    FLOPs). Stored soft targets cost the step nothing beyond the student."""
    return distill.teacher_flops_per_token(setup, model) if _online(setup.params) else (0.0, 0.0)


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    params = setup.params
    if _online(params):
        outputs = model(**batch)
        teacher = distill.teacher_outputs(setup, model, batch)
        kd = full_kd_loss(
            outputs.logits, teacher.logits, batch["labels"], setup.encoder_decoder, params, setup.tokenizer.vocab_size
        )
        return distill.mix(params.alpha, kd, outputs.loss)
    teacher_ids, teacher_logprobs = (batch.pop(key) for key in TEACHER_KEYS)
    outputs = model(**batch)
    kd = kd_loss(outputs.logits, batch["labels"], teacher_ids, teacher_logprobs, setup.encoder_decoder, params)
    return distill.mix(params.alpha, kd, outputs.loss)


METHOD = Method(
    "kd_logits",
    KdLogitsParams,
    build,
    kind="distillation",
    teacher_use=lambda params: "live" if _online(params) else "soft_targets",
    check=check,
    prepare=prepare,
    collate=collate,
    loss=loss,
    extra_flops_per_token=extra_flops_per_token,
    packs=True,
    position_keys=TEACHER_KEYS,
)

"""kd_hidden: feature-based (intermediate-layer) distillation, as in FitNets and TinyBERT — the
student's hidden states regress the live teacher's on mapped layers.

    ray-t2t train configs/quickstart_smoke.yaml method=kd_hidden

The student (models.student, randomly initialized) minimizes

    alpha * mean over mapped (s, t) of MSE(W_s h_s, H_t)  +  (1 - alpha) * cross-entropy(gold target)

where h_s is the output of student block s and H_t that of teacher block t (`layer_map`; auto =
uniform spacing, the last block to the last), over the real positions of the chosen `stack`: an
encoder-decoder's decoder (target tokens, default) or encoder (source tokens); a decoder-only
model's one stack (prompt and target tokens). W_s is a learned linear projection from the student's
hidden size to the teacher's, one per mapped student block. The projections are part of the model
DeepSpeed trains (they are in the optimizer and the checkpoints, and counted in the run record's
trainable parameters), but not exported: the exported model is the plain transformers student.

The teacher runs live in each worker (ray_t2t.methods.distill): frozen, no gradients, no optimizer
state; it must share the student's tokenizer and family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.methods import distill
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.distill import (
    LAYER_MAP_DESCRIPTION,
    LayerMap,
    extra_flops_per_token,  # the live teacher's forward passes
)
from ray_t2t.methods.kd_logits import build as build_student
from ray_t2t.storage import local_model_path

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.storage import StoragePath


class KdHiddenParams(MethodParams):
    """Feature-based distillation (FitNets, TinyBERT): projected student hidden states regress a live teacher's."""

    name: Literal["kd_hidden"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hidden-state term; 1 - alpha on hard labels.")
    stack: Literal["decoder", "encoder"] = Field(
        "decoder",
        description="Whose hidden states: the decoder (decoder-only models: their one stack) or the "
        "encoder of an encoder-decoder.",
    )
    layer_map: LayerMap = Field("auto", description=LAYER_MAP_DESCRIPTION)


PROJECTIONS = "kd_projections"  # the student's submodule holding the projections (not exported)


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    student, teacher = distill.architectures(cfg, params)
    distill.check_stack(cfg, params, "stack", params.stack, student)
    distill.layer_map(cfg, params, student, teacher, params.stack)


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    return distill.prepare_live_teacher(cfg, log)


def build(setup: Setup) -> torch.nn.Module:
    import torch
    from transformers import AutoConfig

    model = build_student(setup)
    teacher_config = AutoConfig.from_pretrained(local_model_path(setup.extras["teacher"]))
    mapping = distill.layer_map(setup.cfg, setup.params, model.config, teacher_config, setup.params.stack)
    setup.extras["layer_map"] = mapping  # for loss()
    with torch.random.fork_rng(devices=[]):  # the same projections on every rank, whatever its RNG
        torch.manual_seed(setup.seed)
        projections = torch.nn.ModuleDict(
            {str(s): torch.nn.Linear(model.config.hidden_size, teacher_config.hidden_size) for s in mapping}
        )
    model.add_module(PROJECTIONS, projections)
    return model


def hidden_loss(
    student_states: torch.Tensor,
    teacher_states: torch.Tensor,
    mask: torch.Tensor,
    mapping: dict,
    projections: torch.nn.Module,
) -> Any:
    """Mean over mapped blocks of the MSE between projected student states and teacher states, over
    the positions in `mask` [batch, positions]."""
    import torch

    terms = []
    for s, t in mapping.items():
        projected = projections[str(s)](student_states[s][mask])  # [positions, teacher hidden]
        terms.append((projected.float() - teacher_states[t][mask].float()).pow(2).mean())
    return torch.stack(terms).mean()


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    params, encoder_decoder = setup.params, setup.encoder_decoder
    outputs = model(**batch, output_hidden_states=True)
    teacher = distill.teacher_outputs(setup, model, batch, output_hidden_states=True)
    student_module = getattr(model, "module", model)
    term = hidden_loss(
        distill.block_states(outputs, params.stack, encoder_decoder),
        distill.block_states(teacher, params.stack, encoder_decoder),
        distill.positions(batch, params.stack, encoder_decoder),
        setup.extras["layer_map"],
        getattr(student_module, PROJECTIONS),
    )
    return distill.mix(params.alpha, term, outputs.loss)


def export(model: torch.nn.Module, folder: StoragePath, setup: Setup) -> None:
    """The student alone, without the projections: a plain transformers model."""
    projections = model._modules.pop(PROJECTIONS)
    try:
        model.save_pretrained(folder)
    finally:
        model._modules[PROJECTIONS] = projections


METHOD = Method(
    "kd_hidden",
    KdHiddenParams,
    build,
    kind="distillation",
    teacher_use=lambda params: "live",
    check=check,
    prepare=prepare,
    loss=loss,
    export=export,
    extra_flops_per_token=extra_flops_per_token,
)

"""kd_attention: attention-map distillation, as in TinyBERT and MiniLM — the student's attention
maps match the live teacher's on mapped layers.

    ray-t2t train configs/quickstart_smoke.yaml method=kd_attention

The student (models.student, randomly initialized) minimizes

    alpha * mean over mapped (s, t) of KL(A_t || A_s)  +  (1 - alpha) * cross-entropy(gold target)

where A_s is student block s's attention map averaged over its heads, A_t the same of teacher block t
(`layer_map`; auto = uniform spacing, the last block to the last), and the KL is between the two
distributions over keys, per real query position, averaged. Averaging over heads makes students and
teachers with different head counts comparable (a mean of attention distributions is one), at the
price of matching the heads' consensus rather than each head. `attention` picks the maps: the
decoder's self-attention (default; a decoder-only model's only kind), an encoder-decoder's
cross-attention (decoder queries over source keys), or its encoder's self-attention.

Attention probabilities are returned by transformers' eager attention only, and in training it
returns them after attention dropout (entries zeroed at random, the rest scaled up: no longer a
distribution, and a KL against them is noise). So the teacher (eval mode, no dropout) runs eager
attention, and the student `ray_t2t_eager`, registered here: the family's own eager attention, whose
probabilities are returned before dropout, while the output is computed with dropout exactly as
eager computes it (same random mask: the student trains as it would under eager). Eager attention is
slower than SDPA on long sequences (alike on these); the exported model loads with the default
attention, as any other. The teacher runs live in each worker (ray_t2t.methods.distill): frozen, no
gradients, no optimizer state; it must share the student's tokenizer and family.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.errors import ConfigError
from ray_t2t.methods import distill
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.distill import LAYER_MAP_DESCRIPTION, LayerMap
from ray_t2t.methods.kd_logits import build as build_student
from ray_t2t.storage import local_model_path

if TYPE_CHECKING:
    import torch

    from ray_t2t.config.experiment import ExperimentConfig


class KdAttentionParams(MethodParams):
    """Attention-map distillation (TinyBERT, MiniLM): head-averaged attention maps match a live teacher's."""

    name: Literal["kd_attention"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the attention term; 1 - alpha on hard labels.")
    attention: Literal["decoder_self", "cross", "encoder_self"] = Field(
        "decoder_self",
        description="Which maps: the decoder's self-attention (decoder-only models: their only kind), the "
        "decoder's cross-attention over the encoder, or the encoder's self-attention (encoder-decoder).",
    )
    layer_map: LayerMap = Field("auto", description=LAYER_MAP_DESCRIPTION)


ATTENTION = "ray_t2t_eager"  # the student's: eager attention, probabilities returned before dropout
TEACHER_ATTENTION = "eager"  # the teacher is in eval mode: no dropout


def eager_probabilities_before_dropout(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    """An attention function for transformers' AttentionInterface: the module's family's own eager
    attention, but the probabilities it returns are those before dropout. In training, the output is
    recomputed from them with dropout, as eager does (the same random draw, so the same output)."""
    import sys

    import torch

    eager = sys.modules[type(module).__module__].eager_attention_forward
    output, probabilities = eager(module, query, key, value, attention_mask, dropout=0.0, **kwargs)
    if dropout > 0 and module.training:
        repeats = query.shape[1] // value.shape[1]  # grouped-query attention shares key/value heads
        value = value.repeat_interleave(repeats, dim=1) if repeats > 1 else value
        dropped = torch.nn.functional.dropout(probabilities.to(value.dtype), p=dropout, training=True)
        output = torch.matmul(dropped, value).transpose(1, 2).contiguous()
    return output, probabilities


def register_attention() -> None:
    """Make ATTENTION known to transformers (and give it eager's masks); idempotent, per process."""
    from transformers import AttentionInterface
    from transformers.masking_utils import (
        ALL_MASK_ATTENTION_FUNCTIONS,
        AttentionMaskInterface,
    )

    AttentionInterface.register(ATTENTION, eager_probabilities_before_dropout)
    AttentionMaskInterface.register(ATTENTION, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


def stack_of(attention: str) -> str:
    """The stack whose blocks (and queries) a kind of attention belongs to."""
    return "encoder" if attention == "encoder_self" else "decoder"


def check(cfg: ExperimentConfig, params: MethodParams) -> None:
    student, teacher = distill.architectures(cfg, params)
    if params.attention != "decoder_self" and not student.is_encoder_decoder:
        raise ConfigError(
            f"{distill.key_of(cfg, params, 'attention')}: {params.attention} needs an encoder-decoder; "
            "decoder-only models have their self-attention only (decoder_self)"
        )
    distill.layer_map(cfg, params, student, teacher, stack_of(params.attention))


def prepare(cfg: ExperimentConfig, params: MethodParams, log: Callable[[str], None]) -> dict:
    return distill.prepare_live_teacher(cfg, log)


def build(setup: Setup) -> torch.nn.Module:
    from transformers import AutoConfig

    model = build_student(setup)
    register_attention()
    model.set_attn_implementation(ATTENTION)
    teacher_config = AutoConfig.from_pretrained(local_model_path(setup.extras["teacher"]))
    setup.extras["layer_map"] = distill.layer_map(
        setup.cfg, setup.params, model.config, teacher_config, stack_of(setup.params.attention)
    )  # for loss()
    return model


def head_average(maps: torch.Tensor) -> torch.Tensor:
    """[batch, heads, queries, keys] -> [batch, queries, keys]: still a distribution over keys."""
    return maps.mean(dim=1)


def attention_loss(
    student_maps: torch.Tensor, teacher_maps: torch.Tensor, query_mask: torch.Tensor, mapping: dict
) -> Any:
    """Mean over mapped blocks of KL(teacher || student) between head-averaged attention
    distributions, averaged over the queries in `query_mask` [batch, queries]."""
    import torch

    terms = []
    for s, t in mapping.items():
        p = head_average(teacher_maps[t]).float()[query_mask]  # [queries, keys]
        q = head_average(student_maps[s]).float()[query_mask]
        # Masked keys have probability 0 in both: clamped, they add 0 * finite = 0.
        terms.append((p * (p.clamp_min(distill.EPS).log() - q.clamp_min(distill.EPS).log())).sum(-1).mean())
    return torch.stack(terms).mean()


def extra_flops_per_token(setup: Setup, model: torch.nn.Module) -> tuple[float, float]:
    """The live teacher's forward passes (the loop adds them to the student's training FLOPs)."""
    return distill.teacher_flops_per_token(setup, model, TEACHER_ATTENTION)


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    params, encoder_decoder = setup.params, setup.encoder_decoder
    outputs = model(**batch, output_attentions=True)
    teacher = distill.teacher_outputs(
        setup, model, batch, attn_implementation=TEACHER_ATTENTION, output_attentions=True
    )
    term = attention_loss(
        distill.attention_maps(outputs, params.attention, encoder_decoder),
        distill.attention_maps(teacher, params.attention, encoder_decoder),
        distill.positions(batch, stack_of(params.attention), encoder_decoder),
        setup.extras["layer_map"],
    )
    return distill.mix(params.alpha, term, outputs.loss)


METHOD = Method(
    "kd_attention",
    KdAttentionParams,
    build,
    kind="distillation",
    teacher_use=lambda params: "live",
    check=check,
    prepare=prepare,
    loss=loss,
    extra_flops_per_token=extra_flops_per_token,
)

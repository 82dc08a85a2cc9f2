"""vae: a conditional variational autoencoder for the task — an encoder-decoder whose decoder also reads
a latent variable z, trained on the evidence lower bound.

    ray-t2t train CONFIG method=vae
    ray-t2t train CONFIG method=vae methods.0.free_bits=0.1 methods.0.kl_anneal_steps=300

The model is the task's encoder-decoder (models.student by default, or models.base with `model:
base`; T5 or BART). Decoder-only models are refused before any work (`families`: a ConfigError
naming the key): there is no encoder whose states could carry z and be pooled for the posterior.

- **Posterior** q(z | x, y) = N(mu, diag sigma^2): a linear map of the masked-mean-pooled encoder
  states of the source and of the target (the same encoder reads the target ids; `posterior:
  target` pools the target alone). Reparameterized sample z = mu + sigma * eps while training.
- **Prior** p(z) = N(0, I). (A source-conditioned prior is not offered: its mean would need its own
  network at decoding time, which the exported plain transformers model could not run; see Export.)
- **Injection**: the decoder reads encoder states h + W z at every source position (W: latent_dim ->
  d_model, *no bias*), through the model's `encoder_outputs`; the decoder itself is unchanged.
- **Loss**: the task's cross-entropy + beta x sum over latent dimensions of max(KL_d, `free_bits`),
  KL_d the analytic KL(q || p) of dimension d averaged over the batch. beta rises linearly from 0 to
  `kl_weight` over `kl_anneal_steps` optimizer steps (KL annealing); free bits leave dimensions under
  the floor without pull towards the prior. Both fight posterior collapse.

**Evaluation and export: z = the prior mean.** The prior mean is 0 and the injection W z has no bias,
so at z = 0 the decoder reads exactly the encoder states h: the model that decodes at the prior mean
*is* the plain encoder-decoder inside the wrapper. So forward() and generate() (what the shared loop's
evaluation and decoding call) are the plain model's, the validation loss is the task's cross-entropy
at z = 0, and export() saves the plain encoder-decoder with save_pretrained: its greedy decoding
equals the VAE's at z = prior mean, token for token, with nothing ray_t2t-specific to load. The
posterior network and W are trained with the model (in its optimizer, checkpoints and trainable
parameter count) but not exported.

The learning curve carries `train_kl` (the raw KL per example, summed over dimensions, before free
bits), `train_kl_weight` (beta) and `train_recon` (the cross-entropy), next to train_loss (the whole
objective) — loss() returns them as statistics (see ray_t2t.methods). The annealing clock is a buffer
in the checkpoints, so a resumed run continues its schedule. The record's FLOPs per token count the
encoder's extra pass over the target (the posterior's input; extra_flops_per_token) besides the
model's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from ray_t2t.config.sections import MethodParams
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.wrapper import (
    TaskModelWrapper,
    export_task_model,
    masked_mean,
    unwrap,
)
from ray_t2t.models import build_model, training_flops_per_token

if TYPE_CHECKING:
    pass


class VaeParams(MethodParams):
    """Conditional VAE: a latent z (posterior from pooled encoder states) added to the encoder states the
    decoder reads; prior N(0, I); evaluation and export decode at the prior mean z = 0."""

    name: Literal["vae"] = Field(description="Method name.")
    model: Literal["student", "base"] = Field(
        "student", description="The encoder-decoder to train: models.student or models.base (as gan)."
    )
    latent_dim: int = Field(16, ge=1, description="Dimensions of the latent variable z.")
    posterior: Literal["source_target", "target"] = Field(
        "source_target",
        description="What q(z | .) reads: pooled encoder states of source and target, or of the target alone.",
    )
    kl_weight: float = Field(1.0, gt=0, description="Weight of the KL term once annealing is over.")
    kl_anneal_steps: int = Field(
        500,
        ge=0,
        description="KL annealing: the KL weight rises linearly from 0 to kl_weight over this many "
        "optimizer steps; 0 = full weight from the start.",
    )
    free_bits: float = Field(
        0.05,
        ge=0,
        description="Free bits (nats) per latent dimension: the KL of a dimension (batch mean) is "
        "charged max(KL_d, free_bits), so dimensions under the floor feel no pull to the prior (against posterior "
        "collapse); 0 = off.",
    )


LOGVAR_RANGE = (-10.0, 10.0)


class VaeModel(TaskModelWrapper):
    """The encoder-decoder (task_model, exported) with the posterior network and the injection W."""

    def __init__(self, seq2seq: torch.nn.Module, latent_dim: int, posterior: str) -> None:
        super().__init__(seq2seq)
        hidden = getattr(seq2seq.config, "d_model", None) or seq2seq.config.hidden_size
        pooled = 2 * hidden if posterior == "source_target" else hidden
        self.posterior_net = torch.nn.Linear(pooled, 2 * latent_dim)
        self.latent_to_states = torch.nn.Linear(latent_dim, hidden, bias=False)

    def posterior(
        self,
        source_states: torch.Tensor,
        source_mask: torch.Tensor,
        target_ids: list[list[int]],
        target_mask: torch.Tensor,
        source_target: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, logvar) [batch, latent_dim] of q(z | source, target)."""
        target_states = self.task_model.get_encoder()(
            input_ids=target_ids, attention_mask=target_mask
        ).last_hidden_state
        pooled = masked_mean(target_states, target_mask)
        if source_target:
            pooled = torch.cat([masked_mean(source_states, source_mask), pooled], dim=-1)
        mu, logvar = self.posterior_net(pooled).float().chunk(2, dim=-1)
        return mu, logvar.clamp(*LOGVAR_RANGE)

    def decode(
        self, source_states: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor, z: torch.Tensor
    ) -> Any:
        """The task model's outputs with z injected: the decoder reads source_states + W z."""
        from transformers.modeling_outputs import BaseModelOutput

        states = source_states + self.latent_to_states(z.to(source_states.dtype)).unsqueeze(1)
        return self.task_model(
            encoder_outputs=BaseModelOutput(last_hidden_state=states), attention_mask=attention_mask, labels=labels
        )


def build(setup: Setup) -> torch.nn.Module:
    params = setup.params
    model, _ = build_model(setup.model_spec(params.model), setup.tokenizer, seed=setup.seed)
    with torch.random.fork_rng(devices=[]):  # the same extra parts on every rank, whatever its RNG
        torch.manual_seed(setup.seed)
        return VaeModel(model, params.latent_dim, params.posterior)


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) per latent dimension, averaged over the batch: [latent_dim]."""
    return (0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)).mean(0)


def kl_weight(step: int, params: MethodParams) -> float:
    """beta at optimizer step `step` (0-based): linear from 0 to kl_weight over kl_anneal_steps."""
    if params.kl_anneal_steps == 0:
        return params.kl_weight
    return params.kl_weight * min(1.0, step / params.kl_anneal_steps)


def objective(vae: VaeModel, batch: dict, params: MethodParams, beta: float, pad_id: int) -> Any:
    """(loss, statistics): cross-entropy at a posterior sample of z + beta x the free-bits KL."""
    input_ids, attention_mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
    source_states = vae.task_model.get_encoder()(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    target_mask = labels != -100
    target_ids = labels.masked_fill(~target_mask, pad_id)
    mu, logvar = vae.posterior(
        source_states, attention_mask, target_ids, target_mask.long(), params.posterior == "source_target"
    )
    z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
    recon = vae.decode(source_states, attention_mask, labels, z).loss
    kl_dims = kl_per_dimension(mu, logvar)
    charged = kl_dims.clamp(min=params.free_bits).sum()
    total = recon + beta * charged
    return total, {"kl": kl_dims.sum().detach(), "kl_weight": beta, "recon": recon.detach()}


def extra_flops_per_token(setup: Setup, model: torch.nn.Module) -> tuple[float, float]:
    """The posterior reads each target through the encoder as well, forward and backward: a target
    token also costs the encoder's training FLOPs per token."""

    encoder_side, _ = training_flops_per_token(unwrap(model))
    return 0.0, encoder_side


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    vae = unwrap(model)
    step = vae.optimizer_step(setup.cfg.deepspeed.gradient_accumulation_steps)
    return objective(vae, batch, setup.params, kl_weight(step, setup.params), setup.tokenizer.pad_id)


export = export_task_model


METHOD = Method(
    "vae",
    VaeParams,
    build,
    kind="alternative",
    families=("encoder_decoder",),
    loss=loss,
    export=export,
    extra_flops_per_token=extra_flops_per_token,
)

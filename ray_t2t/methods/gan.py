"""gan: adversarial training of the task model (SeqGAN-style) — a generator against a discriminator that
tells gold targets from the generator's own samples.

    ray-t2t train CONFIG method=gan
    ray-t2t train CONFIG method=gan methods.0.model=base      # refine a pretrained models.base

The generator is the task model: models.student (default; a preset is randomly initialized, a
name_or_path loads its weights) or models.base (`model: base`, e.g. a pretrained or a ray_t2t-exported
model to refine). Both families work: encoder-decoder and decoder-only.

**Gradient path through discrete tokens: policy gradient (REINFORCE), not Gumbel-softmax.** Every
generator step samples one target per source from the generator (ancestral sampling at
`sample_temperature`, no gradient), the discriminator scores it (reward r = P(gold | source,
sample)), and the generator minimizes -(r - b) x log p(sample | source), normalized by the sampled
tokens. Why this and not Gumbel-softmax: the generator is trained on exactly the discrete sequences
it produces (the ones the shared evaluation decodes), with an unbiased gradient; the discriminator
reads plain token ids, like its gold inputs, so it cannot tell real from fake by "one-hot vs soft"
vectors, which a relaxed (Gumbel) input lets it do; and there is no relaxation temperature to anneal.
The cost is variance, which the stability guards below hold down. The reward is per sequence (no
Monte-Carlo rollouts per token, which would multiply the sampling cost by the target length).

**Stability guards** (parameters): `mle_weight` mixes the task's cross-entropy on the gold target
into every generator step (loss = mle_weight x CE + (1 - mle_weight) x policy gradient); `baseline`
(moving_average: b is an exponential moving average of the mean reward, decay `baseline_decay`;
or none); the D:G step ratio `d_steps`:`g_steps`; `mle_warmup_steps` of cross-entropy alone first.

**One engine for both.** build() returns a TaskModelWrapper (ray_t2t.methods.wrapper) holding the
generator and the discriminator, so the loop's single DeepSpeed engine, optimizer and checkpoints
cover both. loss() decides by the optimizer step which part learns: after the warm-up, cycles of
`d_steps` discriminator steps then `g_steps` generator steps. On a discriminator step the samples are
drawn without gradient, so only the discriminator is in the graph; on a generator step the
discriminator scores without gradient, so only the generator is. The idle part's gradients are None:
on one worker with ZeRO 0 in fp32 the optimizer skips it entirely; with several workers, ZeRO >= 1
or bf16, DeepSpeed hands the optimizer zero gradients for it instead, and AdamW's moments still move
it a little (a known effect of one optimizer for both players). The step counter and the baseline
are buffers, in the checkpoints: a resumed run continues its cycle.

The discriminator is a small transformer encoder (`disc_dim`, `disc_layers`, 4 heads) over
[source tokens; target tokens] with its own token, segment and position embeddings, mean-pooled to
one logit; its loss is the binary cross-entropy of gold (1) vs sampled (0).

**The run record.** loss() returns its statistics with the loss (see ray_t2t.methods), so the
learning curve carries, next to train_loss, the means since the last log line of
`train_disc_accuracy` (gold and samples told apart, on discriminator steps), `train_disc_loss`,
`train_gen_reward` (the discriminator's mean P(gold) of the samples, on generator steps) and
`train_gen_mle` (the cross-entropy term). Like train_loss, each is averaged since the previous log
line (every max(1, max_steps // 20) steps) and is absent from a window without a step of its
phase: a window of at least d_steps + g_steps steps always holds both players. train_loss averages the
discriminator's and the generator's losses and is not comparable to other methods'; the validation loss (the task's
cross-entropy) and the task metric are, as for every method. Evaluation and export see only the
generator: export() saves it with save_pretrained (the discriminator is not exported), and
evaluation decodes it greedily like any other model. Training time (and so cost) includes the
sampling and the discriminator; the record's FLOPs count the usual 6N per token of the wrapper's
parameters, not the sampling passes, so its MFU is an underestimate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator

from ray_t2t.batching import pad, prompts_decoder_only, prompts_encoder_decoder
from ray_t2t.config.sections import MethodParams
from ray_t2t.methods.base import Method, Setup
from ray_t2t.methods.base import collate as family_collate
from ray_t2t.methods.wrapper import (
    TaskModelWrapper,
    export_task_model,
    masked_mean,
    unwrap,
)
from ray_t2t.models import build_model

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig


class GanParams(MethodParams):
    """Adversarial training (SeqGAN-style): the generator (the task model) learns from a discriminator's
    reward by policy gradient on its own sampled outputs, mixed with the task's cross-entropy."""

    name: Literal["gan"] = Field(description="Method name.")
    model: Literal["student", "base"] = Field(
        "student",
        description="The generator: models.student (its preset or architecture, randomly initialized "
        "unless name_or_path loads weights) or models.base (e.g. a pretrained model to refine adversarially).",
    )
    mle_weight: float = Field(
        0.5,
        ge=0,
        lt=1,
        description="Generator loss = mle_weight x cross-entropy on the gold target + (1 - mle_weight) x the "
        "policy-gradient term. Keeps the generator anchored to the data (an adversarial term alone is unstable).",
    )
    d_steps: int = Field(1, ge=1, description="Discriminator optimizer steps per cycle (the D:G step ratio).")
    g_steps: int = Field(1, ge=1, description="Generator optimizer steps per cycle (the D:G step ratio).")
    mle_warmup_steps: int = Field(
        0,
        ge=0,
        description="Optimizer steps of cross-entropy alone before the adversarial cycles start "
        "(SeqGAN pretrains its generator with MLE).",
    )
    baseline: Literal["moving_average", "none"] = Field(
        "moving_average",
        description="Reward baseline subtracted in REINFORCE: an exponential moving average of "
        "the mean reward (lower variance), or none.",
    )
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="Decay of the moving-average reward baseline.")
    sample_temperature: float = Field(1.0, gt=0, description="Softmax temperature of the generator's sampling.")
    disc_dim: int = Field(
        64,
        ge=8,
        description="Discriminator width: a small transformer encoder over the source and the target "
        "(its own token, segment and position embeddings); a multiple of 4 (its attention heads).",
    )
    disc_layers: int = Field(1, ge=1, description="Discriminator transformer layers.")

    @field_validator("disc_dim")
    @classmethod
    def _heads_divide(cls, value: int) -> int:
        if value % 4:
            raise ValueError("disc_dim must be a multiple of 4 (the discriminator's 4 attention heads)")
        return value


PHASES = ("mle", "discriminator", "generator")
GAN_KEYS = ("gan_source", "gan_source_mask", "gan_target", "gan_target_mask")
HEADS = 4


class Discriminator(torch.nn.Module):
    """P(gold | source, target) as a logit: a small transformer encoder over both sequences."""

    def __init__(self, vocab_size: int, dim: int, layers: int, max_positions: int) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(vocab_size, dim)
        self.segments = torch.nn.Embedding(2, dim)
        self.positions = torch.nn.Embedding(max_positions, dim)
        layer = torch.nn.TransformerEncoderLayer(dim, HEADS, 2 * dim, dropout=0.0, batch_first=True)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = torch.nn.Linear(dim, 1)

    def forward(
        self, source: torch.Tensor, source_mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor
    ) -> Any:
        """Logits [batch]. Sequences are right-padded: `*_mask` [batch, positions] marks real tokens."""
        source_lengths, target_lengths = source_mask.sum(1, keepdim=True), target_mask.sum(1, keepdim=True)
        longest = int((source_lengths + target_lengths).max())
        j = torch.arange(longest, device=source.device).unsqueeze(0)
        from_source = j < source_lengths
        tokens = torch.where(
            from_source,
            source.gather(1, j.clamp(max=source.shape[1] - 1).expand(source.shape[0], -1)),
            target.gather(1, (j - source_lengths).clamp(0, target.shape[1] - 1)),
        )
        valid = j < source_lengths + target_lengths
        positions = j.clamp(max=self.positions.num_embeddings - 1)
        states = self.tokens(tokens) + self.segments((~from_source).long()) + self.positions(positions)
        states = self.encoder(states, src_key_padding_mask=~valid)
        return self.head(masked_mean(states, valid)).squeeze(-1).float()


class GanModel(TaskModelWrapper):
    """The generator (task_model, exported) and the discriminator (not exported)."""

    def __init__(self, generator: torch.nn.Module, discriminator: torch.nn.Module) -> None:
        super().__init__(generator)
        self.discriminator = discriminator
        self.register_buffer("phase_counts", torch.zeros(len(PHASES), dtype=torch.long))  # loss() calls per phase
        self.register_buffer("reward_baseline", torch.zeros(()))
        self.register_buffer("baseline_started", torch.zeros((), dtype=torch.long))  # 0/1 (gloo broadcasts no bool)


def build(setup: Setup) -> torch.nn.Module:
    params, cfg = setup.params, setup.cfg
    generator, _ = build_model(setup.model_spec(params.model), setup.tokenizer, seed=setup.seed)
    vocab = generator.get_input_embeddings().num_embeddings
    with torch.random.fork_rng(devices=[]):  # the same discriminator on every rank, whatever its RNG
        torch.manual_seed(setup.seed)
        discriminator = Discriminator(
            vocab, params.disc_dim, params.disc_layers, cfg.data.max_source_length + max_sample_length(cfg) + 1
        )
    return GanModel(generator, discriminator)


def max_sample_length(cfg: ExperimentConfig) -> int:
    return cfg.data.max_target_length


def collate(
    setup: Setup,
    source_ids: list[list[int]],
    target_ids: list[list[int]],
    generator: torch.Generator | None = None,
    indices: list[int] | None = None,
) -> dict:
    """The family's batch, plus source and gold target right-padded for the discriminator."""
    batch = family_collate(setup, source_ids, target_ids)
    pad_id = setup.tokenizer.pad_id
    batch["gan_source"], batch["gan_source_mask"] = pad(source_ids, pad_id, left=False)
    batch["gan_target"], batch["gan_target_mask"] = pad(target_ids, pad_id, left=False)
    return batch


def phase_of(step: int, params: MethodParams) -> str:
    """Which part learns at optimizer step `step` (0-based): mle (warm-up), discriminator or generator."""
    if step < params.mle_warmup_steps:
        return "mle"
    cycle = (step - params.mle_warmup_steps) % (params.d_steps + params.g_steps)
    return "discriminator" if cycle < params.d_steps else "generator"


def rows(ids: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
    return [row[: int(n)] for row, n in zip(ids.tolist(), mask.sum(1).tolist())]


def sample(model: GanModel, setup: Setup, sources: list[list[int]], temperature: float) -> list[list[int]]:
    """One sampled target per source (up to and including its end-of-sequence), without gradient."""
    tok, generator = setup.tokenizer, model.task_model
    if setup.encoder_decoder:
        input_ids, attention_mask = prompts_encoder_decoder(sources, tok.pad_id)
    else:
        input_ids, attention_mask = prompts_decoder_only(sources, tok.pad_id, tok.sep_id)
    device = next(generator.parameters()).device
    was_training = generator.training
    generator.eval()
    try:
        with torch.no_grad():
            output = generator.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                num_beams=1,
                num_return_sequences=1,
                max_new_tokens=max_sample_length(setup.cfg),
                pad_token_id=tok.pad_id,
                eos_token_id=tok.eos_id,
                # ZeRO 3 gathers weights with collectives in every forward: ranks keep stepping together
                synced_gpus=setup.cfg.deepspeed.zero_stage == 3 and setup.cfg.scaling.num_workers > 1,
            )
    finally:
        generator.train(was_training)
    new = output[:, 1:] if setup.encoder_decoder else output[:, input_ids.shape[1] :]
    samples = []
    for ids in new.tolist():
        samples.append(ids[: ids.index(tok.eos_id) + 1] if tok.eos_id in ids else ids)
    return samples


def sequence_logprobs(
    model: GanModel,
    setup: Setup,
    sources: list[list[int]],
    samples: torch.Tensor,
    temperature: float,
    device: torch.device,
) -> torch.Tensor:
    """(sum of log p(token) per sample [batch], number of sampled tokens), with gradient, under the
    sampling distribution (softmax of logits / temperature)."""
    batch = {k: v.to(device) for k, v in family_collate(setup, sources, samples).items()}
    logits, labels = model.task_model(**batch).logits, batch["labels"]
    if not setup.encoder_decoder:  # a decoder-only model predicts token t+1 at position t
        labels, logits = labels[:, 1:], logits[:, :-1]
    scored = labels != -100
    logprobs = torch.log_softmax(logits.float() / temperature, -1)
    picked = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * scored).sum(1), scored.sum().clamp(min=1)


def loss(model: torch.nn.Module, batch: dict, setup: Setup) -> Any:
    """(loss, statistics) of this step's phase; see the module docstring."""
    import torch.nn.functional as F

    params = setup.params
    gan = unwrap(model)
    task_batch = {k: v for k, v in batch.items() if k not in GAN_KEYS}
    phase = phase_of(gan.optimizer_step(setup.cfg.deepspeed.gradient_accumulation_steps), params)
    gan.phase_counts[PHASES.index(phase)] += 1
    if phase == "mle":
        mle = model(**task_batch).loss
        return mle, {"gen_mle": mle.detach()}
    source, source_mask = batch["gan_source"], batch["gan_source_mask"]
    sources = rows(source, source_mask)
    samples = sample(gan, setup, sources, params.sample_temperature)
    fake, fake_mask = (t.to(source.device) for t in pad(samples, setup.tokenizer.pad_id, left=False))
    if phase == "discriminator":
        real_logits = gan.discriminator(source, source_mask, batch["gan_target"], batch["gan_target_mask"])
        fake_logits = gan.discriminator(source, source_mask, fake, fake_mask)
        d_loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
        )
        accuracy = 0.5 * ((real_logits > 0).float().mean() + (fake_logits < 0).float().mean())
        return d_loss, {"disc_accuracy": accuracy, "disc_loss": d_loss.detach()}
    with torch.no_grad():
        reward = torch.sigmoid(gan.discriminator(source, source_mask, fake, fake_mask))
    mean_reward = reward.mean()
    if params.baseline == "moving_average":
        if not bool(gan.baseline_started):
            gan.reward_baseline.fill_(float(mean_reward))
            gan.baseline_started.fill_(1)
        advantage = reward - gan.reward_baseline.float()
        gan.reward_baseline.mul_(params.baseline_decay).add_((1 - params.baseline_decay) * mean_reward)
    else:
        advantage = reward
    logprob_sums, tokens = sequence_logprobs(gan, setup, sources, samples, params.sample_temperature, source.device)
    policy_gradient = -(advantage.detach() * logprob_sums).sum() / tokens
    mle = model(**task_batch).loss
    g_loss = params.mle_weight * mle + (1 - params.mle_weight) * policy_gradient
    return g_loss, {"gen_reward": mean_reward, "gen_mle": mle.detach()}


export = export_task_model


METHOD = Method("gan", GanParams, build, kind="alternative", collate=collate, loss=loss, export=export)

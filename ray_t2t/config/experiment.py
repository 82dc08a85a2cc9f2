"""The whole experiment config: its sections and the registered methods' entries, read from YAML
with ``a.b=value`` overrides.

    from ray_t2t.config.experiment import load_config
    cfg = load_config("configs/quickstart.yaml", ["training.learning_rate=3e-4", "methods.5.top_k=16"])

Unknown keys are errors that name the section and list its valid keys. YAML is read with
``yaml.safe_load`` only and no value is ever imported or executed: names in a config (tasks, presets,
methods, metrics) are looked up in fixed registries. `methods` is validated against the methods
registered in ray_t2t.methods: their parameter models, told apart by `name`.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, ValidationError, create_model, model_validator

from ray_t2t.config.overrides import apply_override, format_error, unknown_keys
from ray_t2t.config.reading import load_yaml, read_config_text
from ray_t2t.config.sections import (
    MAX_SEED,
    CostSection,
    DataSection,
    DeepSpeedSection,
    EvalSection,
    InferenceSection,
    MethodParams,
    ModelsSection,
    ReportSection,
    RunSection,
    ScalingSection,
    Section,
    SoftTargetsSection,
    TrackingSection,
    TrainingSection,
    TuneSection,
)
from ray_t2t.errors import ConfigError
from ray_t2t.methods import METHODS, registry_version
from ray_t2t.storage import StoragePath, child, location


class ExperimentConfig(Section):
    """A whole ray_t2t experiment."""

    seed: int = Field(0, ge=0, le=MAX_SEED, description="Base seed of model init and data order.")
    run: RunSection = Field(description="Name, storage and failure handling.")
    data: DataSection = Field(default_factory=DataSection, description="The task.")
    models: ModelsSection = Field(description="Student, teacher(s), base.")
    methods: list[MethodParams] = Field(
        default_factory=list, description="Methods to compare: a list of {name: ..., params}."
    )
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
    tracking: TrackingSection = Field(
        default_factory=TrackingSection, description="Experiment tracking: TensorBoard, MLflow, W&B."
    )

    @model_validator(mode="after")
    def _cross_checks(self) -> ExperimentConfig:
        ds = self.deepspeed
        if ds.offload_params and ds.zero_stage != 3:
            raise ValueError("deepspeed.offload_params needs deepspeed.zero_stage=3")
        if ds.offload_optimizer and ds.zero_stage == 0:
            raise ValueError("deepspeed.offload_optimizer needs deepspeed.zero_stage >= 1")
        if ds.precision in ("bf16", "fp16") and not self.scaling.use_gpu:
            raise ValueError(f"deepspeed.precision={ds.precision} needs scaling.use_gpu=true (CPU trains in fp32)")
        if self.tune.scheduler == "asha" and self.training.epochs is not None:
            raise ValueError(
                "tune.scheduler=asha plans its rungs in steps before the data is prepared: give "
                "training.max_steps instead of training.epochs"
            )
        if self.tune.scheduler == "asha" and self.eval.every_n_steps >= self.training.max_steps:
            raise ValueError(
                f"tune.scheduler=asha stops weak trials at their evaluations before the last step, but "
                f"eval.every_n_steps ({self.eval.every_n_steps}) leaves none before training.max_steps "
                f"({self.training.max_steps}): lower eval.every_n_steps"
            )
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
            spec = METHODS.get(method.name)
            if spec is not None and spec.uses_teacher(method) and not self.models.teachers:
                raise ValueError(f"method {method.name!r} needs models.teacher")
        return self

    @property
    def experiment_dir(self) -> StoragePath:
        """<run.storage_path>/<run.name>: a Path, or a storage.Remote for an object-store URI."""
        return child(location(self.run.storage_path), self.run.name)


def method_entry_type() -> Any:
    """The registered methods' parameter models as one union, told apart by `name`."""
    return Annotated[
        functools.reduce(operator.or_, (spec.params for spec in METHODS.values())), Field(discriminator="name")
    ]


def method_entry(cfg: ExperimentConfig, label: str) -> MethodParams:
    """The methods entry whose label (or method name) is `label`; KeyError when there is none."""
    for entry in cfg.methods:
        if (entry.label or entry.name) == label:
            return entry
    raise KeyError(label)


def choose_method(cfg: ExperimentConfig, label: str | None) -> MethodParams:
    """The methods entry named `label` (its label, or its method name); the only one if None.
    ConfigError saying which there are otherwise."""
    labels = [m.label or m.name for m in cfg.methods]
    if not labels:
        raise ConfigError("the config lists no methods; add one under `methods`")
    if label is None:
        if len(labels) > 1:
            raise ConfigError(f"the config lists several methods; choose one with method=NAME ({', '.join(labels)})")
        label = labels[0]
    try:
        return method_entry(cfg, label)
    except KeyError:
        raise ConfigError(f"no method {label!r} in the config. Methods: {', '.join(labels)}") from None


_schemas: dict[int, type[ExperimentConfig]] = {}


def schema() -> type[ExperimentConfig]:
    """ExperimentConfig with `methods` validated as the registered methods' entries (rebuilt when a
    method is registered; configs reach Ray workers as JSON, so the class itself never travels)."""
    version = registry_version()
    if version not in _schemas:
        _schemas[version] = create_model(
            "ExperimentConfig",
            __base__=ExperimentConfig,
            __module__=__name__,
            methods=(list[method_entry_type()], ExperimentConfig.model_fields["methods"]),
        )
    return _schemas[version]


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``a.b=value`` overrides, validate.

    Raises ConfigError with a message naming the file, key or field.
    """
    path = Path(path)
    raw = load_yaml(read_config_text(path), str(path))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(raw).__name__}")
    for override in overrides:
        apply_override(raw, override)
    return validate_config(raw, source=str(path))


def validate_config(raw: dict, source: str = "config") -> ExperimentConfig:
    """Validate a plain dict; raises ConfigError listing every problem, one per line."""
    model = schema()
    lines = unknown_keys(raw, model)
    try:
        cfg = model.model_validate(raw)
    except ValidationError as err:
        # pydantic's own unknown-key errors do not list the valid keys; unknown_keys() reported them.
        lines += [format_error(e) for e in err.errors() if not (lines and e["type"] == "extra_forbidden")]
    if lines:
        raise ConfigError(f"{source}: {len(lines)} problem(s):\n  " + "\n  ".join(lines))
    return cfg


def config_hash(cfg: ExperimentConfig) -> str:
    """Stable hash of the validated config (defaults included), for run records and reports."""
    canonical = json.dumps(cfg.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]

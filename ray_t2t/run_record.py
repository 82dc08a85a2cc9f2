"""The training run record: one definition, with its version, that the loop writes and the report reads.

A record is one JSON file next to its run (<storage_path>/<run.name>/runs/<label>/record.json, or
sweep/<trial>/record.json). The fields the report ranks by are required and strictly typed (a number
is a finite int or float, never a bool); the rest are optional, so a record from an older ray_t2t still
reads. Extra keys are kept: a sweep trial's group, seed and parameters, a method's own fields
(multitask's tasks).
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AllowInfNan,
    BaseModel,
    ConfigDict,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

from ray_t2t.errors import UserError

RECORD_VERSION = 1

Number = Annotated[StrictInt | StrictFloat, AllowInfNan(False)]


class _Part(BaseModel):
    model_config = ConfigDict(extra="allow")


class ModelPart(_Part):
    total_params: StrictInt = Field(description="Parameters of the exported (deployed) model.")
    family: Literal["encoder_decoder", "decoder_only"] | None = None
    architecture: str | None = Field(None, description="The model's model_type (t5, gpt2, ...).")
    trainable_params: int | None = None
    training_only_params: int | None = Field(
        None,
        description="Trained but not exported: a GAN's discriminator, "
        "kd_hidden's projections, a VAE's posterior, unmerged adapters.",
    )
    architecture_key: str | None = Field(None, description="Same key = same deployed shape (one size class).")
    size_on_disk_bytes: int | None = None
    export_path: str | None = None
    initialized_from: str | None = Field(None, description="The export_path of the run it started from.")


class DataPart(_Part):
    tokens_seen: Number = Field(description="Target and source tokens the optimizer steps read.")
    task: str | None = None
    train_examples: int | None = None


class TimesPart(_Part):
    train_s: Number = Field(description="Seconds of optimizer steps (evaluation and checkpoints apart).")
    setup_s: float | None = None
    eval_s: float | None = None
    checkpoint_s: float | None = None
    finish_s: float | None = None
    total_s: float | None = None


class CostPart(_Part):
    total: Number | None = Field(description="device_seconds priced by the config's cost table (null: no price).")
    currency: str | None = None
    price_per_device_hour: float | None = None


class FinalPart(_Part):
    test: dict[str, Any] = Field(description="Test metrics of the exported model.")
    validation: dict[str, Any] | None = None


class MetricPart(_Part):
    name: StrictStr = Field(description="eval.metric.")
    higher_is_better: bool | None = None


class CurvePoint(_Part):
    """One evaluation: what was charged so far, and the metrics (val_*, train_*)."""

    step: Number
    wall_s: Number
    device_s: Number | None = None
    cost: Number | None = None
    tokens: Number | None = None


class StepsPart(_Part):
    planned: StrictInt | None = None
    done: StrictInt


class Placement(_Part):
    """How a run was placed (ray_t2t.placement): its own cores or GPUs, or shared."""

    pinned: bool | None = None
    cpus: list[StrictInt] | None = None
    gpus: list[StrictInt | str] | None = None
    threads: StrictInt | None = None


class HardwarePart(_Part):
    workers: StrictInt | None = None
    device_type: str | None = None
    devices_per_worker: Number | None = None
    devices: Number | None = None
    nodes: StrictInt | None = None
    placement: Placement | None = None


class RunRecord(_Part):
    """A finished training run, as the loop writes it."""

    record_version: int = RECORD_VERSION
    label: StrictStr = Field(description="The method entry's label (its name unless set).")
    method: StrictStr = Field(description="The registered method's name.")
    times: TimesPart
    device_seconds: Number = Field(description="Seconds x devices charged (training, or a fewshot's inference).")
    cost: CostPart
    learning_curve: list[CurvePoint] = Field(description="One entry per evaluation: step, wall_s, device_s, cost, ...")
    final: FinalPart
    metric: MetricPart
    model: ModelPart
    data: DataPart
    experiment: str | None = None
    group: StrictStr | None = Field(None, description="A sweep trial's group: its label and settings, not its seed.")
    params: dict[str, Any] | None = Field(None, description="The method entry's parameters.")
    seed: StrictInt | None = None
    precision: str | None = None
    config_hash: str | None = None
    run_hash: str | None = None
    setting_hash: str | None = Field(None, description="What its replicates (other seeds) share.")
    status: str | None = None
    stopped_at_target: bool | None = None
    resumes: int | None = None
    steps: StepsPart | None = None
    hardware: HardwarePart | None = Field(None, description="Devices, their type and how the run was placed.")
    cost_basis: Literal["training", "inference"] | None = None
    tokens_per_s: float | None = None
    flops: float | None = None
    flops_per_token: float | None = None
    mfu: float | None = None
    peak_memory_bytes: int | None = None
    energy_j: float | None = None
    target: dict[str, Any] | None = None
    time_to_target: dict[str, Any] | None = Field(None, description="The interpolated crossing of eval.target.")
    time_to_target_by_task: dict[str, Any] | None = None
    timestamps: dict[str, Any] | None = None


class TeacherPart(_Part):
    label: StrictStr
    path: str | None = None
    pre_existing: bool | None = None
    training_device_seconds: Number | None = None
    training_cost: Number | None = None


class InferenceTimes(_Part):
    busy_s: Number | None = None
    wall_s: Number | None = None


class InferenceCost(_Part):
    total: Number | None = None
    currency: str | None = None
    price_per_device_hour: Number | None = None
    storage_per_month: Number | None = None


class InferenceData(_Part):
    examples: StrictInt | None = None
    source_tokens: StrictInt | None = None
    target_tokens: StrictInt | None = None
    tokens: StrictInt | None = None


class StoragePart(_Part):
    bytes: StrictInt | None = None
    bytes_per_target_token: Number | None = None
    shards: StrictInt | None = None


class TeacherInferenceRecord(_Part):
    """The record of a teacher's soft-target inference (ray_t2t.soft_targets), which the report
    charges to the students that read them."""

    record_version: int = RECORD_VERSION
    kind: Literal["teacher_inference"]
    label: StrictStr
    teacher: TeacherPart
    times: InferenceTimes
    device_seconds: Number
    cost: InferenceCost
    hardware: HardwarePart | None = None
    data: InferenceData | None = None
    settings: dict[str, Any] | None = None
    tokens_per_s: Number | None = None
    tokens_per_s_per_replica: Number | None = None
    storage: StoragePart | None = None


class Spread(_Part):
    median: Number


class SpeedResult(_Part):
    batch_size: StrictInt
    examples: StrictInt | None = None
    examples_per_s: Spread
    tokens_per_s: Spread
    seconds: Spread | None = None
    latency_s: Spread | None = None


class SpeedDevice(_Part):
    type: str | None = None
    name: str | None = None
    description: StrictStr | None = None


class InferenceSpeedRecord(_Part):
    """The record of an exported model's inference speed (ray_t2t.inference): the report's speed columns."""

    record_version: int = RECORD_VERSION
    kind: Literal["inference_speed"]
    architecture_key: StrictStr
    results: list[SpeedResult]
    settings: dict[str, Any] | None = None
    device: SpeedDevice | None = None
    params: StrictInt | None = None
    stands_for: str | None = None


_MODELS = {"teacher_inference": TeacherInferenceRecord, "inference_speed": InferenceSpeedRecord}


def new_record(**fields: Any) -> dict[str, Any]:
    """A run record as JSON-ready data, checked against RunRecord (the loop's mistakes fail here, not
    in the report)."""
    return {"record_version": RECORD_VERSION} | RunRecord.model_validate(fields).model_dump(
        mode="json", exclude_unset=True
    )


def check_record(record: dict, source: str) -> None:
    """Raise UserError naming `source` and the first field the report needs that `record` lacks or
    holds with the wrong type (a training run's record, a teacher inference's or an inference speed's)."""
    kind = record.get("kind")
    model = _MODELS.get(kind, RunRecord) if isinstance(kind, str) else RunRecord
    try:
        model.model_validate(record)
    except ValidationError as err:
        error = err.errors()[0]
        where = _field_path(error["loc"])
        if error["type"] == "missing":
            raise UserError(
                f"{source}: the run record has no {where}; it was written by another version of "
                "ray_t2t or by hand: rerun that run, or move the file away"
            ) from None
        raise UserError(
            f"{source}: the run record's {where} is {json.dumps(error.get('input'))[:80]}, not "
            f"{_expected(error['type'])}; rerun that run, or move the file away"
        ) from None


def _field_path(loc: tuple) -> str:
    # a union's member names (int, float) appear in the location after the field's own path
    return ".".join(
        str(part)
        for part in loc
        if part not in ("int", "float", "constrained-int", "constrained-float", "function-after[...]")
    )


def _expected(error_type: str) -> str:
    if error_type.startswith(("int", "float", "finite")):
        return "a number"
    if error_type.startswith("string"):
        return "a str"
    if error_type.startswith("list"):
        return "a list"
    if error_type.startswith(("dict", "model")):
        return "a dict"
    return "of the expected type"

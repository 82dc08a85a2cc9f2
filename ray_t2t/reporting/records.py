"""The report's input: run records read, checked, deduplicated and grouped; the target.

Replicates are distinct seeds of one configuration. A group is a sweep's `group` (method label +
hyperparameters) or else the label; within it each seed counts once (a rerun, or a `ray-t2t train`
of the same method and seed beside the sweep's trial, is left out and listed), and runs of other
settings under one name (records' setting_hash: what decides a result, the seed aside) are groups of
their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray_t2t.config.sections import TargetSection
from ray_t2t.errors import UserError, shorten
from ray_t2t.inference import INFERENCE_FOLDER  # <experiment>/inference/<key>.json
from ray_t2t.ledger import crossing, meets
from ray_t2t.methods import METHODS, Method
from ray_t2t.run_record import check_record
from ray_t2t.storage import location

REPORT_FOLDER = "report"


def method_of(record: dict) -> Method | None:
    """The registered method that wrote `record` (its traits decide how the report charges and ranks
    it); None for a method this process does not know."""
    return METHODS.get(record.get("method"))


def params_of(record: dict, method: Method) -> Any:
    """The record's method parameters as the method's model (unvalidated: an old record keeps what it has)."""
    return method.params.model_construct(**(record.get("params") or {}))


def teacher_use(record: dict) -> str | None:
    """How the record's run used the teacher (Method.teacher_use): soft_targets, live, weights or None."""
    method = method_of(record)
    return method.teacher_use(params_of(record, method)) if method else None


def kind_of(record: dict) -> str:
    method = method_of(record)
    return method.kind if method else "alternative"


# ------------------------------------------------------------------------------- time to target


@dataclass(frozen=True)
class Target:
    metric: str
    op: str  # "<=" or ">="
    value: float
    source: str  # where it comes from, for the report

    def met(self, value: float) -> bool:
        return meets(value, self.op, self.value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:.4g}"


def time_to_target(curve: list[dict], metric: str, op: str, value: float) -> dict | None:
    """Where the curve's val_<metric> first meets `op value`, interpolated between the evaluations
    around the crossing (ray_t2t.ledger.crossing): {step, wall_s, device_s, cost, tokens, energy_j},
    or None when no evaluation meets it."""
    return crossing(curve, f"val_{metric}", op, value)


def relative_target(teacher_value: float, fraction: float, metric: str, higher_is_better: bool) -> Target:
    """`fraction` of the teacher's quality: value >= fraction x teacher (higher is better), or
    value <= teacher / fraction (lower is better: an error rate may be 1/fraction times the teacher's)."""
    if not fraction > 0:
        raise UserError(f"--target-relative must be above 0, got {fraction:g}")
    source = f"{fraction:g} of the teacher's test {metric} {teacher_value:.4g} (--target-relative {fraction:g})"
    if higher_is_better:
        return Target(metric, ">=", teacher_value * fraction, source)
    return Target(metric, "<=", teacher_value / fraction, source)


def parse_target(text: str) -> Target:
    """'wer <= 0.5' -> Target; UserError when it is not of that form or points the wrong way."""
    from pydantic import ValidationError

    try:
        parsed = TargetSection.model_validate(text)
    except ValidationError as err:
        reason = err.errors()[0]["msg"].removeprefix("Value error, ")
        raise UserError(f"--target {text!r}: {reason}") from None
    return Target(parsed.metric, parsed.op, parsed.value, "--target")


# ----------------------------------------------------------------------------------- the records


@dataclass
class Records:
    runs: list[dict]  # finished training records, each with "_path"
    inferences: list[dict]  # teacher-inference records, each with "_path"
    left_out: list[tuple[str, str]]  # (path, why)
    speeds: dict[str, dict] = field(default_factory=dict)  # architecture key -> inference-speed record


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(
            f"{path}: not a readable run record ({err}); remove it or rerun the run that wrote it"
        ) from None


def group_of(record: dict) -> str:
    return record.get("group") or record["label"]


def load_records(run_dir: Path) -> Records:
    """Every record under the experiment folder: training runs (runs/, sweep/), teacher inference
    (soft_targets/) and inference speed (inference/). Raises UserError naming the file for unreadable
    or incomplete records, and saying what to run when there are none.

    Each (group, seed) counts once: sweep trials before single runs, then in path order; the others
    are left out, as are unfinished and failed runs."""
    run_dir = location(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no experiment folder {run_dir}: give <storage_path>/<run.name> of an experiment")
    training = sorted(run_dir.glob("sweep/*/record.json")) + sorted(run_dir.glob("runs/*/record.json"))
    inference = sorted(run_dir.glob("soft_targets/*/record.json"))
    records = Records([], [], [])
    seen: dict[tuple, str] = {}
    for path in training + inference:
        record = _read_json(path)
        if not isinstance(record, dict):
            raise UserError(f"{path}: not a run record (a JSON object was expected)")
        if record.get("status") != "finished":
            why = f"status {record.get('status')!r}" + (f": {record['reason']}" if record.get("reason") else "")
            records.left_out.append((str(path), why))
            continue
        if record.get("kind") == "teacher_inference":
            check_record(record, str(path))
            records.inferences.append(dict(record, _path=str(path)))
            continue
        check_record(record, str(path))
        replicate = (group_of(record), record.get("seed"))
        if replicate in seen:
            records.left_out.append(
                (
                    str(path),
                    f"seed {record.get('seed')} of {group_of(record)} is already counted "
                    f"({seen[replicate]}): a replicate is a distinct seed",
                )
            )
            continue
        seen[replicate] = str(path)
        records.runs.append(dict(record, _path=str(path)))
    if not records.runs:
        failed = f" ({len(records.left_out)} unfinished or failed)" if records.left_out else ""
        raise UserError(f"no run records under {run_dir}{failed}: run `ray-t2t train` or `ray-t2t run` first")
    for path in sorted(run_dir.glob(f"{INFERENCE_FOLDER}/*.json")):
        speed = _read_json(path)
        if not isinstance(speed, dict):
            raise UserError(f"{path}: not an inference-speed record (a JSON object was expected)")
        if speed.get("kind") == "inference_speed" and speed.get("status") == "finished":
            check_record(speed, str(path))
            records.speeds[speed["architecture_key"]] = dict(speed, _path=str(path))
    return records


def is_teacher_run(record: dict) -> bool:
    return (record.get("params") or {}).get("model") == "teacher"


@dataclass
class Group:
    name: str
    records: list[dict] = field(default_factory=list)

    @property
    def method(self) -> str:
        return ", ".join(dict.fromkeys(r["method"] for r in self.records))

    @property
    def is_teacher(self) -> bool:
        return any(is_teacher_run(r) for r in self.records)

    @property
    def is_distillation(self) -> bool:
        return not self.is_teacher and any(kind_of(r) == "distillation" for r in self.records)

    @property
    def is_normal(self) -> bool:
        return not self.is_teacher and all(kind_of(r) == "normal" for r in self.records)

    @property
    def reads_soft_targets(self) -> bool:
        return teacher_use(self.records[0]) == "soft_targets"

    @property
    def seeds(self) -> list:
        return sorted({r.get("seed") for r in self.records if r.get("seed") is not None})

    @property
    def size_class(self) -> tuple:
        """What the group's runs are compared on: (task, family, architecture, parameters of the
        exported model). Runs of another task or another exported model are never ranked together."""
        model = self.records[0]["model"]
        task = (self.records[0].get("data") or {}).get("task")
        return (task, model.get("family"), model.get("architecture"), model["total_params"])

    @property
    def trains_the_student(self) -> bool:
        """A run of the configured student (params.model student): its size class is the one compared."""
        return any((r.get("params") or {}).get("model") == "student" for r in self.records)

    @property
    def stopped_at_target(self) -> bool:
        return any(r.get("stopped_at_target") for r in self.records)


def group_records(runs: list[dict]) -> list[Group]:
    """Runs by group (a sweep's `group`, else the label), in the order found, teachers last. Runs of
    one name but other settings (setting_hash) are groups of their own, named with a #2, #3 suffix."""
    groups: dict[tuple, Group] = {}
    settings: dict[str, list] = {}
    for record in runs:
        name = group_of(record)
        known = settings.setdefault(name, [])
        setting = record.get("setting_hash")
        if setting not in known:
            known.append(setting)
        index = known.index(setting)
        key = (name, index)
        shown = name if index == 0 else f"{name} #{index + 1}"
        groups.setdefault(key, Group(shown)).records.append(record)
    return sorted(groups.values(), key=lambda group: group.is_teacher)


def one(values: list, what: str, hint: str, records: list[dict] | None = None) -> Any:
    """The one value every record has (None for none); UserError naming `what` when they disagree,
    with a record that holds each value when `records` (aligned with `values`) are given."""
    first: dict[str, str] = {}
    for i, value in enumerate(values):
        where = (records[i].get("_path") or records[i].get("label")) if records else None
        first.setdefault(json.dumps(value, sort_keys=True), f" in {where}" if where else "")
    if len(first) > 1:
        shown = "; ".join(f"{value}{where}" for value, where in first.items())
        raise UserError(f"the run records disagree on {what} ({shorten(shown, 800)}): {hint}")
    return json.loads(next(iter(first))) if first else None


def resolve_target(
    runs: list[dict], target: str | None, target_relative: float | None, metric: str, higher_is_better: bool
) -> Target | None:
    """The target the report measures time to: --target, --target-relative, or the records' own."""
    if target is not None and target_relative is not None:
        raise UserError("give --target or --target-relative, not both")
    if target is not None:
        chosen = parse_target(target)
    elif target_relative is not None:
        teachers = [r for r in runs if is_teacher_run(r)]
        if not teachers:
            raise UserError(
                "--target-relative needs the teacher's measured test quality, and no run record here trained the "
                "teacher (a method entry with model: teacher); a pre-existing teacher has no run: give an absolute "
                "--target instead"
            )
        values = [r["final"]["test"].get(metric) for r in teachers]
        values = [v for v in values if isinstance(v, (int, float))]
        if not values:
            raise UserError(f"the teacher's run records have no test {metric}: give an absolute --target instead")
        chosen = relative_target(sum(values) / len(values), target_relative, metric, higher_is_better)
    else:
        with_target = [r for r in runs if r.get("target")]
        own = one([r["target"] for r in with_target], "the target", "choose one with --target", with_target)
        if own is None:
            return None
        chosen = Target(own["metric"], own["op"], float(own["value"]), "eval.target of the runs")
    key = f"val_{chosen.metric}"
    if not any(key in point for r in runs for point in r["learning_curve"] if isinstance(point, dict)):
        measured = sorted(
            {
                k.removeprefix("val_")
                for r in runs
                for p in r["learning_curve"]
                if isinstance(p, dict)
                for k in p
                if k.startswith("val_")
            }
        )
        raise UserError(f"target {chosen}: no learning curve has {key} (the runs measured {', '.join(measured)})")
    return chosen

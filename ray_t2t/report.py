"""The comparison report: every number comes from run records, nothing is measured again.

    ray-t2t report ray_t2t_runs/quickstart [--target 'wer <= 0.5' | --target-relative 0.95]
                                           [--confidence 0.95] [--no-plots]
    from ray_t2t.report import build_report; print(build_report(Path("ray_t2t_runs/quickstart")).summary)

Reads, under an experiment folder (<storage_path>/<run.name>):
    runs/*/record.json            training runs (ray_t2t.train.loop.finish writes them)
    sweep/*/record.json           sweep trials, when there is a sweep
    soft_targets/*/record.json    teacher inference (ray_t2t.soft_targets.inference_record)
and writes report/report.md, report/report.html (self-contained: tables and plots inline),
report/report.json (the numbers) and report/*.png.

Groups: records are grouped by `group` (a sweep sets it: method label + hyperparameters, without
the seed) or else by `label`; each figure is the mean over the group's runs with a Student-t
confidence interval (none for one run).

Time to target: the first learning-curve point whose validation metric meets the target (no
interpolation between evaluations). The target is the records' own (`eval.target`), `--target`, or
`--target-relative F`: F x the teacher's final test quality for a higher-is-better metric
(value >= F x teacher), and for a lower-is-better one value <= teacher / F (so 0.95 of a teacher's
WER 0.40 is WER <= 0.421).

Distillation is charged for its teacher: the teacher's training (its run record's cost, or what
the soft-target record carries for a teacher exported by another experiment; zero for a
pre-existing teacher) and, for students that read stored soft targets, the teacher inference. In
the same way, a run that starts from the model another run of the experiment exported (a
finetune, lora or fewshot of a pretrain run; the record's model.initialized_from) is charged that
run's training. The amortization table shows after how many students distillation is cheaper than
training each student by the cheapest normal method (whose one-off pretraining counts once).

Few-shot: when `fewshot` runs have two or more distinct k, a table (and plot) of final quality against
k per entry and mode (fewshot_by_k).
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ray_t2t.errors import UserError
from ray_t2t.storage import is_remote, location, upload

REPORT_DIR = "report"
NORMAL_METHODS = ("scratch", "pretrain", "finetune", "lora", "qlora", "partial")
# Students that read the teacher's stored soft targets, so the teacher inference is charged to them.
# (kd_logits only with teacher_source offline: online, the teacher's forward pass is in the run's own time.)
SOFT_TARGET_METHODS = ("kd_logits", "kd_sequence", "kd_multi_teacher")
# Fields of a finished training record the report reads (dotted paths).
REQUIRED_FIELDS = ("label", "method", "times.train_s", "device_seconds", "cost.total", "learning_curve",
                   "final.test", "metric.name", "model.total_params", "data.tokens_seen")


# ------------------------------------------------------------------------------------ statistics


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p for Student's t with df degrees of freedom."""
    from scipy.stats import t

    if not 0.0 < p < 1.0:
        raise ValueError(f"probability {p} is not in (0, 1)")
    return float(t.ppf(p, df))


def mean_ci(values: list[float], level: float = 0.95) -> tuple[float | None, float | None]:
    """(mean, half-width of the two-sided Student-t confidence interval at `level`); the half-width is
    None for fewer than two values, and both are None for none."""
    if not values:
        return None, None
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile((1.0 + level) / 2.0, n - 1) * sd / math.sqrt(n)


@dataclass(frozen=True)
class Stat:
    """A figure over a group's runs: mean, confidence half-width (None below two values), count."""

    mean: float | None
    half: float | None
    n: int

    @classmethod
    def of(cls, values: list[float | None], level: float) -> "Stat":
        known = [float(v) for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        mean, half = mean_ci(known, level)
        return cls(mean, half, len(known))

    def as_dict(self) -> dict:
        return {"mean": self.mean, "ci_half_width": self.half, "n": self.n}


# ------------------------------------------------------------------------------- time to target


@dataclass(frozen=True)
class Target:
    metric: str
    op: str  # "<=" or ">="
    value: float
    source: str  # where it comes from, for the report

    def met(self, value: float) -> bool:
        return value <= self.value if self.op == "<=" else value >= self.value

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.value:.4g}"


def time_to_target(curve: list[dict], metric: str, op: str, value: float) -> dict | None:
    """The first learning-curve point whose val_<metric> meets `op value` (no interpolation):
    {step, wall_s, device_s, cost, tokens}, or None when no point does."""
    target = Target(metric, op, value, "")
    for point in curve:
        reading = point.get(f"val_{metric}")
        if isinstance(reading, (int, float)) and math.isfinite(reading) and target.met(reading):
            return {key: point.get(key) for key in ("step", "wall_s", "device_s", "cost", "tokens")}
    return None


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

    from ray_t2t.config import TargetSection

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


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable run record ({err}); remove it or rerun the run that wrote it") from None


def _field(record: dict, dotted: str) -> Any:
    value: Any = record
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise KeyError(dotted)
        value = value[key]
    return value


def load_records(run_dir: Path) -> Records:
    """Every record under the experiment folder. Raises UserError naming the file for unreadable or
    incomplete records, and saying what to run when there are none."""
    run_dir = location(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"no experiment folder {run_dir}: give <storage_path>/<run.name> of an experiment")
    training = sorted(run_dir.glob("runs/*/record.json")) + sorted(run_dir.glob("sweep/*/record.json"))
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
            records.inferences.append(dict(record, _path=str(path)))
            continue
        for key in REQUIRED_FIELDS:
            try:
                _field(record, key)
            except KeyError:
                raise UserError(f"{path}: the run record has no {key}; it was written by another version of "
                                "ray_t2t or by hand: rerun that run, or move the file away") from None
        identity = (record.get("run_hash"), record.get("group") or record["label"], record.get("seed"))
        if record.get("run_hash") not in (None, "-") and identity in seen:
            records.left_out.append((str(path), f"the same run as {seen[identity]}"))
            continue
        seen[identity] = str(path)
        records.runs.append(dict(record, _path=str(path)))
    if not records.runs:
        failed = f" ({len(records.left_out)} unfinished or failed)" if records.left_out else ""
        raise UserError(f"no run records under {run_dir}{failed}: run `ray-t2t train` or `ray-t2t run` first")
    return records


def group_of(record: dict) -> str:
    return record.get("group") or record["label"]


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
        return not self.is_teacher and any(r["method"].startswith("kd_") or r["method"].startswith("sft")
                                           for r in self.records)

    @property
    def is_normal(self) -> bool:
        return not self.is_teacher and all(r["method"] in NORMAL_METHODS for r in self.records)

    @property
    def reads_soft_targets(self) -> bool:
        first = self.records[0]
        return first["method"] in SOFT_TARGET_METHODS and (first.get("params") or {}).get("teacher_source") != "online"

    @property
    def seeds(self) -> list:
        return sorted({r.get("seed") for r in self.records if r.get("seed") is not None})


def group_records(runs: list[dict]) -> list[Group]:
    """Runs by group (a sweep's `group`, else the label), in the order found, teachers last."""
    groups: dict[str, Group] = {}
    for record in runs:
        groups.setdefault(group_of(record), Group(group_of(record))).records.append(record)
    return sorted(groups.values(), key=lambda group: group.is_teacher)


def _one(values: list, what: str, hint: str) -> Any:
    distinct = list(dict.fromkeys(json.dumps(v, sort_keys=True) for v in values))
    if len(distinct) > 1:
        raise UserError(f"the run records disagree on {what} ({'; '.join(distinct)}): {hint}")
    return json.loads(distinct[0]) if distinct else None


def resolve_target(runs: list[dict], target: str | None, target_relative: float | None, metric: str,
                   higher_is_better: bool) -> Target | None:
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
                "--target instead")
        values = [r["final"]["test"].get(metric) for r in teachers]
        values = [v for v in values if isinstance(v, (int, float))]
        if not values:
            raise UserError(f"the teacher's run records have no test {metric}: give an absolute --target instead")
        chosen = relative_target(sum(values) / len(values), target_relative, metric, higher_is_better)
    else:
        own = _one([r["target"] for r in runs if r.get("target")], "the target", "choose one with --target")
        if own is None:
            return None
        chosen = Target(own["metric"], own["op"], float(own["value"]), "eval.target of the runs")
    key = f"val_{chosen.metric}"
    if not any(key in point for r in runs for point in r["learning_curve"]):
        measured = sorted({k.removeprefix("val_") for r in runs for p in r["learning_curve"] for k in p
                           if k.startswith("val_")})
        raise UserError(f"target {chosen}: no learning curve has {key} (the runs measured {', '.join(measured)})")
    return chosen


# ---------------------------------------------------------------------------------- the figures


def _inference(record: dict, key: str) -> float | None:
    return (record.get("inference") or {}).get(key)


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def figure_columns(metric: str, currency: str) -> list[tuple[str, Callable[[dict], Any]]]:
    """(header, value of one record) for the comparison table."""
    return [
        ("train s", lambda r: r["times"]["train_s"]),
        ("device-h", lambda r: r["device_seconds"] / 3600),
        ("tokens seen", lambda r: r["data"]["tokens_seen"]),
        ("train examples", lambda r: r["data"].get("train_examples")),
        ("params", lambda r: r["model"]["total_params"]),
        ("trainable", lambda r: r["model"].get("trainable_params")),
        ("size MB", lambda r: _scaled(r["model"].get("size_on_disk_bytes"), 1e-6)),
        ("inference tokens/s", lambda r: _inference(r, "tokens_per_s")),
        ("latency ms", lambda r: _scaled(_inference(r, "latency_s"), 1000)),
        (f"cost {currency}", lambda r: r["cost"]["total"]),
        (f"test {metric}", lambda r: r["final"]["test"].get(metric)),
    ]


# (header, curve-point key, scale) of the time-to-target figures
TO_TARGET = (("to target s", "wall_s", 1.0), ("to target device-h", "device_s", 1 / 3600),
             ("to target cost", "cost", 1.0))


@dataclass
class Charge:
    """What one run of a group is charged on top of its own training, one-off (storage: per month):
    a distillation student its teacher; a run that starts from another run's model that run."""

    train_s: float = 0.0
    device_s: float = 0.0
    cost: float | None = 0.0  # teacher training + teacher inference + base training
    training_cost: float | None = 0.0
    inference_cost: float | None = 0.0
    storage_month: float = 0.0
    parts: list[str] = field(default_factory=list)
    base_runs: list[str] = field(default_factory=list)  # labels of the runs charged as base training

    def add_cost(self, attribute: str | None, value: float | None) -> None:
        """Add `value` to `attribute` (a part of the cost; None: no part of its own) and to the total."""
        for name in ("cost",) if attribute is None else (attribute, "cost"):
            current = getattr(self, name)
            setattr(self, name, None if current is None or value is None else current + value)


def teacher_charge(group: Group, runs: list[dict], inferences: list[dict]) -> Charge:
    """The teacher's training (and, for students reading stored soft targets, its inference) charged
    to one student of `group`; zero for groups that are not distillation.

    The teacher trained here is the run(s) with params.model == "teacher" (the mean over them, when a
    sweep trained several). A teacher from elsewhere is charged what its soft-target record carries
    (zero when pre-existing). kd_multi_teacher uses every teacher; the other methods the first, which
    is the one trained here when there is one."""
    charge = Charge()
    if not group.is_distillation:
        return charge
    method = group.records[0]["method"]
    teacher_runs = [r for r in runs if is_teacher_run(r)]
    teacher_labels = {r["label"] for r in teacher_runs}
    label_of = lambda record: (record.get("teacher") or {}).get("label")
    if method == "kd_multi_teacher":
        used = list(inferences)
    else:
        used = [i for i in inferences if label_of(i) in teacher_labels] or list(inferences)
        if len(used) > 1:
            charge.parts.append(f"{len(used)} teachers charged (the records do not say which teacher is first)")
    if teacher_runs and (method != "kd_multi_teacher" or any(label_of(i) in teacher_labels for i in used)):
        n = len(teacher_runs)
        charge.train_s += sum(r["times"]["train_s"] for r in teacher_runs) / n
        charge.device_s += sum(r["device_seconds"] for r in teacher_runs) / n
        costs = [r["cost"]["total"] for r in teacher_runs]
        charge.add_cost("training_cost", None if None in costs else sum(costs) / n)
        charge.parts.append(f"teacher training (run {', '.join(sorted(teacher_labels))}"
                            + (f", mean of {n} runs" if n > 1 else "") + ")")
        from_records = [] if method != "kd_multi_teacher" else [i for i in used if label_of(i) not in teacher_labels]
    else:
        from_records = used
    for record in from_records:  # teachers not trained here: what their soft-target record carries
        teacher = record.get("teacher") or {}
        if teacher.get("pre_existing", True):
            charge.parts.append(f"pre-existing teacher {teacher.get('label')} (training not charged)")
        else:
            charge.device_s += teacher.get("training_device_seconds") or 0.0
            charge.add_cost("training_cost", teacher.get("training_cost"))
            charge.parts.append(f"training of teacher {teacher.get('label')} (from its soft-target record)")
    if not teacher_runs and not used:
        charge.parts.append("pre-existing teacher without a record (training not charged)")
    if group.reads_soft_targets:
        for record in used:
            times = record.get("times") or {}
            charge.train_s += times.get("wall_s") or times.get("busy_s") or 0.0
            charge.device_s += record.get("device_seconds") or 0.0
            charge.add_cost("inference_cost", (record.get("cost") or {}).get("total"))
            charge.storage_month += (record.get("cost") or {}).get("storage_per_month") or 0.0
            charge.parts.append(f"soft targets of {label_of(record)}")
        if not used:
            charge.parts.append("no soft-target record found (inference not charged)")
    elif method.startswith("kd_"):
        charge.parts.append("live teacher: its forward passes are in the student's own time")
    return charge


def base_charge(group: Group, runs: list[dict], charge: Charge) -> None:
    """Add to `charge` the training of the runs of this experiment whose exported model the group's
    runs started from (model.initialized_from = that run's model.export_path: a pretrain run, for a
    fine-tune), averaged over the group's runs; not a teacher run already charged to distillation.
    Records without initialized_from (written before it existed) are charged nothing."""
    exports = {(r.get("model") or {}).get("export_path"): r for r in runs}
    n = len(group.records)
    charged: dict[str, int] = {}
    for record in group.records:
        base = exports.get((record.get("model") or {}).get("initialized_from"))
        if base is None or base is record or (group.is_distillation and is_teacher_run(base)):
            continue
        charge.train_s += base["times"]["train_s"] / n
        charge.device_s += base["device_seconds"] / n
        cost = (base.get("cost") or {}).get("total")
        charge.add_cost(None, None if cost is None else cost / n)  # base_runs say which runs
        charged[base["label"]] = charged.get(base["label"], 0) + 1
    for label, count in charged.items():
        charge.base_runs.append(label)
        charge.parts.append(f"training of the model it starts from (run {label}"
                            + (f", {count} of {n} runs" if count < n else "") + ")")


def break_even(teacher_cost: float, student_cost: float, baseline_cost: float, baseline_once: float = 0.0) -> int | None:
    """The smallest number of students N with teacher + N x student < baseline_once + N x baseline
    (baseline_once: the normal method's own one-off cost, e.g. the pretraining a fine-tune starts
    from), or None when a distilled student is not cheaper than the baseline (distilling never pays
    off)."""
    if student_cost >= baseline_cost:
        return None
    if teacher_cost < baseline_once:
        return 1
    return math.floor((teacher_cost - baseline_once) / (baseline_cost - student_cost)) + 1


@dataclass
class GroupFigures:
    group: Group
    columns: dict[str, Stat]
    reached: int
    to_target: dict[str, Stat]  # over the runs that reached it, student alone
    to_target_charged: dict[str, Stat]  # the same, the teacher charged
    cost_charged: Stat
    charge: Charge
    curve_points: list[list[tuple[float, float]]]  # per run: (device-hours, val metric)

    @property
    def order_key(self) -> tuple:
        """Reached by every run first, then by some, then never; then by $ to target, teacher charged."""
        n = len(self.group.records)
        cost = self.to_target_charged["to target cost"].mean
        return (self.reached == 0, self.reached < n, cost if cost is not None else math.inf, self.group.name)


def compute_figures(groups: list[Group], runs: list[dict], inferences: list[dict], target: Target | None,
                    metric: str, currency: str, level: float) -> list[GroupFigures]:
    columns = figure_columns(metric, currency)
    result = []
    for group in groups:
        charge = teacher_charge(group, runs, inferences)
        base_charge(group, runs, charge)
        stats = {header: Stat.of([get(r) for r in group.records], level) for header, get in columns}
        hits = [time_to_target(r["learning_curve"], target.metric, target.op, target.value) if target else None
                for r in group.records]
        hits = [h for h in hits if h is not None]
        extra = {"wall_s": charge.train_s, "device_s": charge.device_s, "cost": charge.cost}

        def plus(value, key):
            return None if value is None or extra[key] is None else value + extra[key]

        to_target = {header: Stat.of([(h[key] * scale) if h[key] is not None else None for h in hits], level)
                     for header, key, scale in TO_TARGET}
        charged = {header: Stat.of([plus(h[key], key) * scale if plus(h[key], key) is not None else None
                                    for h in hits], level) for header, key, scale in TO_TARGET}
        cost_charged = Stat.of([plus(r["cost"]["total"], "cost") for r in group.records], level)
        curves = [[(p["device_s"] / 3600, p[f"val_{metric}"]) for p in r["learning_curve"]
                   if isinstance(p.get(f"val_{metric}"), (int, float))] for r in group.records]
        result.append(GroupFigures(group, stats, len(hits), to_target, charged, cost_charged, charge, curves))
    return result


def amortization(figures: list[GroupFigures], target: Target | None, metric: str, currency: str,
                 higher_is_better: bool = False) -> list[dict]:
    """Per distillation group: one student's cost with and without its teacher, the cheapest normal
    method on the same basis, and the break-even number of students. Normal methods count only when
    they produce a task model (a test metric: pretraining alone does not); to target, one that every
    run brought there is preferred to one that only some runs did."""
    normal = [f for f in figures if f.group.is_normal and f.columns[f"test {metric}"].mean is not None]
    rows = []
    for fig in figures:
        if not fig.group.is_distillation:
            continue
        reaching = [f for f in normal if f.reached and f.to_target["to target cost"].mean is not None]
        if target is not None and fig.reached and reaching:
            basis = "to target"
            student = fig.to_target["to target cost"].mean
            # a method every run brought to the target before one only some runs did, as in the tables
            baseline = min(reaching, key=lambda f: (f.reached < len(f.group.records),
                                                    f.to_target["to target cost"].mean))
            baseline_cost = baseline.to_target["to target cost"].mean
        else:  # the same quality: normal methods whose final test quality is at least the student's
            basis = "whole run"
            student = fig.columns[f"cost {currency}"].mean
            quality = fig.columns[f"test {metric}"].mean
            candidates = [f for f in normal if f.columns[f"cost {currency}"].mean is not None and (
                quality is None or (f.columns[f"test {metric}"].mean >= quality if higher_is_better
                                    else f.columns[f"test {metric}"].mean <= quality))]
            baseline = min(candidates, key=lambda f: f.columns[f"cost {currency}"].mean) if candidates else None
            baseline_cost = baseline.columns[f"cost {currency}"].mean if baseline else None
            if baseline is None and normal:
                basis = "whole run; no normal method as good"
        teacher_cost = fig.charge.cost
        baseline_once = baseline.charge.cost if baseline else 0.0  # its pretraining, charged once
        if None in (student, baseline_cost, teacher_cost, baseline_once):
            n_students = "unknown"
        else:
            n = break_even(teacher_cost, student, baseline_cost, baseline_once)
            n_students = "never" if n is None else n
        rows.append({
            "group": fig.group.name, "basis": basis, "student_cost": student,
            "student_quality": fig.columns[f"test {metric}"].mean,
            "teacher_training_cost": fig.charge.training_cost, "teacher_inference_cost": fig.charge.inference_cost,
            "one_student_with_teacher": None if None in (student, teacher_cost) else student + teacher_cost,
            "baseline": baseline.group.name if baseline else None, "baseline_cost": baseline_cost,
            "baseline_once": baseline_once, "baseline_charged": baseline.charge.parts if baseline else [],
            "break_even_students": n_students, "storage_per_month": fig.charge.storage_month,
            "charged": fig.charge.parts,
        })
    return rows


def fewshot_by_k(runs: list[dict], metric: str, currency: str, level: float,
                 target: Target | None = None) -> list[dict]:
    """Final quality against k: one row per fewshot entry (label), mode and k, over its runs (seeds),
    sorted by label, mode and k. Empty unless the fewshot runs have two or more distinct k."""
    shots = [r for r in runs if r["method"] == "fewshot" and isinstance((r.get("params") or {}).get("k"), int)]
    if len({r["params"]["k"] for r in shots}) < 2:
        return []
    cells: dict[tuple, list[dict]] = {}
    for r in shots:
        cells.setdefault((r["label"], r["params"].get("mode", "train"), r["params"]["k"]), []).append(r)
    rows = []
    for (label, mode, k), records in sorted(cells.items()):
        reached = sum(1 for r in records if target and time_to_target(r["learning_curve"], target.metric,
                                                                       target.op, target.value))
        rows.append({"label": label, "mode": mode, "k": k, "runs": len(records),
                     "train_examples": Stat.of([r["data"].get("train_examples") for r in records], level),
                     "test": Stat.of([r["final"]["test"].get(metric) for r in records], level),
                     "device_h": Stat.of([r["device_seconds"] / 3600 for r in records], level),
                     "cost": Stat.of([r["cost"]["total"] for r in records], level),
                     "reached": reached if target else None})
    return rows


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats: at most the cost (x) and at least as good quality (y),
    better in one. Sorted by cost."""
    def better_or_equal(a, b):
        return a >= b if higher_is_better else a <= b

    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            x2 <= x and better_or_equal(y2, y) and (x2 < x or y2 != y)
            for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


# ------------------------------------------------------------------------------ multi-task runs


def _task_names(record: dict) -> dict[str, str]:
    """A multitask record's {task name: task id} (g2p: g2p_cmudict); {} for other records."""
    info = record.get("multitask") if record["method"] == "multitask" else None
    tasks = info.get("tasks") if isinstance(info, dict) else None
    return {name: t.get("task") for name, t in tasks.items()} if isinstance(tasks, dict) else {}


def _single_task_key(record: dict, task_id: str, metric: str) -> str | None:
    """Where a single-task run of `task_id` keeps `metric` in its curve: `metric` for a run whose
    data.task is the task, `<metric>_<name>` for a multitask entry of that one task; None otherwise."""
    names = _task_names(record)
    if len(names) == 1 and list(names.values()) == [task_id]:
        return f"{metric}_{next(iter(names))}"
    if record["method"] != "multitask" and (record.get("data") or {}).get("task") == task_id:
        return metric
    return None


def _to_target_stats(records: list[dict], metric_key: Callable[[dict], str], target: dict, level: float) -> dict:
    """Time and money to `target` (read at val_<metric_key(record)>) over the records that reached it."""
    hits = [time_to_target(r["learning_curve"], metric_key(r), target["op"], target["value"]) for r in records]
    reached = [h for h in hits if h is not None]
    return {"reached": len(reached), "runs": len(records), "hits": hits,
            "s": Stat.of([h["wall_s"] for h in reached], level), "cost": Stat.of([h["cost"] for h in reached], level)}


def multitask_comparison(runs: list[dict], metric: str, level: float, target: Target | None = None) -> list[dict]:
    """Per multitask group and task: time and money to the task's target, against the single-task runs
    of that task. Single-task runs are this folder's finished runs whose record's data.task is the
    task's (teacher runs aside), and multitask entries of that one task (same data preparation,
    prefix and tokenizer settings: the closest baseline); they are measured against the multitask
    entry's target for the task, so both sides meet the same bar. Per group, the "all tasks" row: the
    multitask run reaching every task's target (its slowest task) against the fastest single-task group of each task
    run one after another (their sum). `target` (the report's --target) replaces every task's own."""
    multi = [r for r in runs if len(_task_names(r)) > 1]
    singles = [r for r in runs if len(_task_names(r)) <= 1 and not is_teacher_run(r)]
    rows = []
    for group in group_records(multi):
        tasks = group.records[0]["multitask"].get("tasks") or {}
        per_run_all = [0.0] * len(group.records)  # wall s until every task reached, per run (None: not all)
        per_run_cost = [0.0] * len(group.records)
        single_sum = {"s": 0.0, "cost": 0.0}
        for name, info in tasks.items():
            task_target = info.get("target")
            if target is not None:
                task_target = {"metric": target.metric, "op": target.op, "value": target.value}
            row = {"group": group.name, "task": name, "task_id": info.get("task"),
                   "probability": info.get("probability"), "target": None,
                   "multitask_test": Stat.of([r["final"]["test"].get(f"{metric}_{name}") for r in group.records], level),
                   "single_groups": [], "best_single": None}
            if task_target is None:
                per_run_all = [None] * len(group.records)
                single_sum = None
                rows.append(row)
                continue
            row["target"] = f"{task_target['metric']} {task_target['op']} {task_target['value']:.4g}"
            row["multitask"] = _to_target_stats(group.records, lambda r: f"{task_target['metric']}_{name}", task_target, level)
            for i, hit in enumerate(row["multitask"]["hits"]):
                if hit is None or per_run_all[i] is None:
                    per_run_all[i] = per_run_cost[i] = None
                else:
                    per_run_all[i] = max(per_run_all[i], hit["wall_s"])
                    per_run_cost[i] = max(per_run_cost[i], hit["cost"] or 0.0)
            key = lambda r: _single_task_key(r, info.get("task"), task_target["metric"])
            for single in group_records([r for r in singles if key(r) is not None]):
                stats = _to_target_stats(single.records, key, task_target, level)
                stats |= {"group": single.name, "method": single.method,
                          "test": Stat.of([r["final"]["test"].get(_single_task_key(r, info.get("task"), metric))
                                           for r in single.records], level)}
                row["single_groups"].append(stats)
            reaching = [g for g in row["single_groups"] if g["reached"] == g["runs"] and g["s"].mean is not None]
            row["best_single"] = min(reaching, key=lambda g: g["s"].mean) if reaching else None
            if single_sum is not None and row["best_single"] is not None:
                single_sum["s"] += row["best_single"]["s"].mean
                single_sum["cost"] += row["best_single"]["cost"].mean or 0.0
            else:
                single_sum = None
            rows.append(row)
        done = [(s, c) for s, c in zip(per_run_all, per_run_cost) if s is not None]
        rows.append({"group": group.name, "task": "all tasks", "all": True, "reached": len(done),
                     "runs": len(group.records), "s": Stat.of([s for s, _ in done], level),
                     "cost": Stat.of([c for _, c in done], level), "single_sum": single_sum})
    return rows


def _multitask_json(rows: list[dict]) -> list[dict]:
    def plain(value):
        if isinstance(value, Stat):
            return value.as_dict()
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if k != "hits"}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return [plain(row) for row in rows]


# ------------------------------------------------------------------------------------- rendering


def fmt(value: Any) -> str:
    """A number as the report prints it: 4 significant digits, thousands separators from 10,000."""
    if value is None:
        return "—"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        return "—"
    if abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def cell(stat: Stat) -> str:
    """mean ± confidence half-width; the mean alone for one run (or when every run agrees)."""
    if stat.mean is None:
        return "—"
    if stat.half is None or stat.half == 0:
        return fmt(stat.mean)
    half = f"{stat.half:,.0f}" if stat.half >= 100 else f"{stat.half:.2g}"
    return f"{fmt(stat.mean)} ± {half}"


def _atomic_write(path: Path, data: bytes | str) -> None:
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    if isinstance(data, str):
        staging.write_text(data)
    else:
        staging.write_bytes(data)
    staging.replace(path)


class Document:
    """Blocks rendered as Markdown and as HTML from one source."""

    def __init__(self) -> None:
        self.blocks: list[tuple] = []

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", level, text))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", items))

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        self.blocks.append(("table", headers, rows))

    def image(self, path: Path, alt: str) -> None:
        self.blocks.append(("image", path, alt))

    def markdown(self) -> str:
        out = []
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"{'#' * block[1]} {block[2]}")
            elif kind == "paragraph":
                out.append(block[1])
            elif kind == "bullets":
                out.append("\n".join(f"- {item}" for item in block[1]))
            elif kind == "table":
                headers, rows = block[1], block[2]
                escape = lambda text: str(text).replace("|", "\\|")
                lines = ["| " + " | ".join(map(escape, headers)) + " |", "|" + " --- |" * len(headers)]
                lines += ["| " + " | ".join(map(escape, row)) + " |" for row in rows]
                out.append("\n".join(lines))
            elif kind == "image":
                out.append(f"![{block[2]}]({block[1].name})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>",
               "<style>body{font-family:sans-serif;max-width:90rem;margin:2rem auto;padding:0 1rem}"
               "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #bbb;padding:.25rem .5rem;"
               "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
               "img{max-width:100%}code{background:#f4f4f4}</style></head><body>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "heading":
                out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
            elif kind == "paragraph":
                out.append(f"<p>{_inline(block[1])}</p>")
            elif kind == "bullets":
                out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1]) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block[1])
                body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                               for row in block[2])
                out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "image":
                data = base64.b64encode(block[1].read_bytes()).decode()
                out.append(f"<p><img alt=\"{html.escape(block[2])}\" src=\"data:image/png;base64,{data}\"></p>")
        out.append("</body></html>\n")
        return "\n".join(out)


def _inline(text: str) -> str:
    """Markdown `code` and **bold** as HTML, the rest escaped."""
    parts = html.escape(text).split("`")
    text = "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
    parts = text.split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


# ------------------------------------------------------------------------------------------ plots


def _charged_device_hours(figures: GroupFigures) -> float | None:
    alone = figures.columns["device-h"].mean
    return None if alone is None else alone + figures.charge.device_s / 3600


def write_plots(folder: Path, figures: list[GroupFigures], metric: str, higher_is_better: bool,
                currency: str, target: Target | None = None) -> list[tuple[Path, str]]:
    """Pareto plots of final quality against device-hours and against money (distillation charged for
    its teacher, the student alone as an open marker; the front is over the students, the teacher a
    grey reference point), and every run's learning curve with the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {f.group.name: colors[i % len(colors)] for i, f in enumerate(figures)}
    written = []

    def save(fig, name: str, alt: str) -> None:
        path = folder / name
        staging = folder / f".{name}.{os.getpid()}.png"
        fig.savefig(staging, dpi=110, bbox_inches="tight")
        plt.close(fig)
        staging.replace(path)
        written.append((path, alt))

    quality = f"test {metric}"
    for name, axis, charged_of, alone_of in (
        ("pareto_device_hours.png", "device-hours",
         _charged_device_hours,
         lambda f: f.columns["device-h"].mean),
        ("pareto_cost.png", currency,
         lambda f: f.cost_charged.mean, lambda f: f.columns[f"cost {currency}"].mean),
    ):
        shown = [f for f in figures if f.columns[quality].mean is not None and charged_of(f) is not None]
        if not shown:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        points = [(charged_of(f), f.columns[quality].mean) for f in shown]
        for f, (x, y) in zip(shown, points):
            if f.group.is_teacher:
                ax.scatter([x], [y], color="grey", marker="x", zorder=3)
            else:
                ax.scatter([x], [y], color=color_of[f.group.name], zorder=3)
            shown_as = f.group.name + (" (teacher)" if f.group.is_teacher and "teacher" not in f.group.name else "")
            ax.annotate(shown_as, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            alone = alone_of(f)
            if f.group.is_distillation and alone is not None and alone != x:
                ax.scatter([alone], [y], facecolors="none", edgecolors=color_of[f.group.name], zorder=3)
                ax.plot([alone, x], [y, y], color=color_of[f.group.name], linewidth=0.8, linestyle=":")
        students = [i for i, f in enumerate(shown) if not f.group.is_teacher]
        front = [students[i] for i in pareto_front([points[i] for i in students], higher_is_better)]
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], color="black", linewidth=1.5,
                zorder=2, label="Pareto front (students)")
        ax.set_xlabel(f"{axis} of one run (teacher / base model's training charged; open: the run alone)")
        ax.set_ylabel(f"final test {metric} ({'higher' if higher_is_better else 'lower'} is better)")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, name, f"final test {metric} against {axis}, Pareto front")

    if any(points for f in figures for points in f.curve_points):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for f in figures:
            for i, points in enumerate(f.curve_points):
                if points:
                    ax.plot([p[0] for p in points], [p[1] for p in points], color=color_of[f.group.name],
                            marker=".", linewidth=1, label=f.group.name if i == 0 else None)
        if target is not None and target.metric == metric:
            ax.axhline(target.value, color="black", linestyle="--", linewidth=1, label=f"target {target}")
        ax.set_xlabel("device-hours of training (student alone)")
        ax.set_ylabel(f"validation {metric}")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "learning_curves.png", f"validation {metric} against device-hours, every run")
    return written


# ------------------------------------------------------------------------------------- the report


@dataclass
class Report:
    summary: str  # a few lines for the terminal
    files: list[Path]
    data: dict  # what report.json holds


def _task_of(figures: GroupFigures) -> str | None:
    return (figures.group.records[0].get("data") or {}).get("task")


def _winner(candidates: list[GroupFigures], value: Callable[[GroupFigures], float | None], lowest: bool = True):
    known = [(value(f), f) for f in candidates if value(f) is not None]
    if not known:
        return None
    return (min if lowest else max)(known, key=lambda pair: pair[0])


def build_report(run_dir, target: str | None = None, target_relative: float | None = None,
                 confidence: float = 0.95, plots: bool = True, formats: tuple[str, ...] = ("md", "html")) -> Report:
    """Read the experiment's records and write its report under run_dir/report/. `run_dir` is a
    folder or an object-store URI (the report is then written locally and uploaded). Raises
    UserError for missing or unreadable records, a bad target or confidence level."""
    if not 0 < confidence < 1:
        raise UserError(f"--confidence must be between 0 and 1, got {confidence:g}")
    try:
        run_dir = location(run_dir)
    except ValueError as err:
        raise UserError(str(err)) from None
    destination = run_dir / REPORT_DIR
    options = dict(target=target, target_relative=target_relative, confidence=confidence, plots=plots, formats=formats)
    if not is_remote(destination):
        return _build_report(run_dir, destination, **options)
    with tempfile.TemporaryDirectory(prefix="ray_t2t_report_") as work:
        report = _build_report(run_dir, Path(work), **options)
        upload(Path(work), destination)
    return Report(report.summary.replace(work, str(destination)), [destination / p.name for p in report.files],
                  report.data)


def _build_report(run_dir, folder: Path, target: str | None, target_relative: float | None, confidence: float,
                  plots: bool, formats: tuple[str, ...]) -> Report:
    """build_report, writing the report's files into the local `folder`."""
    records = load_records(run_dir)
    runs = records.runs
    metric = _one([r["metric"]["name"] for r in runs], "eval.metric", "a report compares one metric")
    higher = bool(_one([r["metric"].get("higher_is_better") for r in runs], "the metric's direction",
                       "a report compares one metric"))
    currency = _one([r["cost"].get("currency") for r in runs], "the currency", "price every run in one currency")
    chosen = resolve_target(runs, target, target_relative, metric, higher)
    groups = group_records(runs)
    figures = compute_figures(groups, runs, records.inferences, chosen, metric, currency, confidence)
    amortized = amortization(figures, chosen, metric, currency, higher)
    shots = fewshot_by_k(runs, metric, currency, confidence, chosen)
    students = [f for f in figures if not f.group.is_teacher]

    folder.mkdir(parents=True, exist_ok=True)
    images = write_plots(folder, figures, metric, higher, currency, chosen) if plots else []
    if plots:
        images += fewshot_plot(folder, shots, metric, higher)

    doc = Document()
    level = f"{confidence:.0%}"
    doc.heading(f"ray_t2t report: {run_dir.name}", 1)
    doc.paragraph(
        f"{len(runs)} run records in {len(groups)} groups, {len(records.inferences)} teacher-inference records, "
        f"from `{run_dir}`. Quality: test `{metric}` ({'higher' if higher else 'lower'} is better). "
        f"Each figure is the mean over a group's runs, ± the half-width of its {level} Student-t confidence "
        "interval when the group has two or more runs (a single figure: one run, or every run agrees).")
    doc.paragraph(f"Target: **{chosen}** ({chosen.source})." if chosen else
                  "Target: none (the runs have no `eval.target`; give `--target` or `--target-relative`).")

    doc.heading("Comparison")
    headers = ["group", "method", "runs"] + [h for h, _ in figure_columns(metric, currency)]
    headers += ["reached", "to target s", "to target device-h", f"to target {currency}"]
    rows = []
    for f in figures:
        n = len(f.group.records)
        rows.append([f.group.name, f.group.method + (" (teacher)" if f.group.is_teacher else ""), str(n)]
                    + [cell(f.columns[h]) for h, _ in figure_columns(metric, currency)]
                    + [f"{f.reached}/{n}" if chosen else "—"]
                    + [cell(f.to_target[h]) for h, _, _ in TO_TARGET])
    doc.table(headers, rows)
    doc.paragraph("train s: optimizer steps only (evaluation and checkpoints are timed apart); device-h: "
                  "train s × devices; tokens seen: source + target tokens trained on; size: the exported "
                  "model on disk; inference: greedy decoding of the final model (tokens/s at the eval batch "
                  "size; latency of one example alone); to target: the first validation point meeting the "
                  "target, over the runs that reached it, the student's own training only.")

    if shots:
        doc.heading("Few-shot: quality against k")
        doc.table(["fewshot entry", "mode", "k", "runs", "train examples", f"test {metric}", "device-h",
                   currency, "reached"],
                  [[row["label"], row["mode"], str(row["k"]), str(row["runs"]), cell(row["train_examples"]),
                    cell(row["test"]), cell(row["device_h"]), cell(row["cost"]),
                    f"{row['reached']}/{row['runs']}" if chosen else "—"] for row in shots])
        doc.paragraph("Each k over its runs (seeds: each seed chooses its own k training examples). mode train: "
                      "fine-tuned on the k examples, cost = training; in_context: k demonstrations in every prompt, "
                      "no training, cost = the validation and test inference.")

    if chosen:
        doc.heading("Time to target")
        doc.paragraph("Distillation charged for its teacher (training, and the soft targets for students that "
                      "read them: see Teacher amortization); a run that starts from another run's model (a "
                      "fine-tune of a pretrain run) charged for that run's training. Sorted by money to target; "
                      "groups whose every run reached it first, then those some runs reached, then never reached.")
        charged = [f for f in students if f.charge.base_runs]
        if charged:
            doc.bullets([f"{f.group.name}: {'; '.join(f.charge.parts)}" for f in charged])
        rows = []
        for f in sorted(students, key=lambda f: f.order_key) + [f for f in figures if f.group.is_teacher]:
            n = len(f.group.records)
            rows.append([f.group.name, f.group.method + (" (teacher)" if f.group.is_teacher else ""),
                         f"{f.reached}/{n}"] + [cell(f.to_target_charged[h]) for h, _, _ in TO_TARGET]
                        + [cell(f.to_target[h]) for h, _, _ in TO_TARGET] + [cell(f.columns[f"test {metric}"])])
        doc.table(["group", "method", "reached", "s", "device-h", currency, "student alone s",
                   "student alone device-h", f"student alone {currency}", f"test {metric}"], rows)

    doc.heading("Teacher amortization")
    if amortized:
        doc.paragraph(
            "Distilling N students costs teacher + N × student; training each by the cheapest normal method "
            "costs its one-off (the pretraining it starts from, if any) + N × baseline. Break-even: the "
            "smallest N at which distilling is cheaper (never: the distilled student alone costs at least "
            "the baseline). Basis: money to target when the student "
            "and a normal method reach it, else the whole run's cost against normal methods whose final "
            "test quality is at least the student's. Storage of soft targets is per month, "
            "not in the one-off cost.")
        doc.table(["group", "basis", f"student {currency}", f"teacher training {currency}",
                   f"soft targets {currency}", f"one student with teacher {currency}", "cheapest normal method",
                   f"its {currency}", f"its one-off {currency}", "break-even students", f"storage {currency}/month"],
                  [[row["group"], row["basis"], fmt(row["student_cost"]), fmt(row["teacher_training_cost"]),
                    fmt(row["teacher_inference_cost"]), fmt(row["one_student_with_teacher"]),
                    row["baseline"] or "none", fmt(row["baseline_cost"]), fmt(row["baseline_once"]),
                    str(row["break_even_students"]), fmt(row["storage_per_month"])] for row in amortized])
        doc.bullets([f"{row['group']}: {'; '.join(row['charged'])}" for row in amortized])
    else:
        doc.paragraph("No distillation runs (methods kd_* or sft).")

    multitask = multitask_comparison(runs, metric, confidence, chosen if target is not None else None)
    if multitask:
        doc.heading("Multi-task against single-task runs")
        doc.paragraph(
            "Each task of a `multitask` run against this folder's single-task runs of that task (runs whose "
            "data.task is the task, and `multitask` entries of that one task), all measured against the multitask entry's target for the task on the "
            "task's own validation examples (`val_<metric>_<task>` in the multitask curve; `--target` replaces "
            "every task's own). Single task: the "
            "fastest group whose every run reached the target, and how many groups were compared. All tasks: "
            "the multitask run until its slowest task reached its target, against the fastest single-task "
            "groups trained one after another (the sum).")
        table = []
        for row in multitask:
            if row.get("all"):
                single = row["single_sum"]
                ratio = (row["s"].mean / single["s"]) if single and single["s"] and row["s"].mean is not None else None
                table.append([row["group"], "**all tasks**", "—", "—", f"{row['reached']}/{row['runs']}",
                              cell(row["s"]), cell(row["cost"]), "—",
                              "fastest per task" if single else "—", "—", fmt(single and single["s"]),
                              fmt(single and single["cost"]), "—", fmt(ratio)])
                continue
            mt, best = row.get("multitask"), row["best_single"]
            ratio = (mt["s"].mean / best["s"].mean) if mt and best and mt["s"].mean is not None else None
            compared = f" (of {len(row['single_groups'])})" if len(row["single_groups"]) > 1 else ""
            table.append([row["group"], f"{row['task']} ({row['task_id']})", fmt(row["probability"]),
                          row["target"] or "none", f"{mt['reached']}/{mt['runs']}" if mt else "—",
                          cell(mt["s"]) if mt else "—", cell(mt["cost"]) if mt else "—", cell(row["multitask_test"]),
                          (best["group"] + compared) if best else
                          ("none reached" if row["single_groups"] else "no single-task run"),
                          f"{best['reached']}/{best['runs']}" if best else "—", cell(best["s"]) if best else "—",
                          cell(best["cost"]) if best else "—", cell(best["test"]) if best else "—", fmt(ratio)])
        doc.table(["multitask group", "task", "p (mixture)", "target", "reached", "to target s", f"to target {currency}",
                   f"test {metric}", "single task", "reached", "to target s", f"to target {currency}",
                   f"test {metric}", "time ratio multi/single"], table)

    if records.inferences:
        doc.heading("Teacher inference")
        doc.table(["soft targets", "teacher", "examples", "tokens", "device-h", currency, "tokens/s",
                   "storage MB", f"{currency}/month"],
                  [[i["label"], (i.get("teacher") or {}).get("label", "?")
                    + (" (pre-existing)" if (i.get("teacher") or {}).get("pre_existing") else ""),
                    fmt((i.get("data") or {}).get("examples")), fmt((i.get("data") or {}).get("tokens")),
                    fmt((i.get("device_seconds") or 0) / 3600), fmt((i.get("cost") or {}).get("total")),
                    fmt(i.get("tokens_per_s") or i.get("tokens_per_s_per_replica")),
                    fmt((i.get("storage") or {}).get("bytes", 0) / 1e6),
                    fmt((i.get("cost") or {}).get("storage_per_month"))] for i in records.inferences])

    if images:
        doc.heading("Plots")
        for path, alt in images:
            doc.image(path, alt)

    doc.heading("Hardware, prices and configs behind the numbers")
    hardware_rows = []
    for f in figures:
        seen = dict.fromkeys(
            (json.dumps({k: (r.get("hardware") or {}).get(k) for k in ("workers", "device_type", "devices_per_worker",
                                                                   "host_cpu")}),
             r["cost"].get("price_per_device_hour"), r.get("precision"), r.get("config_hash"))
            for r in f.group.records)
        for hardware, price, precision, config in seen:
            hw = json.loads(hardware)
            devices = f"{hw['workers']} × {fmt(hw['devices_per_worker'])} {hw['device_type']}"
            hardware_rows.append([f.group.name, devices,
                                  hw.get("host_cpu") or "—", precision or "—", fmt(price), config or "—",
                                  ", ".join(str(s) for s in f.group.seeds) or "—"])
    for i in records.inferences:
        hw = i.get("hardware") or {}
        hardware_rows.append([i["label"], f"{hw.get('workers')} × {fmt(hw.get('devices_per_worker'))} "
                              f"{hw.get('device_type')}", hw.get("host_cpu") or "—", "—",
                              fmt((i.get("cost") or {}).get("price_per_device_hour")), "—", "—"])
    doc.table(["group", "workers × devices", "host CPU", "precision", f"{currency} per device-hour", "config hash",
               "seeds"],
              hardware_rows)
    doc.paragraph("Prices are those recorded with each run (the config's `cost` table at the time). A run "
                  "that starts from another run's model is charged that run's training when its record says "
                  "so (model.initialized_from; records from before ray_t2t wrote it are charged nothing).")
    if records.left_out:
        doc.heading("Left out")
        doc.bullets([f"`{path}`: {why}" for path, why in records.left_out])

    # the summary
    lines = [f"report: {len(groups)} groups from {len(runs)} run records"
             + (f", {len(records.inferences)} teacher-inference record(s)" if records.inferences else "")
             + (f"; target {chosen} ({chosen.source})" if chosen else "; no target")]
    winners: dict[str, Any] = {}
    reaching = [f for f in students if f.reached]
    if chosen:
        for key, header, unit in (("time_to_target", "to target s", "s"),
                                  ("cost_to_target", "to target cost", currency)):
            best = min(reaching, key=lambda f: (f.order_key[1], f.to_target_charged[header].mean
                                                if f.to_target_charged[header].mean is not None else math.inf),
                       default=None)
            winners[key] = best.group.name if best else None
            label = "fastest to target" if key == "time_to_target" else "cheapest to target"
            if best:
                value = best.to_target_charged[header].mean
                note = "" if best.reached == len(best.group.records) else \
                    f", reached by {best.reached}/{len(best.group.records)} runs"
                lines.append(f"  {label:<20}{best.group.name}: {fmt(value)} {unit}"
                             + (" (teacher charged)" if best.group.is_distillation else "")
                             + (f" (training of {', '.join(best.charge.base_runs)} charged)" if best.charge.base_runs
                                else "") + note)
            else:
                lines.append(f"  {label:<20}no student run reached {chosen}")
    # test figures of different tasks are not comparable: one winner per task when the runs mix tasks
    tasks = list(dict.fromkeys(_task_of(f) for f in students))
    winners["final_quality_by_task"] = {}
    for task in tasks:
        quality = _winner([f for f in students if _task_of(f) == task], lambda f: f.columns[f"test {metric}"].mean,
                          lowest=not higher)
        winners["final_quality_by_task"][task] = quality[1].group.name if quality else None
        winners.setdefault("final_quality", quality[1].group.name if quality else None)
        if quality:
            lines.append(f"  {'best final quality':<20}{quality[1].group.name}: test {metric} {fmt(quality[0])}"
                         + (f" (task {task})" if len(tasks) > 1 else ""))
    for row in amortized:
        pays = row["break_even_students"]
        when = f"from {pays} students on" if isinstance(pays, int) else pays
        teacher = (row["teacher_training_cost"] or 0) + (row["teacher_inference_cost"] or 0)
        if row["baseline"] is None and row["basis"].endswith("no normal method as good"):
            better = "or higher" if higher else "or lower"
            lines.append(f"  {'teacher pays off':<20}{row['group']}: no normal method here ended at test {metric} "
                         f"{fmt(row['student_quality'])} {better}: no cheaper way to that quality in these runs")
            continue
        if row["baseline"] is None:
            lines.append(f"  {'teacher pays off':<20}{row['group']}: unknown (no normal method with a test {metric} "
                         "to compare with)")
            continue
        once = f" + {fmt(row['baseline_once'])} once" if row["baseline_once"] else ""
        lines.append(f"  {'teacher pays off':<20}{row['group']}: {when} (student {fmt(row['student_cost'])} + "
                     f"teacher {fmt(teacher)} {currency} once, vs {row['baseline']} {fmt(row['baseline_cost'])} "
                     f"{currency} each{once}; cost {row['basis']})")
    for row in multitask:
        if row.get("all") and row["s"].mean is not None:
            single = row["single_sum"]
            lines.append(f"  {'multitask':<20}{row['group']}: every task's target after {fmt(row['s'].mean)} s"
                         + (f", single-task runs {fmt(single['s'])} s one after another" if single else
                            " (not every task has a single-task run that reached it)"))
    written = []
    for kind in formats:
        path = folder / f"report.{kind}"
        _atomic_write(path, doc.markdown() if kind == "md" else doc.html(f"ray_t2t report: {run_dir.name}"))
        written.append(path)
    data = {
        "experiment": run_dir.name, "metric": metric, "higher_is_better": higher, "currency": currency,
        "confidence": confidence,
        "target": None if chosen is None else {"metric": chosen.metric, "op": chosen.op, "value": chosen.value,
                                               "source": chosen.source},
        "groups": [{"group": f.group.name, "method": f.group.method, "teacher": f.group.is_teacher,
                    "runs": [r["_path"] for r in f.group.records], "seeds": f.group.seeds,
                    "figures": {h: s.as_dict() for h, s in f.columns.items()}, "reached": f.reached,
                    "to_target": {h: s.as_dict() for h, s in f.to_target.items()},
                    "to_target_teacher_charged": {h: s.as_dict() for h, s in f.to_target_charged.items()},
                    "teacher_charge": {"train_s": f.charge.train_s, "device_s": f.charge.device_s,
                                       "cost": f.charge.cost, "parts": f.charge.parts}} for f in figures],
        "amortization": amortized, "winners": winners, "left_out": records.left_out,
        "fewshot_by_k": [{**row, **{key: row[key].as_dict() for key in ("train_examples", "test", "device_h", "cost")}}
                         for row in shots],
        "multitask": _multitask_json(multitask),
    }
    json_path = folder / "report.json"
    _atomic_write(json_path, json.dumps(data, indent=1, default=str))
    files = written + [json_path] + [path for path, _ in images]
    lines.append(f"  {'report':<20}{', '.join(str(p) for p in written) or json_path}")
    return Report("\n".join(lines), files, data)


def fewshot_plot(folder: Path, rows: list[dict], metric: str, higher_is_better: bool) -> list[tuple[Path, str]]:
    """Final test quality against k (log scale), one line per fewshot entry and mode, with the
    confidence intervals over seeds as error bars; nothing without rows."""
    if not rows:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for line in dict.fromkeys((row["label"], row["mode"]) for row in rows):
        points = [row for row in rows if (row["label"], row["mode"]) == line and row["test"].mean is not None]
        if points:
            ax.errorbar([p["k"] for p in points], [p["test"].mean for p in points],
                        yerr=[p["test"].half or 0 for p in points], marker="o", capsize=3, label=f"{line[0]} ({line[1]})")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (training examples)")
    ax.set_ylabel(f"final test {metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.legend(loc="best", fontsize=8)
    ax.grid(alpha=0.3)
    path = folder / "fewshot_quality_vs_k.png"
    staging = folder / f".fewshot_quality_vs_k.png.{os.getpid()}.png"
    fig.savefig(staging, dpi=110, bbox_inches="tight")
    plt.close(fig)
    staging.replace(path)
    return [(path, f"final test {metric} against k, fewshot")]

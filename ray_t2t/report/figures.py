"""The figures of each group: means with intervals over its seeds, time to target (censored), and what
a run is charged on top of its own training (its teacher, the model it starts from).

Distillation is charged for its teacher: the teacher's training (its run record's cost, or what the
soft-target record carries for a teacher exported by another experiment; zero for a pre-existing
teacher) and, for students that read stored soft targets, the teacher inference. In the same way, a
run that starts from the model another run of the experiment exported (a finetune, lora or fewshot
of a pretrain run; the record's model.initialized_from) is charged that run's training.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ray_t2t.report.records import (
    Group,
    Target,
    is_teacher_run,
    method_of,
    teacher_use,
    time_to_target,
)
from ray_t2t.stats import Crossings, Stat


def _scaled(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _per_step(record: dict) -> float | None:
    done = (record.get("steps") or {}).get("done")
    return record["times"]["train_s"] / done if done else None


def figure_columns(metric: str, currency: str) -> list[tuple[str, Callable[[dict], Any]]]:
    """(header, value of one record) for the comparison table."""
    return [
        ("train s", lambda r: r["times"]["train_s"]),
        ("s/step", _per_step),
        ("device-h", lambda r: r["device_seconds"] / 3600),
        ("tokens seen", lambda r: r["data"]["tokens_seen"]),
        ("train examples", lambda r: r["data"].get("train_examples")),
        ("params", lambda r: r["model"]["total_params"]),
        ("training-only params", lambda r: r["model"].get("training_only_params")),
        ("trainable", lambda r: r["model"].get("trainable_params")),
        ("size MB", lambda r: _scaled(r["model"].get("size_on_disk_bytes"), 1e-6)),
        (f"cost {currency}", lambda r: r["cost"]["total"]),
        (f"test {metric}", lambda r: r["final"]["test"].get(metric)),
    ]


# (header, curve-point key, scale) of the time-to-target figures
TO_TARGET = (
    ("to target s", "wall_s", 1.0),
    ("to target device-h", "device_s", 1 / 3600),
    ("to target cost", "cost", 1.0),
)


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

    def extra(self, key: str) -> float | None:
        """The charge in the units of a curve key (wall_s, device_s, cost)."""
        return {"wall_s": self.train_s, "device_s": self.device_s, "cost": self.cost}[key]


def teacher_charge(group: Group, runs: list[dict], inferences: list[dict]) -> Charge:
    """The teacher's training (and, for students reading stored soft targets, its inference) charged
    to one student of `group`; zero for groups that are not distillation.

    The teacher trained here is the run(s) with params.model == "teacher" (the mean over them, when a
    sweep trained several). A teacher from elsewhere is charged what its soft-target record carries
    (zero when pre-existing). A method with all_teachers (kd_multi_teacher) uses every teacher; the others
    the first, which is the one trained here when there is one."""
    charge = Charge()
    if not group.is_distillation:
        return charge
    method = method_of(group.records[0])
    all_teachers = bool(method and method.all_teachers)
    teacher_runs = [r for r in runs if is_teacher_run(r)]
    teacher_labels = {r["label"] for r in teacher_runs}
    label_of = lambda record: (record.get("teacher") or {}).get("label")
    if all_teachers:
        used = list(inferences)
    else:
        used = [i for i in inferences if label_of(i) in teacher_labels] or list(inferences)
        if len(used) > 1:
            charge.parts.append(f"{len(used)} teachers charged (the records do not say which teacher is first)")
    if teacher_runs and (not all_teachers or any(label_of(i) in teacher_labels for i in used)):
        n = len(teacher_runs)
        charge.train_s += sum(r["times"]["train_s"] for r in teacher_runs) / n
        charge.device_s += sum(r["device_seconds"] for r in teacher_runs) / n
        costs = [r["cost"]["total"] for r in teacher_runs]
        charge.add_cost("training_cost", None if None in costs else sum(costs) / n)
        charge.parts.append(
            f"teacher training (run {', '.join(sorted(teacher_labels))}"
            + (f", mean of {n} runs" if n > 1 else "")
            + ")"
        )
        from_records = [] if not all_teachers else [i for i in used if label_of(i) not in teacher_labels]
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
    elif teacher_use(group.records[0]) == "live":
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
        charge.parts.append(
            f"training of the model it starts from (run {label}" + (f", {count} of {n} runs" if count < n else "") + ")"
        )


@dataclass
class GroupFigures:
    group: Group
    columns: dict[str, Stat]
    to_target: dict[str, Crossings]  # the student's own training; runs that never reached it censored
    to_target_charged: dict[str, Crossings]  # the same, the teacher (or base model) charged
    cost_charged: Stat
    charge: Charge
    curve_points: list[list[tuple[float, float]]]  # per run: (device-hours, val metric)
    speed: dict | None = None  # the exported model's inference-speed record (ray_t2t.inference)

    @property
    def runs(self) -> int:
        return len(self.group.records)

    def reached_text(self) -> str:
        """'2/3', or '—' for a group that never measured the target's metric (pretraining)."""
        crossings = self.to_target["to target s"]
        if crossings.reached == 0 and all(b == float("inf") for b in crossings.budgets):
            return "—"
        return f"{crossings.reached}/{crossings.runs}"

    @property
    def reached(self) -> int:
        return self.to_target["to target s"].reached

    @property
    def order_key(self) -> tuple:
        """Reached by every run first, then by a majority, then by fewer; then by $ to target, charged."""
        crossings = self.to_target_charged["to target cost"]
        if crossings.all_reached:
            rank, value = 0, crossings.stat.mean
        elif crossings.majority:
            rank, value = 1, crossings.median
        else:
            rank, value = 2 + (crossings.reached == 0), None
        return (rank, value if value is not None else float("inf"), self.group.name)


def _budget(record: dict, key: str) -> float | None:
    """What a run spent on its own training, in the units of a curve key: its last curve point's."""
    points = [p for p in record["learning_curve"] if isinstance(p, dict) and isinstance(p.get(key), (int, float))]
    return points[-1][key] if points else None


def compute_figures(
    groups: list[Group],
    runs: list[dict],
    inferences: list[dict],
    target: Target | None,
    metric: str,
    currency: str,
    level: float,
    speeds: dict[str, dict] | None = None,
) -> list[GroupFigures]:
    columns = figure_columns(metric, currency)
    speeds = speeds or {}
    result = []
    for group in groups:
        charge = teacher_charge(group, runs, inferences)
        base_charge(group, runs, charge)
        stats = {header: Stat.of([get(r) for r in group.records], level) for header, get in columns}
        hits = [
            time_to_target(r["learning_curve"], target.metric, target.op, target.value) if target else None
            for r in group.records
        ]
        # a run that never measured the target's metric (pretraining) has no crossing to wait for
        measured = [
            target is not None and any(isinstance(p, dict) and f"val_{target.metric}" in p for p in r["learning_curve"])
            for r in group.records
        ]
        alone, charged = {}, {}
        for header, key, scale in TO_TARGET:
            extra = charge.extra(key)
            values = [None if hit is None or hit.get(key) is None else hit[key] * scale for hit in hits]
            budgets = [
                None if _budget(r, key) is None or not known else _budget(r, key) * scale
                for r, known in zip(group.records, measured)
            ]
            alone[header] = Crossings.of(values, budgets, level)
            shift = None if extra is None else extra * scale
            charged[header] = Crossings.of(
                [None if v is None or shift is None else v + shift for v in values],
                [None if b is None or shift is None else b + shift for b in budgets],
                level,
            )
        cost_charged = Stat.of(
            [
                None if r["cost"]["total"] is None or charge.cost is None else r["cost"]["total"] + charge.cost
                for r in group.records
            ],
            level,
        )
        curves = [
            [
                (p["device_s"] / 3600, p[f"val_{metric}"])
                for p in r["learning_curve"]
                if isinstance(p.get(f"val_{metric}"), (int, float))
            ]
            for r in group.records
        ]
        speed = speeds.get(str((group.records[0].get("model") or {}).get("architecture_key")))
        result.append(GroupFigures(group, stats, alone, charged, cost_charged, charge, curves, speed))
    return result


def speed_at(figures: GroupFigures, batch: str) -> dict | None:
    """The inference-speed result at batch size 1 ("one") or the largest measured ("batch")."""
    results = (figures.speed or {}).get("results") or []
    if not results:
        return None
    return results[0] if batch == "one" else results[-1]

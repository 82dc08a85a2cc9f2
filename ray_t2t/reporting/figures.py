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
from dataclasses import dataclass
from typing import Any

from ray_t2t.reporting.charges import Charge, base_charge, teacher_charge
from ray_t2t.reporting.records import (
    Group,
    Target,
    time_to_target,
)
from ray_t2t.reporting.stats import Crossings, Stat


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
                if isinstance(p.get(f"val_{metric}"), (int, float)) and isinstance(p.get("device_s"), (int, float))
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

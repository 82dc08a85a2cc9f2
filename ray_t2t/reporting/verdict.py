"""The verdict: which method reaches the target soonest and cheapest, and after how many students a
teacher pays for itself, stated only as far as the runs support it.

Methods are compared within a size class: the groups whose exported models share family,
architecture and parameter count (the student every method is asked to produce). A run that exports
another model (the teacher, a differently shaped student) is shown in its own class and never ranked
against the students. Within a class, ray_t2t.reporting.stats decides: a method is named fastest, cheapest or
best only when Welch's t-test separates it from every other; break-even N comes with its interval.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ray_t2t.reporting.figures import GroupFigures
from ray_t2t.reporting.records import Target
from ray_t2t.reporting.render import cell, crossing_cell, fmt
from ray_t2t.reporting.stats import BreakEven, Stat, Verdict, best_of, break_even_interval


@dataclass
class SizeClass:
    """Groups of one task whose exported models are alike: (task, family, architecture, parameters)."""

    key: tuple
    figures: list[GroupFigures]
    students: bool  # the configured student's class (or, without one, the largest)

    @property
    def description(self) -> str:
        task, family, architecture, params = self.key
        kind = (family or "").replace("_", "-")
        return f"{architecture} {kind} models of {params / 1e6:.2f}M parameters on {task}".replace("  ", " ")


def size_classes(figures: list[GroupFigures], metric: str) -> list[SizeClass]:
    """The classes of the groups that produce a task model (a test metric; teachers aside), the
    configured student's first, then by number of groups."""
    classes: dict[tuple, list[GroupFigures]] = {}
    for f in figures:
        if f.group.is_teacher or f.columns[f"test {metric}"].mean is None:
            continue
        classes.setdefault(f.group.size_class, []).append(f)
    ordered = sorted(
        classes.items(), key=lambda item: (not any(f.group.trains_the_student for f in item[1]), -len(item[1]))
    )
    return [SizeClass(key, members, i == 0) for i, (key, members) in enumerate(ordered)]


@dataclass
class ClassVerdict:
    size_class: SizeClass
    fastest: Verdict | None = None
    cheapest: Verdict | None = None
    best: Verdict | None = None
    best_skipped: str | None = None  # why final quality is not compared
    amortization: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "size_class": self.size_class.description,
            "groups": [f.group.name for f in self.size_class.figures],
            "fastest": self.fastest and self.fastest.as_dict(),
            "cheapest": self.cheapest and self.cheapest.as_dict(),
            "best_final_quality": self.best and self.best.as_dict(),
            "best_final_quality_skipped": self.best_skipped,
        }


def _to_target_verdict(members: list[GroupFigures], header: str, level: float) -> Verdict:
    crossings = {f.group.name: f.to_target_charged[header] for f in members}
    if not any(c.reached for c in crossings.values()):
        return Verdict(None, None, reason="no run reached the target")
    eligible = [name for name, c in crossings.items() if c.all_reached]
    if not eligible:
        return Verdict(None, None, reason="no method brought every run to the target")
    # a run that never reached the target counts at what it spent: a lower bound, in its favour
    return best_of({name: c.bounds() for name, c in crossings.items()}, True, level, eligible)


def judge(
    size_class: SizeClass, target: Target | None, metric: str, currency: str, higher_is_better: bool, level: float
) -> ClassVerdict:
    members = size_class.figures
    verdict = ClassVerdict(size_class)
    if len(members) >= 2:
        if target is not None:
            verdict.fastest = _to_target_verdict(members, "to target s", level)
            verdict.cheapest = _to_target_verdict(members, "to target cost", level)
        if any(f.group.stopped_at_target for f in members):
            verdict.best_skipped = (
                "runs stop at the target (eval.stop_at_target), so their final quality is the target's"
            )
        else:
            verdict.best = best_of(
                {f.group.name: [r["final"]["test"].get(metric) for r in f.group.records] for f in members},
                not higher_is_better,
                level,
            )
    verdict.amortization = amortization(members, target, metric, currency, higher_is_better, level)
    return verdict


def amortization(
    members: list[GroupFigures], target: Target | None, metric: str, currency: str, higher_is_better: bool, level: float
) -> list[dict]:
    """Per distillation group of a size class: one student's cost with and without its teacher, the
    cheapest normal method of the same class on the same basis, and break-even N with its interval.
    Basis: money to target when every run of both reached it; else the whole run's cost against
    normal methods whose mean final quality is at least the student's."""
    quality = f"test {metric}"
    normal = [f for f in members if f.group.is_normal]
    rows = []
    for fig in members:
        if not fig.group.is_distillation:
            continue
        reaching = [f for f in normal if f.to_target["to target cost"].all_reached]
        if target is not None and fig.to_target["to target cost"].all_reached and reaching:
            basis = "to target"
            baseline = min(reaching, key=lambda f: f.to_target["to target cost"].stat.mean)
            student = list(fig.to_target["to target cost"].values)
            base = list(baseline.to_target["to target cost"].values)
        else:
            basis = "whole run"
            student = [r["cost"]["total"] for r in fig.group.records]
            mine = fig.columns[quality].mean
            good = [
                f
                for f in normal
                if f.columns[f"cost {currency}"].mean is not None
                and (
                    mine is None
                    or (f.columns[quality].mean >= mine if higher_is_better else f.columns[quality].mean <= mine)
                )
            ]
            baseline = min(good, key=lambda f: f.columns[f"cost {currency}"].mean) if good else None
            base = [r["cost"]["total"] for r in baseline.group.records] if baseline else []
            if baseline is None and normal:
                basis = "whole run; no normal method as good"
        teacher = fig.charge.cost
        once = baseline.charge.cost if baseline else 0.0  # its pretraining, charged once
        known = baseline is not None and None not in (teacher, once) and None not in student + base
        result = break_even_interval(teacher, once, student, base, level) if known else None
        student_stat, base_stat = Stat.of(student, level), Stat.of(base, level)
        rows.append(
            {
                "group": fig.group.name,
                "basis": basis,
                "student_cost": student_stat.mean,
                "student": student_stat,
                "student_quality": fig.columns[quality].mean,
                "teacher_training_cost": fig.charge.training_cost,
                "teacher_inference_cost": fig.charge.inference_cost,
                "one_student_with_teacher": None
                if None in (student_stat.mean, teacher)
                else student_stat.mean + teacher,
                "baseline": baseline.group.name if baseline else None,
                "baseline_cost": base_stat.mean,
                "baseline_stat": base_stat,
                "baseline_once": once,
                "baseline_charged": baseline.charge.parts if baseline else [],
                "break_even": result,
                "break_even_students": "unknown"
                if result is None
                else ("never" if result.point is None else result.point),
                "storage_per_month": fig.charge.storage_month,
                "charged": fig.charge.parts,
            }
        )
    return rows


# ----------------------------------------------------------------------------------------- words


def _p(p: float | None) -> str:
    if p is None:
        return "p —"
    return "p < 0.001" if p < 0.001 else f"p = {p:.2g}"


def _crossings_text(f: GroupFigures, header: str, unit: str, level: float) -> str:
    c = f.to_target_charged[header]
    return f"{crossing_cell(c, level)} {unit}" + ("" if c.all_reached else f" ({c.reached}/{c.runs} reached)")


def _verdict_line(
    label: str,
    verdict: Verdict | None,
    members: list[GroupFigures],
    describe: Callable,
    alpha: float,
    lower_is_better: bool = True,
) -> str | None:
    if verdict is None:
        return None
    if verdict.leader is None:
        return f"  {label:<20}{verdict.reason}"
    by_name = {f.group.name: f for f in members}
    leader = by_name[verdict.leader]
    if verdict.winner is not None:
        worst = max(test.p for test in verdict.tests.values())
        return (
            f"  {label:<20}{verdict.winner}: {describe(leader)}; significantly better than each of the "
            f"{len(verdict.tests)} other method(s) (Welch's t-test, largest {_p(worst)}, alpha {alpha:g})"
        )
    testable = {name: test for name, test in verdict.tests.items() if test.p is not None}
    if not testable:
        return f"  {label:<20}not decided: {verdict.reason} (best estimate {verdict.leader}: {describe(leader)})"
    # a rival significantly better than the leader, which could not lead itself (not every seed reached)
    sign = 1.0 if lower_is_better else -1.0
    better = {name: test for name, test in testable.items() if test.significant(alpha) and sign * test.diff > 0}
    if better:
        rival, test = min(better.items(), key=lambda item: item[1].p)
        return (
            f"  {label:<20}not decided: {verdict.leader} leads among the methods whose every seed reached the "
            f"target ({describe(leader)}), but {rival} was lower on its seeds ({describe(by_name[rival])}, "
            f"{_p(test.p)}; its censored seeds counted at what they spent)"
        )
    rival, test = max(testable.items(), key=lambda item: item[1].p)
    return (
        f"  {label:<20}no significant difference: {verdict.leader} {describe(leader)} vs {rival} "
        f"{describe(by_name[rival])} ({_p(test.p)}, alpha {alpha:g})"
    )


def break_even_words(row: dict, currency: str, level: float) -> str:
    """How the report states break-even N, from its interval."""
    result: BreakEven | None = row["break_even"]
    teacher = (row["teacher_training_cost"] or 0) + (row["teacher_inference_cost"] or 0)
    against = (
        f"against {row['baseline']} ({cell(row['baseline_stat'])} {currency} each"
        + (f" + {fmt(row['baseline_once'])} once" if row["baseline_once"] else "")
        + f"; cost {row['basis']})"
    )
    costs = f"student {cell(row['student'])} {currency} + teacher {fmt(teacher)} once, {against}"
    if result is None:
        return f"unknown ({costs})"
    saving = result.saving
    span = f"{level:.0%} interval: {result.low if result.low is not None else 'never'}" + (
        f" to {result.high if result.high is not None else 'never'}" if result.high != result.low else ""
    )
    if result.outcome == "pays_off":
        return f"from {result.point} students on ({span}; {costs}; per-student saving {_p(saving.p)})"
    if result.outcome == "never":
        return (
            f"never: a distilled student saves nothing at {level:.0%} confidence (saving "
            f"{fmt(saving.diff)} {currency}, interval {fmt(saving.low)} to {fmt(saving.high)}; {costs})"
        )
    if result.outcome == "uncertain":
        return (
            f"not decided: no significant per-student saving ({_p(saving.p)}); "
            f"break-even anywhere from {result.low if result.low is not None else 'never'} students to never "
            f"(estimate: {result.point if result.point is not None else 'never'}; {costs})"
        )
    return (
        f"not decided: fewer than two seeds on a side, no interval (estimate "
        f"{result.point if result.point is not None else 'never'}; {costs})"
    )


def verdict_lines(
    verdict: ClassVerdict, target: Target | None, metric: str, currency: str, higher_is_better: bool, level: float
) -> list[str]:
    """The verdict of one size class, in words: fastest, cheapest, best final quality, pays off."""
    alpha = round(1.0 - level, 10)
    members = verdict.size_class.figures
    charged = lambda f: (
        " (teacher charged)"
        if f.group.is_distillation
        else " (its base model's training charged)"
        if f.charge.base_runs
        else ""
    )
    lines = []
    if target is not None:
        lines.append(
            _verdict_line(
                "fastest to target",
                verdict.fastest,
                members,
                lambda f: _crossings_text(f, "to target s", "s", level) + charged(f),
                alpha,
            )
        )
        lines.append(
            _verdict_line(
                "cheapest to target",
                verdict.cheapest,
                members,
                lambda f: _crossings_text(f, "to target cost", currency, level) + charged(f),
                alpha,
            )
        )
    if verdict.best_skipped:
        lines.append(f"  {'best final quality':<20}not compared: {verdict.best_skipped}")
    else:
        lines.append(
            _verdict_line(
                "best final quality",
                verdict.best,
                members,
                lambda f: f"test {metric} {cell(f.columns[f'test {metric}'])}",
                alpha,
                lower_is_better=not higher_is_better,
            )
        )
    for row in verdict.amortization:
        if row["baseline"] is None:
            better = "or higher" if higher_is_better else "or lower"
            text = (
                f"no normal method of this size here ended at test {metric} {fmt(row['student_quality'])} {better}: "
                "no cheaper way to that quality in these runs"
                if row["basis"].endswith("as good")
                else f"unknown (no normal method of this size with a test {metric} to compare with)"
            )
        else:
            text = break_even_words(row, currency, level)
        lines.append(f"  {'teacher pays off':<20}{row['group']}: {text}")
    return [line for line in lines if line]


def headline(verdict: ClassVerdict) -> str:
    """One sentence: what is significant and what is not."""
    said, unsaid = [], []
    for what, v in (
        ("fastest to the target", verdict.fastest),
        ("cheapest to the target", verdict.cheapest),
        ("best in final quality", verdict.best),
    ):
        if v is None:
            continue
        (said if v.winner else unsaid).append(f"{v.winner} is {what}" if v.winner else what)
    for row in verdict.amortization:
        result = row["break_even"]
        if result is not None and result.outcome == "pays_off":
            said.append(f"{row['group']}'s teacher pays off from {result.point} students on")
        elif result is not None and result.outcome == "never":
            said.append(f"{row['group']}'s teacher never pays off")
        else:
            unsaid.append(f"when {row['group']}'s teacher pays off")
    parts = []
    if said:
        parts.append("Significant: " + "; ".join(said) + ".")
    if unsaid:
        parts.append("Not significant at this many seeds: " + "; ".join(unsaid) + ".")
    return " ".join(parts) or "Nothing to compare: one method in this size class."

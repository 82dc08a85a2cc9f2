"""The report's plots: Pareto fronts of quality against device-hours and money, learning curves, and
few-shot quality against k. PNG files, written atomically."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ray_t2t.reporting.figures import GroupFigures
from ray_t2t.reporting.records import Target


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats: at most the cost (x) and at least as good quality (y),
    better in one. Sorted by cost."""

    def better_or_equal(a: float, b: float) -> Any:
        return a >= b if higher_is_better else a <= b

    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(
            x2 <= x and better_or_equal(y2, y) and (x2 < x or y2 != y) for j, (x2, y2) in enumerate(points) if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: points[i][0])


def _charged_device_hours(figures: GroupFigures) -> float | None:
    alone = figures.columns["device-h"].mean
    return None if alone is None else alone + figures.charge.device_s / 3600


def write_plots(
    folder: Path,
    figures: list[GroupFigures],
    metric: str,
    higher_is_better: bool,
    currency: str,
    target: Target | None = None,
    compared: list[str] | None = None,
) -> list[tuple[Path, str]]:
    """Pareto plots of final quality against device-hours and against money (distillation charged for
    its teacher, the student alone as an open marker; error bars: the quality's confidence interval over
    seeds), and every run's learning curve with the target. The front is over the `compared` groups
    (the students of one size class; default every group but the teacher); other models are grey
    reference points, never on the front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    color_of = {f.group.name: colors[i % len(colors)] for i, f in enumerate(figures)}
    written = []

    def save(fig: Any, name: str, alt: str) -> None:
        path = folder / name
        staging = folder / f".{name}.{os.getpid()}.png"
        fig.savefig(staging, dpi=110, bbox_inches="tight")
        plt.close(fig)
        staging.replace(path)
        written.append((path, alt))

    quality = f"test {metric}"
    for name, axis, charged_of, alone_of in (
        ("pareto_device_hours.png", "device-hours", _charged_device_hours, lambda f: f.columns["device-h"].mean),
        ("pareto_cost.png", currency, lambda f: f.cost_charged.mean, lambda f: f.columns[f"cost {currency}"].mean),
    ):
        shown = [f for f in figures if f.columns[quality].mean is not None and charged_of(f) is not None]
        if not shown:
            continue
        fig, ax = plt.subplots(figsize=(7, 4.5))
        points = [(charged_of(f), f.columns[quality].mean) for f in shown]
        ranked = lambda f: (f.group.name in compared) if compared is not None else not f.group.is_teacher
        for f, (x, y) in zip(shown, points):
            half = f.columns[quality].half or 0.0
            if not ranked(f):
                ax.errorbar([x], [y], yerr=[half], color="grey", marker="x", capsize=2, zorder=3)
            else:
                ax.errorbar([x], [y], yerr=[half], color=color_of[f.group.name], marker="o", capsize=2, zorder=3)
            if f.group.is_teacher:
                shown_as = f.group.name + ("" if "teacher" in f.group.name else " (teacher)")
            else:
                shown_as = f.group.name + ("" if ranked(f) else " (other size)")
            ax.annotate(shown_as, (x, y), textcoords="offset points", xytext=(5, 4), fontsize=8)
            alone = alone_of(f)
            if f.group.is_distillation and alone is not None and alone != x:
                ax.scatter([alone], [y], facecolors="none", edgecolors=color_of[f.group.name], zorder=3)
                ax.plot([alone, x], [y, y], color=color_of[f.group.name], linewidth=0.8, linestyle=":")
        students = [i for i, f in enumerate(shown) if ranked(f)]
        front = [students[i] for i in pareto_front([points[i] for i in students], higher_is_better)]
        ax.plot(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            color="black",
            linewidth=1.5,
            zorder=2,
            label="Pareto front (students of one size, means)",
        )
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
                    ax.plot(
                        [p[0] for p in points],
                        [p[1] for p in points],
                        color=color_of[f.group.name],
                        marker=".",
                        linewidth=1,
                        label=f.group.name if i == 0 else None,
                    )
        if target is not None and target.metric == metric:
            ax.axhline(target.value, color="black", linestyle="--", linewidth=1, label=f"target {target}")
        ax.set_xlabel("device-hours of training (student alone)")
        ax.set_ylabel(f"validation {metric}")
        ax.legend(loc="best", fontsize=8)
        ax.grid(alpha=0.3)
        save(fig, "learning_curves.png", f"validation {metric} against device-hours, every run")
    return written


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
            ax.errorbar(
                [p["k"] for p in points],
                [p["test"].mean for p in points],
                yerr=[p["test"].half or 0 for p in points],
                marker="o",
                capsize=3,
                label=f"{line[0]} ({line[1]})",
            )
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

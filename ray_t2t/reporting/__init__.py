"""The comparison report: every number comes from run records, nothing is measured again.

    ray-t2t report ray_t2t_runs/quickstart [--target 'wer <= 0.5' | --target-relative 0.95]
                                           [--confidence 0.95] [--no-plots]
    from ray_t2t.reporting import build_report; print(build_report(Path("ray_t2t_runs/quickstart")).summary)

Reads, under an experiment folder (<storage_path>/<run.name>):
    runs/*/record.json            training runs (ray_t2t.training.loop.finish writes them)
    sweep/*/record.json           sweep trials, when there is a sweep
    soft_targets/*/record.json    teacher inference (ray_t2t.soft_targets.inference_record)
    inference/*.json              inference speed of the exported models (ray_t2t.inference)
and writes report/report.md, report/report.html (self-contained: tables and plots inline),
report/report.json (the numbers) and report/*.png.

It opens with the verdict (ray_t2t.reporting.verdict): per size class of exported model, which method
reaches the target soonest and cheapest, which ends best, and after how many students a teacher
pays off, each named only when Welch's t-test over the seeds supports it (ray_t2t.reporting.stats). Then the
figures behind it: every figure is the mean over a group's runs (seeds) with its confidence interval;
time to target is interpolated between evaluations and censored for runs that never reached it.

The target is the records' own (`eval.target`), `--target`, or `--target-relative F`: F x the
teacher's final test quality for a higher-is-better metric (value >= F x teacher), and for a
lower-is-better one value <= teacher / F (so 0.95 of a teacher's WER 0.40 is WER <= 0.421).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ray_t2t.errors import UserError
from ray_t2t.reporting.figures import (
    TO_TARGET,
    Charge,
    GroupFigures,
    compute_figures,
    figure_columns,
    speed_at,
)
from ray_t2t.reporting.plots import fewshot_plot, pareto_front, write_plots
from ray_t2t.reporting.records import (
    REPORT_FOLDER,
    Target,
    group_records,
    load_records,
    one,
    relative_target,
    resolve_target,
    time_to_target,
)
from ray_t2t.reporting.render import Document, _atomic_write, cell, crossing_cell, fmt
from ray_t2t.reporting.stats import (
    Stat,
    break_even_interval,
    mean_ci,
    students_to_break_even,
    t_quantile,
)
from ray_t2t.reporting.tasks import _multitask_json, fewshot_by_k, multitask_comparison
from ray_t2t.reporting.verdict import (
    ClassVerdict,
    headline,
    judge,
    size_classes,
    verdict_lines,
)
from ray_t2t.storage import is_remote, location, upload

__all__ = [
    "Report",
    "build_report",
    "Charge",
    "Stat",
    "Target",
    "break_even_interval",
    "fewshot_by_k",
    "fewshot_plot",
    "mean_ci",
    "pareto_front",
    "relative_target",
    "students_to_break_even",
    "t_quantile",
    "time_to_target",
]

REPORT_DIR = REPORT_FOLDER


@dataclass
class Report:
    summary: str  # a few lines for the terminal: the verdict first
    files: list[Path]
    data: dict  # what report.json holds


def build_report(
    run_dir: str | Path,
    target: str | None = None,
    target_relative: float | None = None,
    confidence: float = 0.95,
    plots: bool = True,
    formats: tuple[str, ...] = ("md", "html"),
) -> Report:
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
    return Report(
        report.summary.replace(work, str(destination)), [destination / p.name for p in report.files], report.data
    )


def _text_table(headers: list[str], rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(str(row[i])) for row in [headers] + rows) for i in range(len(headers))]
    line = lambda row: indent + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip()
    return [line(headers)] + [line(row) for row in rows]


def _verdict_table(
    verdict: ClassVerdict, target: Target | None, metric: str, currency: str, level: float
) -> tuple[list[str], list[list[str]]]:
    headers = ["method", "seeds"]
    if target is not None:
        headers += ["reached", "to target s, charged", f"to target {currency}, charged"]
    headers += [f"test {metric}", "s/step"]
    rows = []
    members = sorted(verdict.size_class.figures, key=lambda f: f.order_key)
    for f in members:
        row = [f.group.name, str(len(f.group.seeds) or f.runs)]
        if target is not None:
            row += [
                f"{f.reached}/{f.runs}",
                crossing_cell(f.to_target_charged["to target s"], level),
                crossing_cell(f.to_target_charged["to target cost"], level),
            ]
        row += [cell(f.columns[f"test {metric}"]), cell(f.columns["s/step"])]
        rows.append(row)
    return headers, rows


def _charges_note(members: list[GroupFigures]) -> str:
    """What the verdict table's charged figures add to each method's own training, in words."""
    notes = []
    for f in members:
        if f.group.is_distillation and f.charge.parts:
            notes.append(
                f"{f.group.name}: its teacher's training" + (" and soft targets" if f.group.reads_soft_targets else "")
            )
        elif f.charge.base_runs:
            notes.append(f"{f.group.name}: the training of {', '.join(f.charge.base_runs)}")
    return (
        "charged: each method's own training until the interpolated crossing, plus " + "; ".join(notes) if notes else ""
    )


def _speed_cell(f: GroupFigures, batch: str, key: str) -> str:
    result = speed_at(f, batch)
    return fmt(result[key]["median"]) if result else "—"


def _build_report(
    run_dir: str | Path,
    folder: Path,
    target: str | None,
    target_relative: float | None,
    confidence: float,
    plots: bool,
    formats: tuple[str, ...],
) -> Report:
    """build_report, writing the report's files into the local `folder`."""
    records = load_records(run_dir)
    runs = records.runs
    metric = one([r["metric"]["name"] for r in runs], "eval.metric", "a report compares one metric", runs)
    higher = bool(
        one(
            [r["metric"].get("higher_is_better") for r in runs],
            "the metric's direction",
            "a report compares one metric",
            runs,
        )
    )
    currency = one([r["cost"].get("currency") for r in runs], "the currency", "price every run in one currency", runs)
    chosen = resolve_target(runs, target, target_relative, metric, higher)
    groups = group_records(runs)
    figures = compute_figures(groups, runs, records.inferences, chosen, metric, currency, confidence, records.speeds)
    classes = size_classes(figures, metric)
    verdicts = [judge(c, chosen, metric, currency, higher, confidence) for c in classes]
    amortized = [row for v in verdicts for row in v.amortization]
    shots = fewshot_by_k(runs, metric, currency, confidence, chosen)
    ranked = {f.group.name for c in classes for f in c.figures if len(c.figures) >= 2}
    level = f"{confidence:.0%}"
    alpha = round(1 - confidence, 10)

    folder.mkdir(parents=True, exist_ok=True)
    main_class = classes[0] if classes else None
    images = (
        write_plots(
            folder,
            figures,
            metric,
            higher,
            currency,
            chosen,
            compared=[f.group.name for f in main_class.figures] if main_class else None,
        )
        if plots
        else []
    )
    if plots:
        images += fewshot_plot(folder, shots, metric, higher)

    # ------------------------------------------------------------------------------------ the verdict
    doc = Document()
    doc.heading(f"ray_t2t report: {run_dir.name}", 1)
    summary = [
        f"report: {run_dir.name}: {len(runs)} run records in {len(groups)} groups"
        + (f"; target {chosen} ({chosen.source})" if chosen else "; no target")
    ]
    doc.heading("Verdict")
    doc.paragraph(
        f"Target: **{chosen}** ({chosen.source})."
        if chosen
        else "Target: none (the runs have no `eval.target`; give `--target` or `--target-relative`)."
    )
    for verdict in verdicts:
        members = verdict.size_class.figures
        if len(members) < 2 and not verdict.amortization:
            continue
        seeds = sorted({len(f.group.seeds) or f.runs for f in members})
        title = f"{verdict.size_class.description}: {len(members)} method(s), {'/'.join(map(str, seeds))} seed(s) each"
        headers, rows = _verdict_table(verdict, chosen, metric, currency, confidence)
        lines = verdict_lines(verdict, chosen, metric, currency, higher, confidence)
        said = headline(verdict)
        doc.heading(title[0].upper() + title[1:], 3)
        doc.paragraph(said)
        doc.table(headers, rows)
        charges = _charges_note(members)
        if charges:
            doc.paragraph(charges)
        doc.bullets([line.strip() for line in lines])
        summary += [f"verdict for {title} ({level} intervals; Welch's t-test at alpha {alpha:g}):"]
        summary += _text_table(headers, rows)
        if charges:
            summary.append(f"  ({charges})")
        summary += lines
        summary += [f"  {said}"]
    others = [
        f
        for f in figures
        if f.group.name not in ranked and (f.group.is_teacher or f.columns[f"test {metric}"].mean is not None)
    ]
    if others:
        other_rows = [
            [
                f.group.name,
                f.group.method + (" (teacher)" if f.group.is_teacher else ""),
                fmt(f.group.size_class[3]),
                cell(f.columns[f"test {metric}"]),
                _speed_cell(f, "batch", "examples_per_s"),
            ]
            for f in others
        ]
        doc.heading("Not ranked: other models", 3)
        doc.paragraph(
            "Runs whose exported model differs from the compared students (the teacher, another shape): "
            "shown with their size and inference cost, never ranked against the students."
        )
        doc.table(["group", "method", "params", f"test {metric}", "inference examples/s"], other_rows)
        summary.append(
            "not ranked (other models): "
            + "; ".join(f"{row[0]} ({row[2]} params): test {metric} {row[3]}" for row in other_rows)
        )

    doc.heading("How the verdict is reached")
    doc.bullets(
        [
            "Like for like: methods are ranked only against groups whose exported models have the same family, "
            "architecture and parameter count (params counts the exported model only; parts used only in training, "
            "such as a discriminator or projections, are in `training-only params`).",
            f"Each figure is the mean over a group's seeds ± the half-width of its {level} Student-t interval; "
            "a replicate is a distinct seed of one configuration (reruns and same-seed runs count once).",
            "Time to target is interpolated linearly between the two evaluations around the crossing. A run that "
            "never reached the target is censored at what it spent, never dropped: a group's mean needs every seed to "
            "have reached it; where only a majority did, the median is shown with an order-statistic interval "
            "(its coverage in brackets when too few seeds allow the asked level).",
            f"A method is named fastest, cheapest or best only when Welch's t-test (two-sided, alpha {alpha:g}) "
            "separates it from every other method of its class; a censored run enters the test at what it spent, "
            'which favours it. Otherwise the report says "no significant difference" and gives the figures.',
            f"Break-even N comes from the {level} interval of the per-student saving against the cheapest normal "
            'method; "never" only when the whole interval shows no saving.',
        ]
    )

    # ---------------------------------------------------------------------------------- the figures
    doc.heading("Comparison")
    doc.paragraph(
        f"{len(runs)} run records in {len(groups)} groups, {len(records.inferences)} teacher-inference "
        f"records, from `{run_dir}`. Quality: test `{metric}` ({'higher' if higher else 'lower'} is "
        f"better). Each figure: mean ± {level} interval over the group's runs."
    )
    columns = figure_columns(metric, currency)
    headers = (
        ["group", "method", "runs"]
        + [h for h, _ in columns]
        + ["reached", "to target s", "to target device-h", f"to target {currency}"]
    )
    rows = []
    for f in figures:
        rows.append(
            [f.group.name, f.group.method + (" (teacher)" if f.group.is_teacher else ""), str(f.runs)]
            + [cell(f.columns[h]) for h, _ in columns]
            + [f.reached_text() if chosen else "—"]
            + [crossing_cell(f.to_target[h], confidence) for h, _, _ in TO_TARGET]
        )
    doc.table(headers, rows)
    doc.paragraph(
        "train s: optimizer steps only (evaluation, checkpoints and export are timed apart); s/step: "
        "train s per optimizer step; device-h: train s × devices; tokens seen: source + target tokens "
        "trained on; params and size: the exported model; to target: the student's own training until "
        "the interpolated crossing."
    )

    measured = [f for f in figures if f.speed]
    doc.heading("Inference speed")
    if measured:
        first = measured[0].speed
        settings = first.get("settings") or {}
        where = (first.get("device") or {}).get("description") or "see the inference records"
        doc.paragraph(
            f"Measured after training, one exported model at a time with nothing else running on its devices "
            f"({where}): greedy decoding of a fixed "
            f"set of {settings.get('examples')} test sources to exactly {settings.get('output_tokens')} new tokens "
            f"each, after a warm-up; the median of {settings.get('repeats')} repeats. Models of one architecture "
            "and size are measured once. tokens/s counts input + output tokens."
        )
        batches = [r["batch_size"] for r in first.get("results") or []]
        speed_headers = ["group", "params"]
        for b in batches:
            speed_headers += [f"examples/s (batch {b})", f"tokens/s (batch {b})"]
        speed_rows = []
        for f in measured:
            row = [f.group.name, fmt(f.group.size_class[3])]
            for result in f.speed.get("results") or []:
                row += [fmt(result["examples_per_s"]["median"]), fmt(result["tokens_per_s"]["median"])]
            speed_rows.append(row)
        doc.table(speed_headers, speed_rows)
    else:
        doc.paragraph(
            "Not measured: `ray-t2t run` measures it after the sweep; for runs trained one at a time, "
            "run `ray-t2t inference CONFIG`."
        )

    students = [f for f in figures if not f.group.is_teacher]
    if chosen:
        doc.heading("Time to target")
        doc.paragraph(
            "Distillation charged for its teacher (training, and the soft targets for students that "
            "read them: see Teacher amortization); a run that starts from another run's model (a "
            "fine-tune of a pretrain run) charged for that run's training. Sorted: groups whose every run "
            "reached the target by money to target, then those a majority reached, then the rest."
        )
        charged = [f for f in students if f.charge.base_runs]
        if charged:
            doc.bullets([f"{f.group.name}: {'; '.join(f.charge.parts)}" for f in charged])
        rows = []
        for f in sorted(students, key=lambda f: f.order_key) + [f for f in figures if f.group.is_teacher]:
            rows.append(
                [f.group.name, f.group.method + (" (teacher)" if f.group.is_teacher else ""), f.reached_text()]
                + [crossing_cell(f.to_target_charged[h], confidence) for h, _, _ in TO_TARGET]
                + [crossing_cell(f.to_target[h], confidence) for h, _, _ in TO_TARGET]
                + [cell(f.columns[f"test {metric}"])]
            )
        doc.table(
            [
                "group",
                "method",
                "reached",
                "s",
                "device-h",
                currency,
                "student alone s",
                "student alone device-h",
                f"student alone {currency}",
                f"test {metric}",
            ],
            rows,
        )

    doc.heading("Teacher amortization")
    if amortized:
        doc.paragraph(
            "Distilling N students costs teacher + N × student; training each by the cheapest normal method of "
            "the same size class costs its one-off (the pretraining it starts from, if any) + N × baseline. "
            "Break-even: the smallest N at which distilling is cheaper, with its interval from the "
            f"{level} interval of the per-student saving (Welch); never: the distilled student saves nothing. "
            "Basis: money to target when every run of the student and of a normal method reached it, else the "
            "whole run's cost against normal methods whose final test quality is at least the student's. "
            "Storage of soft targets is per month, not in the one-off cost."
        )
        table = []
        for row in amortized:
            result = row["break_even"]
            saving = result.saving if result else None
            table.append(
                [
                    row["group"],
                    row["basis"],
                    cell(row["student"]),
                    fmt(row["teacher_training_cost"]),
                    fmt(row["teacher_inference_cost"]),
                    row["baseline"] or "none",
                    cell(row["baseline_stat"]),
                    fmt(row["baseline_once"]),
                    "—"
                    if saving is None or saving.diff is None
                    else fmt(saving.diff) + ("" if saving.low is None else f" [{fmt(saving.low)}, {fmt(saving.high)}]"),
                    "—" if saving is None or saving.p is None else f"{saving.p:.2g}",
                    str(row["break_even_students"]),
                    "—"
                    if result is None or result.outcome == "untested"
                    else f"{result.low if result.low is not None else 'never'} to "
                    f"{result.high if result.high is not None else 'never'}",
                    fmt(row["storage_per_month"]),
                ]
            )
        doc.table(
            [
                "group",
                "basis",
                f"student {currency}",
                f"teacher training {currency}",
                f"soft targets {currency}",
                "cheapest normal method",
                f"its {currency}",
                f"its one-off {currency}",
                f"saving per student {currency} [{level}]",
                "p",
                "break-even students",
                f"{level} interval",
                f"storage {currency}/month",
            ],
            table,
        )
        doc.bullets([f"{row['group']}: {'; '.join(row['charged'])}" for row in amortized])
    else:
        doc.paragraph("No distillation runs (methods kd_* or sft).")

    if shots:
        doc.heading("Few-shot: quality against k")
        doc.table(
            ["fewshot entry", "mode", "k", "runs", "train examples", f"test {metric}", "device-h", currency, "reached"],
            [
                [
                    row["label"],
                    row["mode"],
                    str(row["k"]),
                    str(row["runs"]),
                    cell(row["train_examples"]),
                    cell(row["test"]),
                    cell(row["device_h"]),
                    cell(row["cost"]),
                    f"{row['reached']}/{row['runs']}" if chosen else "—",
                ]
                for row in shots
            ],
        )
        doc.paragraph(
            "Each k over its runs (seeds: each seed chooses its own k training examples). mode train: "
            "fine-tuned on the k examples, cost = training; in_context: k demonstrations in every prompt, "
            "no training, cost = the validation and test inference."
        )

    multitask = multitask_comparison(runs, metric, confidence, chosen if target is not None else None)
    if multitask:
        _multitask_section(doc, multitask, metric, currency)
        for row in multitask:
            if row.get("all") and row["s"].mean is not None:
                single = row["single_sum"]
                summary.append(
                    f"  {'multitask':<20}{row['group']}: every task's target after {fmt(row['s'].mean)} s"
                    + (
                        f", single-task runs {fmt(single['s'])} s one after another"
                        if single
                        else " (not every task has a single-task run that reached it)"
                    )
                )

    if records.inferences:
        doc.heading("Teacher inference")
        doc.table(
            [
                "soft targets",
                "teacher",
                "examples",
                "tokens",
                "device-h",
                currency,
                "tokens/s",
                "storage MB",
                f"{currency}/month",
            ],
            [
                [
                    i["label"],
                    (i.get("teacher") or {}).get("label", "?")
                    + (" (pre-existing)" if (i.get("teacher") or {}).get("pre_existing") else ""),
                    fmt((i.get("data") or {}).get("examples")),
                    fmt((i.get("data") or {}).get("tokens")),
                    fmt((i.get("device_seconds") or 0) / 3600),
                    fmt((i.get("cost") or {}).get("total")),
                    fmt(i.get("tokens_per_s") or i.get("tokens_per_s_per_replica")),
                    fmt(((i.get("storage") or {}).get("bytes") or 0) / 1e6),
                    fmt((i.get("cost") or {}).get("storage_per_month")),
                ]
                for i in records.inferences
            ],
        )

    if images:
        doc.heading("Plots")
        for path, alt in images:
            doc.image(path, alt)

    _hardware_section(doc, figures, records, currency)
    if records.left_out:
        doc.heading("Left out")
        doc.bullets([f"`{path}`: {why}" for path, why in records.left_out])

    written = []
    for kind in formats:
        path = folder / f"report.{kind}"
        _atomic_write(path, doc.markdown() if kind == "md" else doc.html(f"ray_t2t report: {run_dir.name}"))
        written.append(path)
    main_verdict = verdicts[0] if verdicts else None
    winners = {
        "size_class": main_verdict.size_class.description if main_verdict else None,
        "time_to_target": main_verdict.fastest.winner if main_verdict and main_verdict.fastest else None,
        "cost_to_target": main_verdict.cheapest.winner if main_verdict and main_verdict.cheapest else None,
        "final_quality": main_verdict.best.winner if main_verdict and main_verdict.best else None,
    }
    data = {
        "experiment": run_dir.name,
        "metric": metric,
        "higher_is_better": higher,
        "currency": currency,
        "confidence": confidence,
        "target": None
        if chosen is None
        else {"metric": chosen.metric, "op": chosen.op, "value": chosen.value, "source": chosen.source},
        "verdicts": [v.as_dict() | {"headline": headline(v)} for v in verdicts],
        "groups": [
            {
                "group": f.group.name,
                "method": f.group.method,
                "teacher": f.group.is_teacher,
                "runs": [r["_path"] for r in f.group.records],
                "seeds": f.group.seeds,
                "size_class": list(f.group.size_class),
                "ranked": f.group.name in ranked,
                "figures": {h: s.as_dict() for h, s in f.columns.items()},
                "reached": f.reached,
                "to_target": {h: c.as_dict() for h, c in f.to_target.items()},
                "to_target_teacher_charged": {h: c.as_dict() for h, c in f.to_target_charged.items()},
                "inference_speed": f.speed and {k: v for k, v in f.speed.items() if k != "_path"},
                "teacher_charge": {
                    "train_s": f.charge.train_s,
                    "device_s": f.charge.device_s,
                    "cost": f.charge.cost,
                    "parts": f.charge.parts,
                },
            }
            for f in figures
        ],
        "amortization": [
            {k: (v.as_dict() if hasattr(v, "as_dict") else v) for k, v in row.items()} for row in amortized
        ],
        "winners": winners,
        "left_out": records.left_out,
        "fewshot_by_k": [
            {**row, **{key: row[key].as_dict() for key in ("train_examples", "test", "device_h", "cost")}}
            for row in shots
        ],
        "multitask": _multitask_json(multitask),
    }
    json_path = folder / "report.json"
    _atomic_write(json_path, json.dumps(data, indent=1, default=str))
    files = written + [json_path] + [path for path, _ in images]
    summary.append(f"  {'report':<20}{', '.join(str(p) for p in written) or json_path}")
    return Report("\n".join(summary), files, data)


def _multitask_section(doc: Document, multitask: list[dict], metric: str, currency: str) -> None:
    doc.heading("Multi-task against single-task runs")
    doc.paragraph(
        "Each task of a `multitask` run against this folder's single-task runs of that task (runs whose "
        "data.task is the task, and `multitask` entries of that one task), all measured against the multitask "
        "entry's target for the task on the task's own validation examples (`val_<metric>_<task>` in the "
        "multitask curve; `--target` replaces every task's own). Single task: the fastest group whose every "
        "run reached the target, and how many groups were compared. All tasks: the multitask run until its "
        "slowest task reached its target, against the fastest single-task groups trained one after another "
        "(the sum)."
    )
    table = []
    for row in multitask:
        if row.get("all"):
            single = row["single_sum"]
            ratio = (row["s"].mean / single["s"]) if single and single["s"] and row["s"].mean is not None else None
            table.append(
                [
                    row["group"],
                    "**all tasks**",
                    "—",
                    "—",
                    f"{row['reached']}/{row['runs']}",
                    cell(row["s"]),
                    cell(row["cost"]),
                    "—",
                    "fastest per task" if single else "—",
                    "—",
                    fmt(single and single["s"]),
                    fmt(single and single["cost"]),
                    "—",
                    fmt(ratio),
                ]
            )
            continue
        mt, best = row.get("multitask"), row["best_single"]
        ratio = (mt["s"].mean / best["s"].mean) if mt and best and mt["s"].mean is not None else None
        compared = f" (of {len(row['single_groups'])})" if len(row["single_groups"]) > 1 else ""
        table.append(
            [
                row["group"],
                f"{row['task']} ({row['task_id']})",
                fmt(row["probability"]),
                row["target"] or "none",
                f"{mt['reached']}/{mt['runs']}" if mt else "—",
                cell(mt["s"]) if mt else "—",
                cell(mt["cost"]) if mt else "—",
                cell(row["multitask_test"]),
                (best["group"] + compared)
                if best
                else ("none reached" if row["single_groups"] else "no single-task run"),
                f"{best['reached']}/{best['runs']}" if best else "—",
                cell(best["s"]) if best else "—",
                cell(best["cost"]) if best else "—",
                cell(best["test"]) if best else "—",
                fmt(ratio),
            ]
        )
    doc.table(
        [
            "multitask group",
            "task",
            "p (mixture)",
            "target",
            "reached",
            "to target s",
            f"to target {currency}",
            f"test {metric}",
            "single task",
            "reached",
            "to target s",
            f"to target {currency}",
            f"test {metric}",
            "time ratio multi/single",
        ],
        table,
    )


def _hardware_section(doc: Document, figures: list[GroupFigures], records: list[dict], currency: str) -> None:
    doc.heading("Hardware, placement, prices and configs behind the numbers")
    rows = []
    for f in figures:
        seen = dict.fromkeys(
            (
                json.dumps(
                    {
                        k: (r.get("hardware") or {}).get(k)
                        for k in ("workers", "device_type", "devices_per_worker", "host_cpu")
                    }
                ),
                json.dumps((r.get("hardware") or {}).get("placement")),
                r["cost"].get("price_per_device_hour"),
                r.get("precision"),
                r.get("config_hash"),
            )
            for r in f.group.records
        )
        for hardware, placement, price, precision, config in seen:
            hw, placed = json.loads(hardware), json.loads(placement)
            devices = f"{hw['workers']} × {fmt(hw['devices_per_worker'])} {hw['device_type']}"
            rows.append(
                [
                    f.group.name,
                    devices,
                    _placement_text(placed),
                    hw.get("host_cpu") or "—",
                    precision or "—",
                    fmt(price),
                    config or "—",
                    ", ".join(str(s) for s in f.group.seeds) or "—",
                ]
            )
    for i in records.inferences:
        hw = i.get("hardware") or {}
        rows.append(
            [
                i["label"],
                f"{hw.get('workers')} × {fmt(hw.get('devices_per_worker'))} {hw.get('device_type')}",
                "—",
                hw.get("host_cpu") or "—",
                "—",
                fmt((i.get("cost") or {}).get("price_per_device_hour")),
                "—",
                "—",
            ]
        )
    doc.table(
        [
            "group",
            "workers × devices",
            "placement",
            "host CPU",
            "precision",
            f"{currency} per device-hour",
            "config hash",
            "seeds",
        ],
        rows,
    )
    doc.paragraph(
        "Placement: the cores (or GPUs) each run's worker had to itself; `shared` where it could not "
        "get its own and ran beside other work (its times are then not comparable). Prices are those "
        "recorded with each run (the config's `cost` table at the time). A run that starts from another "
        "run's model is charged that run's training when its record says so (model.initialized_from)."
    )


def _placement_text(placement: dict | None) -> str:
    if not placement:
        return "—"
    if placement.get("gpus"):
        return f"GPU {','.join(map(str, placement['gpus']))}"
    cores = placement.get("cpus") or []
    shown = f"cores {','.join(map(str, cores))}" if cores else "—"
    return shown if placement.get("pinned") else f"shared ({shown})"

"""The comparison report (ray-t2t report): statistics, time to target, amortization, and a whole
report from synthetic run records written with the exact fields the training loop writes. Ray-free."""

import json
import math
import statistics

import pytest

from ray_t2t.cli import main
from ray_t2t.errors import UserError
from ray_t2t.ledger import write_record
from ray_t2t.reporting import (
    build_report,
    mean_ci,
    pareto_front,
    relative_target,
    students_to_break_even,
    t_quantile,
    time_to_target,
)

PRICE = 3.6  # per device-hour, one device: cost = train_s / 1000


def curve(train_s: float, reach_step: int, max_steps: int = 1000, every: int = 100, devices: float = 1.0):
    """A learning curve as validate_into_curve appends it: val_wer falls linearly from 1.0 and is exactly
    0.5 at reach_step."""
    points = []
    for step in range(0, max_steps + 1, every):
        wall = train_s * step / max_steps
        device_s = wall * devices
        wer = 1.0 - 0.5 * step / reach_step
        points.append(
            {
                "step": step,
                "wall_s": wall,
                "device_s": device_s,
                "cost": device_s / 3600 * PRICE,
                "tokens": step * 1000,
                "energy_j": None,
                "train_loss": 2.0 - step / max_steps,
                "val_loss": 1.5,
                "val_token_accuracy": 0.5,
                "val_wer": wer,
                "val_per": wer / 3,
                "val_exact_match": 1 - wer,
            }
        )
    return points


def training_record(
    label,
    method,
    seed,
    train_s,
    reach_step,
    test_wer,
    *,
    model="student",
    group=None,
    params=None,
    target="wer <= 0.5",
    total_params=520_000,
    trainable=520_000,
    size=2_100_000,
    architecture_key="student-arch",
    training_only=0,
):
    """A finished run record with the fields and structure of ray_t2t.training.loop.finish()."""
    devices = 1.0
    points = curve(train_s, reach_step)
    device_s = train_s * devices
    tokens = points[-1]["tokens"]
    reached = next((p for p in points if p["val_wer"] <= 0.5), None)
    parsed = {"metric": "wer", "op": "<=", "value": float(target.split("<=")[1])} if target else None
    record = {
        "record_version": 1,
        "experiment": "synthetic",
        "label": label,
        "method": method,
        "params": {"label": label if label != method else None, "name": method, "model": model, **(params or {})},
        "seed": seed,
        "precision": "fp32",
        "config_hash": "abcdef0123456789",
        "run_hash": f"{label}-{seed}",
        "setting_hash": f"{label}-setting",
        "status": "finished",
        "stopped_at_target": False,
        "resumes": 0,
        "steps": {"planned": 1000, "done": 1000},
        "model": {
            "family": "encoder_decoder",
            "architecture": "t5",
            "total_params": total_params,
            "trainable_params": trainable,
            "training_only_params": training_only,
            "size_on_disk_bytes": size,
            "export_path": f"/x/runs/{label}/model",
            "architecture_key": architecture_key,
        },
        "data": {"task": "g2p_cmudict", "train_examples": 20_000, "tokens_seen": tokens},
        "hardware": {
            "workers": 1,
            "device_type": "cpu",
            "devices_per_worker": devices,
            "devices": devices,
            "host_cpu": "x86_64",
            "host_cpu_count": 2,
            "placement": {"pinned": True, "cpus": [seed % 2], "threads": 1},
        },
        "times": {
            "setup_s": 3.0,
            "train_s": train_s,
            "eval_s": 10.0,
            "checkpoint_s": 1.0,
            "finish_s": 2.0,
            "total_s": train_s + 16.0,
        },
        "device_seconds": device_s,
        "cost": {"currency": "USD", "price_per_device_hour": PRICE, "total": device_s / 3600 * PRICE},
        "tokens_per_s": tokens / train_s,
        "flops": 1e12,
        "flops_per_token": 1e12 / tokens,
        "mfu": None,
        "peak_memory_bytes": 10**9,
        "energy_j": None,
        "learning_curve": points,
        "target": parsed,
        "time_to_target": None
        if reached is None
        else {k: reached[k] for k in ("step", "wall_s", "device_s", "cost", "tokens", "energy_j")},
        "final": {
            "validation": {k.removeprefix("val_"): v for k, v in points[-1].items() if k.startswith("val_")},
            "test": {
                "loss": 1.4,
                "token_accuracy": 0.8,
                "wer": test_wer,
                "per": test_wer / 3,
                "exact_match": 1 - test_wer,
            },
        },
        "metric": {"name": "wer", "higher_is_better": False},
        "timestamps": {"first_step": 1.0, "last_step": 2.0, "record_written": 3.0},
    }
    if group is not None:
        record["group"] = group
    return record


def inference_record(cost=0.5, storage_per_month=0.01, teacher_cost=3.0):
    """A teacher-inference record with the fields of ray_t2t.soft_targets.inference_record()."""
    return {
        "record_version": 1,
        "kind": "teacher_inference",
        "experiment": "synthetic",
        "label": "soft_targets:teacher",
        "method": "teacher_inference",
        "status": "finished",
        "teacher": {
            "label": "teacher",
            "path": "/x/runs/teacher/model",
            "pre_existing": False,
            "training_device_seconds": teacher_cost * 1000,
            "training_cost": teacher_cost,
        },
        "settings": {"top_k": 32, "temperature": 1.0, "generations": "none", "batch_size": 256},
        "hardware": {
            "workers": 1,
            "device_type": "cpu",
            "devices_per_worker": 1.0,
            "devices": 1.0,
            "host_cpu": "x86_64",
            "host_cpu_count": 2,
        },
        "times": {"busy_s": cost * 1000, "wall_s": cost * 1000},
        "device_seconds": cost * 1000,
        "cost": {
            "currency": "USD",
            "price_per_device_hour": PRICE,
            "total": cost,
            "storage_per_month": storage_per_month,
        },
        "data": {"examples": 20_000, "source_tokens": 170_000, "target_tokens": 147_000, "tokens": 317_000},
        "tokens_per_s": 317_000 / (cost * 1000),
        "tokens_per_s_per_replica": 317_000 / (cost * 1000),
        "storage": {"bytes": 11_700_000, "bytes_per_target_token": 79.5, "shards": 5},
    }


# (label, method, seed, train_s, step reaching wer <= 0.5, test wer)
STUDENTS = [
    ("scratch", "scratch", 0, 1000.0, 600, 0.45),
    ("scratch", "scratch", 1, 1200.0, 700, 0.47),
    ("kd_logits", "kd_logits", 0, 800.0, 400, 0.40),
    ("kd_logits", "kd_logits", 1, 1000.0, 500, 0.42),
]


@pytest.fixture
def experiment(tmp_path):
    """RUN_DIR: two methods x two seeds as sweep trials (with group and seed), a teacher run, and the
    teacher's soft-target inference record."""
    run_dir = tmp_path / "synthetic"
    for label, method, seed, train_s, reach, wer in STUDENTS:
        params = {"teacher_source": "offline", "alpha": 0.5} if method == "kd_logits" else None
        write_record(
            run_dir / "sweep" / f"{label}_seed{seed}",
            training_record(label, method, seed, train_s, reach, wer, group=label, params=params),
        )
    write_record(
        run_dir / "runs" / "teacher",
        training_record(
            "teacher", "scratch", 0, 3000.0, 300, 0.30, model="teacher", total_params=2_160_000, trainable=2_160_000
        ),
    )
    write_record(run_dir / "soft_targets" / "teacher", inference_record())
    return run_dir


def read_table(markdown: str, heading: str) -> dict[str, dict[str, str]]:
    """The first table after `## heading`, as {first cell: {header: cell}}."""
    section = markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| group"))
    lines = [line for line in lines[start:] if line.startswith("|")]
    split = lambda line: [c.strip() for c in line.strip().strip("|").split(" | ")]
    headers = split(lines[0])
    return {row[0]: dict(zip(headers, row)) for row in map(split, lines[2:])}


def number(text: str) -> float:
    return float(text.split("±")[0].replace(",", "").strip())


def half_width(text: str) -> float:
    return float(text.split("±")[1].replace(",", ""))


# ------------------------------------------------------------------------------------ statistics


@pytest.mark.parametrize(
    "p, df, expected",
    [
        (0.975, 1, 12.7062047362),
        (0.975, 2, 4.3026527299),
        (0.975, 10, 2.2281388520),
        (0.995, 4, 4.6040948714),
        (0.95, 3, 2.3533634348),
        (0.025, 2, -4.3026527299),
    ],
)
def test_t_quantile_matches_tables(p, df, expected):
    assert t_quantile(p, df) == pytest.approx(expected, abs=1e-8)


def test_mean_ci_equals_hand_computed_values():
    mean, half = mean_ci([1, 2, 3], 0.95)
    assert mean == 2 and half == pytest.approx(4.302652729911275 * 1 / math.sqrt(3), abs=1e-9)
    assert round(half, 3) == 2.484
    mean, half = mean_ci([10, 12, 14, 16], 0.90)  # sd = sqrt(20/3), t(0.95, 3) = 2.353363
    assert mean == 13 and half == pytest.approx(2.3533634348 * math.sqrt(20 / 3) / 2, abs=1e-8)
    assert mean_ci([5.0], 0.95) == (5.0, None)
    assert mean_ci([], 0.95) == (None, None)


# ---------------------------------------------------------------------------------- time to target


def test_time_to_target_is_interpolated_between_evaluations():
    points = curve(1000.0, reach_step=600)
    hit = time_to_target(points, "wer", "<=", 0.5)
    assert hit == {
        "step": 600,
        "wall_s": 600.0,
        "device_s": 600.0,
        "cost": pytest.approx(0.6),
        "tokens": 600_000,
        "energy_j": None,
    }
    # wer 0.55 lies 40% of the way from step 500 (0.583) to step 600 (0.5): not rounded up to 600
    assert time_to_target(points, "wer", "<=", 0.55)["step"] == pytest.approx(540)
    assert time_to_target(points, "wer", "<=", 0.55)["wall_s"] == pytest.approx(540.0)


def test_time_to_target_higher_is_better_and_never_reached():
    points = curve(1000.0, reach_step=600)  # exact_match = 1 - wer: 0.5 at step 600
    assert time_to_target(points, "exact_match", ">=", 0.5)["step"] == 600
    assert time_to_target(points, "exact_match", ">=", 0.99) is None
    assert time_to_target(points, "wer", "<=", -1) is None
    assert time_to_target(points, "bleu", ">=", 1) is None  # not measured: never reached


def test_relative_target_both_directions():
    lower = relative_target(0.40, 0.95, "wer", higher_is_better=False)
    assert (lower.op, lower.value) == ("<=", pytest.approx(0.40 / 0.95))
    higher = relative_target(30.0, 0.95, "bleu", higher_is_better=True)
    assert (higher.op, higher.value) == (">=", pytest.approx(28.5))
    # on a curve falling linearly to 0.5 at step 600: wer <= 0.421 at step 2 (1 - 0.421) 600 = 694.7
    assert time_to_target(curve(1000.0, 600), lower.metric, lower.op, lower.value)["step"] == pytest.approx(
        2 * (1 - 0.40 / 0.95) * 600
    )
    with pytest.raises(UserError, match="above 0"):
        relative_target(0.4, 0, "wer", False)


# ---------------------------------------------------------------------------------- amortization


def test_pareto_front():
    points = [(1.0, 0.6), (2.0, 0.5), (3.0, 0.55), (4.0, 0.3), (1.5, 0.6)]  # lower quality value is better
    assert pareto_front(points, higher_is_better=False) == [0, 1, 3]
    assert pareto_front([(1.0, 10.0), (2.0, 5.0), (3.0, 20.0)], higher_is_better=True) == [0, 2]


# ---------------------------------------------------------------------------------- whole report


def test_report_lists_every_group_and_its_numbers_come_from_the_records(experiment):
    report = build_report(experiment, plots=False)
    markdown = (experiment / "report" / "report.md").read_text()
    table = read_table(markdown, "Comparison")
    assert set(table) == {"scratch", "kd_logits", "teacher"}
    records = [json.loads(p.read_text()) for p in experiment.glob("*/*/record.json")]
    t = t_quantile(0.975, 1)
    for name, row in table.items():
        mine = [r for r in records if r.get("kind") != "teacher_inference" and (r.get("group") or r["label"]) == name]
        assert row["runs"] == str(len(mine))
        expected = {
            "train s": [r["times"]["train_s"] for r in mine],
            "device-h": [r["device_seconds"] / 3600 for r in mine],
            "tokens seen": [r["data"]["tokens_seen"] for r in mine],
            "params": [r["model"]["total_params"] for r in mine],
            "size MB": [r["model"]["size_on_disk_bytes"] / 1e6 for r in mine],
            "s/step": [r["times"]["train_s"] / r["steps"]["done"] for r in mine],
            "cost USD": [r["cost"]["total"] for r in mine],
            "test wer": [r["final"]["test"]["wer"] for r in mine],
            # first curve point with val_wer <= 0.5, recomputed here
            "to target s": [next(p["wall_s"] for p in r["learning_curve"] if p["val_wer"] <= 0.5) for r in mine],
            "to target USD": [next(p["cost"] for p in r["learning_curve"] if p["val_wer"] <= 0.5) for r in mine],
        }
        for header, values in expected.items():
            assert number(row[header]) == pytest.approx(statistics.mean(values), rel=1e-3), (name, header)
            if len(values) > 1 and len(set(values)) > 1:  # 95% interval over two seeds: t(0.975, 1) sd / sqrt 2
                assert half_width(row[header]) == pytest.approx(t * statistics.stdev(values) / math.sqrt(2), rel=0.05)
            else:
                assert "±" not in row[header]
        assert row["reached"] == f"{len(mine)}/{len(mine)}"
    assert "scratch (teacher)" == table["teacher"]["method"]
    assert "Target: **wer <= 0.5** (eval.target of the runs)" in markdown
    assert "cheapest to target" in report.summary and str(experiment / "report" / "report.md") in report.summary
    assert (experiment / "report" / "report.html").read_text().count("<table>") >= 4


def test_time_to_target_table_charges_the_teacher_and_is_sorted_by_money(experiment):
    build_report(experiment, plots=False)
    markdown = (experiment / "report" / "report.md").read_text()
    rows = read_table(markdown, "Time to target")
    assert list(rows)[:2] == ["scratch", "kd_logits"]  # kd's 0.41 + teacher 3.0 + soft targets 0.5 > scratch 0.72
    assert number(rows["kd_logits"]["USD"]) == pytest.approx(0.41 + 3.0 + 0.5, rel=1e-3)
    assert number(rows["kd_logits"]["student alone USD"]) == pytest.approx(0.41, rel=1e-3)
    assert number(rows["scratch"]["USD"]) == pytest.approx(0.72, rel=1e-3)
    # wall time: the teacher's 3000 s of training and 500 s of inference come before the student's 320 s and 500 s
    assert number(rows["kd_logits"]["s"]) == pytest.approx(410 + 3000 + 500, rel=1e-3)


def test_amortization_break_even_in_the_report(experiment):
    report = build_report(experiment, plots=False)
    (row,) = report.data["amortization"]
    assert row["group"] == "kd_logits" and row["basis"] == "to target" and row["baseline"] == "scratch"
    assert row["student_cost"] == pytest.approx(0.41)  # mean of 0.32 and 0.50
    assert row["teacher_training_cost"] == pytest.approx(3.0) and row["teacher_inference_cost"] == pytest.approx(0.5)
    assert row["baseline_cost"] == pytest.approx(0.72)  # mean of 0.60 and 0.84
    assert row["break_even_students"] == 12  # the estimate: 3.5 / (0.72 - 0.41) = 11.3
    # two seeds a side: the saving's 95% interval (Welch, 1.85 degrees of freedom) straddles zero
    assert row["break_even"]["outcome"] == "uncertain" and row["break_even"]["high"] is None
    assert row["storage_per_month"] == pytest.approx(0.01)
    table = read_table((experiment / "report" / "report.md").read_text(), "Teacher amortization")
    assert table["kd_logits"]["break-even students"] == "12"
    assert "teacher pays off    kd_logits: not decided: no significant per-student saving" in report.summary


def test_amortization_never_when_the_student_costs_more(tmp_path):
    run_dir = tmp_path / "x"
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 0, 500.0, 300, 0.4))
    write_record(run_dir / "runs" / "kd_hidden", training_record("kd_hidden", "kd_hidden", 0, 900.0, 600, 0.4))
    report = build_report(run_dir, plots=False)
    (row,) = report.data["amortization"]
    assert row["break_even_students"] == "never" and row["teacher_training_cost"] == 0
    assert any("pre-existing" in part for part in row["charged"])
    # one seed a side: no interval, so no claim; the estimate is said as such
    assert row["break_even"]["outcome"] == "untested"
    assert "kd_hidden: not decided: fewer than two seeds on a side, no interval (estimate never" in report.summary


def test_a_fine_tune_is_charged_the_pretraining_it_starts_from(tmp_path):
    """finetune starts from the pretrain run's export (model.initialized_from): its time and money to
    target include the pretraining, as kd's include the teacher; the amortization counts it once."""
    run_dir = tmp_path / "x"
    pretrain = training_record("pretrain", "pretrain", 0, 1000.0, 5000, 0.9, model="base")
    pretrain["model"]["export_path"] = str(run_dir / "runs" / "pretrain" / "model")
    write_record(run_dir / "runs" / "pretrain", pretrain)
    finetune = training_record("finetune", "finetune", 0, 200.0, 300, 0.4, model="base")
    finetune["model"]["initialized_from"] = pretrain["model"]["export_path"]
    write_record(run_dir / "runs" / "finetune", finetune)
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 0, 900.0, 600, 0.4))
    write_record(
        run_dir / "runs" / "teacher", training_record("teacher", "scratch", 0, 2000.0, 300, 0.3, model="teacher")
    )
    write_record(run_dir / "runs" / "kd_logits", training_record("kd_logits", "kd_logits", 0, 100.0, 300, 0.4))
    report = build_report(run_dir, plots=False)
    rows = read_table((run_dir / "report" / "report.md").read_text(), "Time to target")
    alone = next(p["wall_s"] for p in finetune["learning_curve"] if p["val_wer"] <= 0.5)
    assert number(rows["finetune"]["student alone s"]) == pytest.approx(alone)
    assert number(rows["finetune"]["s"]) == pytest.approx(alone + 1000.0)  # + the pretraining's train s
    assert number(rows["scratch"]["s"]) == number(rows["scratch"]["student alone s"])  # a random start: nothing
    finetune_group = next(g for g in report.data["groups"] if g["group"] == "finetune")
    assert finetune_group["teacher_charge"]["parts"] == ["training of the model it starts from (run pretrain)"]
    assert finetune_group["teacher_charge"]["cost"] == pytest.approx(pretrain["cost"]["total"])
    (row,) = report.data["amortization"]
    assert row["baseline"] == "finetune" and row["baseline_once"] == pytest.approx(pretrain["cost"]["total"])
    teacher_cost = row["teacher_training_cost"]
    expected = students_to_break_even(teacher_cost, row["baseline_once"], row["baseline_cost"] - row["student_cost"])
    assert row["break_even_students"] == expected
    assert "training of the model it starts from (run pretrain)" in (run_dir / "report" / "report.md").read_text()


def test_without_a_target_the_amortization_compares_normal_methods_at_least_as_good(tmp_path):
    """Whole-run basis: the cheapest normal method whose final quality is at least the student's; a
    cheaper but worse one is not the same quality. None as good: said so, no break-even."""
    run_dir = tmp_path / "x"
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 0, 100.0, 300, 0.5, target=None))
    write_record(
        run_dir / "runs" / "kd_logits", training_record("kd_logits", "kd_logits", 0, 300.0, 300, 0.3, target=None)
    )
    (row,) = build_report(run_dir, plots=False).data["amortization"]
    assert row["baseline"] is None and row["basis"] == "whole run; no normal method as good"
    summary = build_report(run_dir, plots=False).summary
    assert "kd_logits: no normal method of this size here ended at test wer 0.3 or lower: no cheaper way" in summary
    write_record(
        run_dir / "runs" / "finetune", training_record("finetune", "finetune", 0, 600.0, 300, 0.25, target=None)
    )
    (row,) = build_report(run_dir, plots=False).data["amortization"]
    assert row["baseline"] == "finetune" and row["basis"] == "whole run"  # not scratch: cheaper, but wer 0.5


def test_runs_of_different_tasks_are_never_ranked_together(tmp_path):
    run_dir = tmp_path / "x"
    for label, wer, task in (("g2p_a", 0.4, "g2p_cmudict"), ("g2p_b", 0.3, "g2p_cmudict"), ("n2w", 0.1, "num2words")):
        for seed in range(3):
            record = training_record(label, "scratch", seed, 100.0, 300, wer + 0.01 * seed, group=label)
            record["data"]["task"] = task
            write_record(run_dir / "sweep" / f"{label}-seed{seed}", record)
    report = build_report(run_dir, plots=False)
    (g2p,) = [v for v in report.data["verdicts"] if "g2p_cmudict" in v["size_class"]]
    assert g2p["groups"] == ["g2p_a", "g2p_b"] and g2p["best_final_quality"]["winner"] == "g2p_b"
    (n2w,) = [v for v in report.data["verdicts"] if "num2words" in v["size_class"]]
    assert n2w["groups"] == ["n2w"] and n2w["best_final_quality"] is None  # its 0.1 is not a win over g2p
    assert "g2p_b: test wer 0.31" in report.summary and "n2w: test wer" not in report.summary.split("not ranked")[0]


def test_relative_target_uses_the_teachers_test_quality(experiment):
    report = build_report(experiment, target_relative=0.95, plots=False)
    value = 0.30 / 0.95
    assert report.data["target"]["op"] == "<=" and report.data["target"]["value"] == pytest.approx(value)
    scratch = next(g for g in report.data["groups"] if g["group"] == "scratch")
    # the curves fall linearly (wer = 1 - step / (2 reach)): wer <= value at step 2 (1 - value) reach
    expected = [train_s * 2 * (1 - value) * reach / 1000 for _, _, _, train_s, reach, _ in STUDENTS[:2]]
    assert scratch["to_target"]["to target s"]["mean"]["mean"] == pytest.approx(statistics.mean(expected))


def test_relative_target_refused_without_a_teacher_run(tmp_path):
    run_dir = tmp_path / "x"
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 0, 500.0, 300, 0.4))
    with pytest.raises(UserError, match="no run record here trained the teacher.*absolute --target"):
        build_report(run_dir, target_relative=0.95, plots=False)


def test_target_override_and_bad_targets(experiment):
    report = build_report(experiment, target="wer <= 0.2", plots=False)
    kd = next(g for g in report.data["groups"] if g["group"] == "kd_logits")
    assert report.data["target"]["source"] == "--target" and kd["reached"] == 2
    with pytest.raises(UserError, match="lower-is-better"):
        build_report(experiment, target="wer >= 0.2", plots=False)
    with pytest.raises(UserError, match="not both"):
        build_report(experiment, target="wer <= 0.2", target_relative=0.9, plots=False)


def test_never_and_partly_reached_groups_come_last(experiment):
    for seed, reach in ((0, 900), (1, 5000)):  # lora: one seed reaches wer <= 0.5 at step 900, one never
        write_record(
            experiment / "sweep" / f"lora_seed{seed}",
            training_record("lora", "lora", seed, 100.0, reach, 0.6, group="lora"),
        )
    write_record(experiment / "runs" / "partial", training_record("partial", "partial", 0, 50.0, 5000, 0.7))
    report = build_report(experiment, plots=False)
    rows = read_table((experiment / "report" / "report.md").read_text(), "Time to target")
    # lora's one reaching run costs 0.09 (cheapest), but a group every run reached comes first
    assert list(rows) == ["scratch", "kd_logits", "lora", "partial", "teacher"]
    assert rows["lora"]["reached"] == "1/2" and rows["partial"]["reached"] == "0/1"
    # censored, not dropped: lora is not shown as fast as its one lucky seed; the runs that never reached
    # it spent 0.1 (lora seed 1) and 0.05 (partial)
    assert rows["lora"]["USD"] == "> 0.1" and rows["partial"]["USD"] == "> 0.05"
    cheapest = report.data["verdicts"][0]["cheapest"]
    # scratch leads among the groups every run brought to the target, but lora's runs (0.09, and more than
    # 0.1) are not dearer, and partial's one run cannot be tested: no winner is named
    assert cheapest["leader"] == "scratch" and cheapest["winner"] is None
    assert cheapest["tests"]["lora"]["difference"] > 0 and cheapest["tests"]["partial"]["p"] is None
    assert report.data["winners"]["cost_to_target"] is None
    kd = report.data["amortization"][0]
    assert (
        kd["baseline"] == "scratch" and kd["break_even_students"] == 12
    )  # not lora, which one seed never brought there


def test_records_that_disagree_on_the_target_need_one(experiment):
    write_record(experiment / "runs" / "lora", training_record("lora", "lora", 0, 100.0, 300, 0.6, target="wer <= 0.3"))
    with pytest.raises(UserError, match="disagree on the target.*--target") as err:
        build_report(experiment, plots=False)
    assert "runs/lora/record.json" in str(err.value)  # the record that holds the odd target
    assert build_report(experiment, target="wer <= 0.3", plots=False).data["target"]["value"] == 0.3


# -------------------------------------------------------------------------------------- errors


def test_bad_json_names_the_file(experiment):
    bad = experiment / "runs" / "broken" / "record.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(UserError, match=str(bad)):
        build_report(experiment, plots=False)


def test_incomplete_record_names_the_file_and_the_field(tmp_path):
    record = training_record("scratch", "scratch", 0, 500.0, 300, 0.4)
    del record["learning_curve"]
    write_record(tmp_path / "x" / "runs" / "scratch", record)
    with pytest.raises(UserError, match=r"runs/scratch/record.json: the run record has no learning_curve"):
        build_report(tmp_path / "x", plots=False)


def test_empty_folder_says_what_to_run(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(UserError, match=r"no run records under .*x: run `ray-t2t train` or `ray-t2t run` first"):
        build_report(tmp_path / "x", plots=False)
    with pytest.raises(UserError, match="no experiment folder"):
        build_report(tmp_path / "missing", plots=False)


def test_failed_runs_are_left_out_and_listed(experiment):
    write_record(
        experiment / "runs" / "lora",
        {"label": "lora", "method": "lora", "run_hash": "h", "status": "failed", "reason": "RuntimeError: boom"},
    )
    build_report(experiment, plots=False)
    markdown = (experiment / "report" / "report.md").read_text()
    assert "lora" not in read_table(markdown, "Comparison")
    assert "## Left out" in markdown and "RuntimeError: boom" in markdown


# ---------------------------------------------------------------------------------- plots and CLI


def test_plots_are_png_files_and_inline_in_the_html(experiment):
    report = build_report(experiment, plots=True)
    folder = experiment / "report"
    for name in ("pareto_device_hours.png", "pareto_cost.png", "learning_curves.png"):
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert folder / name in report.files
    assert "![" in (folder / "report.md").read_text()
    assert (folder / "report.html").read_text().count("data:image/png;base64,") == 3
    assert not list(folder.glob(".*"))  # no staging files left behind


def test_cli_report(experiment, tmp_path, capsys):
    assert main(["report", str(experiment), "--no-plots", "--confidence", "0.9"]) == 0
    out = capsys.readouterr().out
    # at 90% confidence the 0.05 gap over two seeds a side is significant (Welch p = 0.07)
    assert "fastest to target" in out and "best final quality  kd_logits: test wer 0.41 ± 0.063; significantly" in out
    assert not list((experiment / "report").glob("*.png"))
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "ray-t2t report: error: no run records under" in err and "Traceback" not in err
    assert main(["report", str(experiment), "--target", "wer < 1"]) == 2
    assert "is not of the form" in capsys.readouterr().err


# ------------------------------------------------------------------------ the verdict's rules


def three_seeds(run_dir, label, method, train_s, reaches, wers, **kwargs):
    """Sweep trials of one group, a seed each: train_s, reach step and test wer per seed."""
    for seed, (seconds, reach, wer) in enumerate(zip(train_s, reaches, wers)):
        write_record(
            run_dir / "sweep" / f"{label}-seed{seed}",
            training_record(label, method, seed, seconds, reach, wer, group=label, **kwargs),
        )


def test_a_student_of_another_size_is_shown_apart_and_never_ranked(tmp_path):
    """sft exporting 2.8x the student's parameters is faster here, but it is another model: the verdict
    ranks scratch and finetune only, and lists sft with its size."""
    run_dir = tmp_path / "x"
    three_seeds(run_dir, "scratch", "scratch", [1000.0, 1010.0, 990.0], [600, 620, 580], [0.45, 0.46, 0.44])
    three_seeds(run_dir, "finetune", "finetune", [1000.0, 1000.0, 1000.0], [800, 820, 790], [0.47, 0.48, 0.47])
    three_seeds(
        run_dir,
        "sft",
        "sft",
        [1000.0, 1000.0, 1000.0],
        [100, 110, 90],
        [0.30, 0.31, 0.29],
        total_params=1_446_976,
        architecture_key="wide",
    )
    report = build_report(run_dir, plots=False, formats=("md",))
    students = report.data["verdicts"][0]
    assert sorted(students["groups"]) == ["finetune", "scratch"] and "0.52M parameters" in students["size_class"]
    assert students["fastest"]["winner"] == "scratch" and students["best_final_quality"]["winner"] == "scratch"
    assert "sft" not in json.dumps(students)
    sft = next(v for v in report.data["verdicts"] if v["groups"] == ["sft"])
    assert sft["fastest"] is None and sft["best_final_quality"] is None  # alone in its class: nothing claimed
    assert next(g for g in report.data["groups"] if g["group"] == "sft")["ranked"] is False
    summary = report.summary
    assert "fastest to target   scratch" in summary
    assert "not ranked (other models): sft (1,446,976 params)" in summary
    markdown = (run_dir / "report" / "report.md").read_text()
    assert "| sft | sft | 1,446,976 |" in markdown.split("### Not ranked: other models", 1)[1]


def test_same_seed_runs_count_once_and_are_listed(tmp_path):
    """A `ray-t2t train` of scratch beside the sweep's scratch trial with the same seed is a rerun, not a
    second replicate."""
    run_dir = tmp_path / "x"
    write_record(
        run_dir / "sweep" / "scratch-seed0",
        training_record("scratch", "scratch", 0, 1000.0, 600, 0.45, group="scratch"),
    )
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 0, 700.0, 400, 0.40))
    report = build_report(run_dir, plots=False, formats=("md",))
    (group,) = report.data["groups"]
    assert group["group"] == "scratch" and group["seeds"] == [0] and len(group["runs"]) == 1
    assert group["figures"]["train s"]["mean"] == 1000.0  # the sweep's trial; the rerun is left out
    (left,) = report.data["left_out"]
    assert left[0].endswith("runs/scratch/record.json") and "seed 0 of scratch is already counted" in left[1]
    # another seed of the same setting is a replicate
    write_record(run_dir / "runs" / "scratch", training_record("scratch", "scratch", 1, 700.0, 400, 0.40))
    (group,) = build_report(run_dir, plots=False, formats=("md",)).data["groups"]
    assert group["seeds"] == [0, 1]


def test_runs_of_one_label_but_other_settings_are_not_replicates(tmp_path):
    run_dir = tmp_path / "x"
    write_record(
        run_dir / "sweep" / "scratch-seed0",
        training_record("scratch", "scratch", 0, 1000.0, 600, 0.45, group="scratch"),
    )
    other = training_record("scratch", "scratch", 1, 500.0, 300, 0.40, group="scratch")
    other["setting_hash"] = "another-learning-rate"
    write_record(run_dir / "sweep" / "scratch-seed1", other)
    groups = build_report(run_dir, plots=False, formats=("md",)).data["groups"]
    assert [(g["group"], g["seeds"]) for g in groups] == [("scratch", [0]), ("scratch #2", [1])]


def test_close_methods_get_no_winner_and_the_figures_are_given(tmp_path):
    run_dir = tmp_path / "x"
    three_seeds(run_dir, "scratch", "scratch", [1000.0] * 3, [500, 650, 560], [0.45, 0.47, 0.44])
    three_seeds(run_dir, "finetune", "finetune", [1000.0] * 3, [540, 600, 610], [0.46, 0.44, 0.45])
    report = build_report(run_dir, plots=False, formats=("md",))
    verdict = report.data["verdicts"][0]
    assert verdict["fastest"]["winner"] is None and verdict["fastest"]["leader"] == "scratch"
    assert verdict["best_final_quality"]["winner"] is None
    assert report.data["winners"] == {
        "size_class": verdict["size_class"],
        "time_to_target": None,
        "cost_to_target": None,
        "final_quality": None,
    }
    line = next(line for line in report.summary.splitlines() if "fastest to target" in line)
    assert "no significant difference: scratch 570 ± 188 s vs finetune 583.3 ± 94 s (p = 0.8" in line
    assert (
        "Not significant at this many seeds: fastest to the target; cheapest to the target; best in final "
        "quality." in report.summary
    )


def test_a_group_most_of_whose_seeds_reached_the_target_shows_its_median(tmp_path):
    """2 of 3 seeds reached the target: no mean over the lucky ones; the median with its interval, the
    upper end beyond the run that never reached it, and that interval's coverage (75% from 3 runs)."""
    run_dir = tmp_path / "x"
    three_seeds(run_dir, "scratch", "scratch", [1000.0] * 3, [500, 520, 540], [0.45, 0.46, 0.44])
    three_seeds(run_dir, "lora", "lora", [1000.0] * 3, [300, 5000, 400], [0.6, 0.7, 0.6])
    report = build_report(run_dir, plots=False, formats=("md",))
    row = read_table((run_dir / "report" / "report.md").read_text(), "Time to target")["lora"]
    assert row["reached"] == "2/3" and row["s"] == "median 400 [300, > 1000] (75%)"
    lora = next(g for g in report.data["groups"] if g["group"] == "lora")["to_target"]["to target s"]
    assert lora["values"] == [300.0, None, 400.0] and lora["mean"]["mean"] is None
    # lora may not lead (not every seed reached), and scratch is not significantly faster than lora's
    # runs counted at what they spent (300, 1000, 400): no winner
    fastest = report.data["verdicts"][0]["fastest"]
    assert fastest["leader"] == "scratch" and fastest["winner"] is None


def test_break_even_is_stated_with_its_interval_when_the_saving_is_significant(tmp_path):
    run_dir = tmp_path / "x"
    write_record(
        run_dir / "runs" / "teacher",
        training_record("teacher", "scratch", 0, 3000.0, 300, 0.3, model="teacher", total_params=1_040_000),
    )
    # scratch reaches the target for 0.60 each (sd 0.01), kd_logits for 0.30 (sd 0.01): a saving of 0.30
    three_seeds(run_dir, "scratch", "scratch", [1000.0] * 3, [590, 600, 610], [0.45, 0.46, 0.44])
    three_seeds(
        run_dir,
        "kd_logits",
        "kd_logits",
        [1000.0] * 3,
        [290, 300, 310],
        [0.45, 0.44, 0.45],
        params={"teacher_source": "online"},
    )
    report = build_report(run_dir, plots=False, formats=("md",))
    (row,) = report.data["amortization"]
    result = row["break_even"]
    assert row["basis"] == "to target" and result["outcome"] == "pays_off"
    assert result["saving"]["difference"] == pytest.approx(0.30)
    assert result["point"] == 11  # teacher 3.0 / 0.30 = 10, and 10 students only break even
    assert result["low"] <= 11 <= result["high"] and result["high"] is not None
    line = next(line for line in report.summary.splitlines() if "teacher pays off" in line)
    assert f"kd_logits: from 11 students on (95% interval: {result['low']} to {result['high']};" in line
    assert "kd_logits's teacher pays off from 11 students on" in report.summary


def test_a_method_lower_on_the_seeds_that_reached_but_not_on_all_is_not_called_the_same(tmp_path):
    """scratch reaches the target sooner than finetune on 4 of its 5 seeds and never on the fifth:
    finetune leads among the methods whose every seed reached it, scratch cannot be named, and the
    line says so rather than "no significant difference"."""
    run_dir = tmp_path / "x"
    for seed, reach in enumerate([500, 510, 520, 505, 5000]):  # 600 s runs: 300-312 s to target, or more than 600
        write_record(
            run_dir / "sweep" / f"scratch-seed{seed}",
            training_record("scratch", "scratch", seed, 600.0, reach, 0.45, group="scratch"),
        )
    for seed, reach in enumerate([700, 720, 710, 705, 715]):
        write_record(
            run_dir / "sweep" / f"finetune-seed{seed}",
            training_record("finetune", "finetune", seed, 1000.0, reach, 0.45, group="finetune"),
        )
    report = build_report(run_dir, plots=False, formats=("md",))
    fastest = report.data["verdicts"][0]["fastest"]
    assert fastest["leader"] == "finetune" and fastest["winner"] is None
    line = next(line for line in report.summary.splitlines() if "fastest to target" in line)
    assert "not decided: finetune leads among the methods whose every seed reached the target" in line
    assert "but scratch was lower on its seeds (median 306 [300, > 600] (94%) s (4/5 reached), p = 0.00" in line

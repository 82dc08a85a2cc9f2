"""Sweeps through real Ray: Tune trials driving TorchTrainers (each trial ~20 s of fixed Ray Train
overhead on a 2-core machine), or training in their own processes (scaling.local_mode); a driver
SIGKILLed after the first trial finished and rerun, then the report over its records; a local-mode
run SIGKILLed mid-training and rerun."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time

import pytest
import yaml

from conftest import TINY_T5, minimal_config

pytestmark = pytest.mark.ray


def finished_trials(folder):
    done = {}
    for path in folder.glob("*/record.json"):
        record = json.loads(path.read_text())
        if record.get("status") == "finished":
            done[path.parent.name] = path.stat().st_mtime_ns
    return done


def test_sweep_survives_its_driver_and_the_report_lists_every_trial(tmp_path, ray_t2t_bin):
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}, {"name": "scratch", "label": "scratch_fast"}])
    raw["run"] = {"name": "sweep", "storage_path": str(tmp_path / "runs"), "checkpoint_every_n_steps": 40}
    raw["data"] = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}
    raw["models"] = {"student": TINY_T5}
    raw["training"] = {"batch_size": 32, "max_steps": 40, "learning_rate": 3e-3, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 20, "metric": "per", "target": "per <= 0.99"}
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}}
    # one trial at a time: the trials after the first run in the process of the one before (tune.reuse_actors)
    raw["tune"] = {
        "seeds": [0, 1],
        "space": {"scratch_fast": {"training.learning_rate": [1e-2]}},
        "max_concurrent_trials": 1,
    }
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    trials = tmp_path / "runs" / "sweep" / "sweep"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    driver = subprocess.Popen(
        [ray_t2t_bin, "sweep", str(config)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 400
    while not finished_trials(trials) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)  # the driver, the local Ray and every trial with it
    driver.wait()
    kept = finished_trials(trials)
    assert len(kept) == 1, f"the kill did not land mid-sweep: {kept}"

    done = subprocess.run(
        [ray_t2t_bin, "-v", "sweep", str(config)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "resuming the sweep" in done.stdout and "4 of 4 trial(s) finished" in done.stdout
    after = finished_trials(trials)
    assert len(after) == 4
    # the rerun's 3 trials, one at a time, all in one Tune trial process (tune.reuse_actors)
    started = re.findall(r"_trial pid=(\d+)\)\S*\s+(\S+): training on Ray", done.stdout + done.stderr)
    assert sorted(name for _, name in started) == sorted(set(after) - set(kept))
    assert len({pid for pid, _ in started}) == 1, f"the trials did not share one process: {started}"
    assert all(after[name] == mtime for name, mtime in kept.items())  # finished trials were not rerun
    records = [json.loads((trials / name / "record.json").read_text()) for name in after]
    assert sorted((r["group"], r["seed"]) for r in records) == [
        ("scratch", 0),
        ("scratch", 1),
        ("scratch_fast (training.learning_rate=0.01)", 0),
        ("scratch_fast (training.learning_rate=0.01)", 1),
    ]
    for record in records:
        curve = record["learning_curve"]
        assert curve[-1]["val_loss"] < curve[0]["val_loss"] and record["steps"]["done"] == 40
    fast = [r for r in records if r["label"] == "scratch_fast"]
    assert all(r["params"]["name"] == "scratch" for r in fast) and len({r["seed"] for r in fast}) == 2

    report = subprocess.run(
        [ray_t2t_bin, "report", str(tmp_path / "runs" / "sweep")], capture_output=True, text=True, timeout=300
    )
    assert report.returncode == 0, report.stderr[-3000:]
    markdown = (tmp_path / "runs" / "sweep" / "report" / "report.md").read_text()
    assert "scratch_fast (training.learning_rate=0.01)" in markdown and "| scratch " in markdown


def test_run_pipeline_killed_mid_sweep_reuses_every_finished_stage(tmp_path, ray_t2t_bin):
    """`ray-t2t run` SIGKILLed (with its local Ray) once a sweep trial finished, then rerun: the teacher,
    its soft targets and the finished trial are reused, the rest completes, and the report is written.
    In local mode, as the quickstart runs: the teacher trains in the driver, the trials in theirs."""
    raw = minimal_config(
        tmp_path,
        methods=[
            {"name": "scratch", "label": "teacher", "model": "teacher", "max_steps": 60},
            {"name": "scratch"},
            {"name": "kd_logits", "top_k": 8},
        ],
    )
    raw["run"] = {"name": "pipe", "storage_path": str(tmp_path / "runs"), "checkpoint_every_n_steps": 40}
    raw["data"] = {"split_sizes": {"train": 1000, "validation": 64, "test": 64}}
    raw["models"] = {"student": TINY_T5, "teacher": TINY_T5}
    raw["soft_targets"] = {"top_k": 8, "rows_per_shard": 500}
    raw["training"] = {"batch_size": 32, "max_steps": 40, "learning_rate": 3e-3, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 20, "metric": "per", "target": "per <= 0.99"}
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}, "local_mode": True}
    raw["tune"] = {"max_concurrent_trials": 1, "seeds": [0]}
    config = tmp_path / "pipe.yaml"
    config.write_text(yaml.safe_dump(raw))
    experiment = tmp_path / "runs" / "pipe"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    driver = subprocess.Popen(
        [ray_t2t_bin, "run", str(config)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 400
    while not finished_trials(experiment / "sweep") and driver.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    kept = finished_trials(experiment / "sweep")
    assert len(kept) == 1, f"the kill did not land mid-sweep: {kept}"
    teacher_record = (experiment / "runs" / "teacher" / "record.json").stat().st_mtime_ns

    done = subprocess.run([ray_t2t_bin, "run", "-v", str(config)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "teacher: reusing the finished run" in done.stdout
    assert "soft targets: reusing" in done.stdout and "resuming the sweep" in done.stdout
    assert "training in this process (Ray Train's local mode)" in done.stdout + done.stderr
    assert (experiment / "runs" / "teacher" / "record.json").stat().st_mtime_ns == teacher_record
    after = finished_trials(experiment / "sweep")
    assert len(after) == 2 and all(after[name] == mtime for name, mtime in kept.items())
    assert (experiment / "report" / "report.md").is_file() and "best final quality" in done.stdout


def test_optuna_sweep_searches_with_the_first_seed_then_trains_the_best_point_with_the_others(tmp_path, ray_t2t_bin):
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}])
    # a relative storage_path: trials must write where the command runs, not in Tune's trial folders
    raw["run"] = {"name": "optuna", "storage_path": "runs", "checkpoint_every_n_steps": 30}
    raw["data"] = {"split_sizes": {"train": 1000, "validation": 64, "test": 64}}
    raw["models"] = {"student": TINY_T5}
    raw["training"] = {"batch_size": 32, "max_steps": 40, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 20, "metric": "per", "target": "per <= 0.99"}  # checkpoints at 30: no val
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}}
    raw["tune"] = {
        "search": "optuna",
        "num_samples": 2,
        "seeds": [0, 1],
        "space": {"scratch": {"training.learning_rate": {"loguniform": [1e-3, 1e-2]}}},
    }
    config = tmp_path / "optuna.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}

    done = subprocess.run(
        [ray_t2t_bin, "sweep", str(config)], env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 Optuna trial(s) with seed 0" in done.stdout and "trained with seeds 1" in done.stdout
    trials = tmp_path / "runs" / "optuna" / "sweep"
    records = [json.loads((trials / name / "record.json").read_text()) for name in finished_trials(trials)]
    assert len(records) == 3
    searched = [r for r in records if r["seed"] == 0]
    rates = [r["trial"]["params"]["training.learning_rate"] for r in searched]
    assert len(set(rates)) == 2 and all(1e-3 <= lr <= 1e-2 for lr in rates)
    best = min(searched, key=lambda r: r["final"]["validation"]["per"])
    (rerun,) = [r for r in records if r["seed"] == 1]
    assert rerun["trial"]["params"] == best["trial"]["params"] and rerun["group"] == best["group"]
    for record in records:
        assert (
            record["steps"]["done"] == 40
            and record["learning_curve"][-1]["val_loss"] < record["learning_curve"][0]["val_loss"]
        )


def test_a_local_mode_sweep_with_asha_stops_the_weak_trial_and_restarts_a_failed_one(tmp_path, ray_t2t_bin):
    """scaling.local_mode: each trial trains in its Tune trial's process (Ray Train's local mode) and
    reports to Tune itself. One trial at a time, the strong learning rate first: ASHA keeps it (its
    records are written: no rung at the last step) and stops the weak one at step 20 (Tune saw its
    report). The first trial fails once at step 30 and, with run.max_failures 1, restarts in its
    process from its checkpoint at step 20."""
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}])
    raw["run"] = {
        "name": "asha",
        "storage_path": str(tmp_path / "runs"),
        "checkpoint_every_n_steps": 20,
        "max_failures": 1,
    }
    raw["data"] = {"split_sizes": {"train": 1000, "validation": 64, "test": 64}}
    raw["models"] = {"student": TINY_T5}
    raw["training"] = {"batch_size": 32, "max_steps": 40, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 20, "metric": "per"}
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}, "local_mode": True}
    raw["tune"] = {
        "space": {"scratch": {"training.learning_rate": [1e-2, 1e-6]}},
        "scheduler": "asha",
        "max_concurrent_trials": 1,
        "seeds": [0],
    }
    config = tmp_path / "asha.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["RAY_T2T_FAIL_ONCE_AT_STEP"] = f"30:{tmp_path / 'failed_once'}"

    done = subprocess.run(
        [ray_t2t_bin, "-v", "sweep", str(config)], env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    output = done.stdout + done.stderr
    assert "1 of 2 trial(s) finished" in output and re.search(r"scratch-\S+-seed0 +stopped", output)
    assert "training in this process (Ray Train's local mode)" in output
    assert (tmp_path / "failed_once").exists() and "restart 1 of 1 from its last checkpoint" in output
    trials = tmp_path / "runs" / "asha" / "sweep"
    (name,) = finished_trials(trials)
    record = json.loads((trials / name / "record.json").read_text())
    assert record["trial"]["params"] == {"training.learning_rate": 1e-2}
    assert record["resumes"] == 1 and [p["step"] for p in record["learning_curve"]] == [0, 20, 40]
    assert record["learning_curve"][-1]["val_loss"] < record["learning_curve"][0]["val_loss"]


def test_a_local_mode_run_whose_driver_is_killed_resumes_from_its_own_checkpoint(tmp_path, ray_t2t_bin):
    """scaling.local_mode on one machine: `ray-t2t train` trains in the driver and starts no Ray for it.
    SIGKILLed once its first checkpoint is written, then rerun: the run resumes from the newest
    checkpoint the killed driver left (each written whole) and continues its learning curve."""
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}])
    raw["run"] = {"name": "killed", "storage_path": str(tmp_path / "runs"), "checkpoint_every_n_steps": 40}
    raw["data"] = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}
    raw["models"] = {"student": TINY_T5}
    raw["training"] = {"batch_size": 32, "max_steps": 400, "learning_rate": 3e-3, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 200, "metric": "per"}
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}, "local_mode": True}
    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    checkpoints = tmp_path / "runs" / "killed" / "train" / "scratch" / "local_checkpoints"

    driver = subprocess.Popen(
        [ray_t2t_bin, "train", str(config), "method=scratch"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not list(checkpoints.glob("step_*")) and driver.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    os.killpg(driver.pid, signal.SIGKILL)
    driver.wait()
    left = sorted(p.name for p in checkpoints.glob("step_*"))
    assert left and left[-1] < "step_000000400", f"the kill did not land mid-training: {left}"
    record = tmp_path / "runs" / "killed" / "runs" / "scratch" / "record.json"
    assert not record.exists()

    done = subprocess.run(
        [ray_t2t_bin, "-v", "train", str(config), "method=scratch"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    step = int(left[-1].split("_")[1])
    assert f"resumed from checkpoint at step {step} (resume 1)" in done.stdout + done.stderr
    assert "Started a local Ray instance" not in done.stdout + done.stderr
    result = json.loads(record.read_text())
    assert result["resumes"] == 1 and result["steps"]["done"] == 400 and result["status"] == "finished"
    assert [p["step"] for p in result["learning_curve"]] == [0, 200, 400]  # the killed run's points kept, once each
    assert result["learning_curve"][-1]["val_loss"] < result["learning_curve"][-2]["val_loss"]
    assert sorted(p.name for p in checkpoints.glob("step_*")) == ["step_000000360", "step_000000400"]

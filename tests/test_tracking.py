"""Experiment tracking: a training run logs its config, learning curve, final metrics, time and cost
from rank 0 to a real MLflow server on 127.0.0.1, to W&B (offline) and to TensorBoard event files;
the report goes in too; a server out of reach fails before any work."""

from __future__ import annotations

import glob
import json
import struct
import time
from pathlib import Path

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import UserError

from conftest import minimal_config


def tensorboard_events(folder: Path) -> list:
    """Every Event of the TFRecord event files under `folder` (length, crc, data, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event()
            event.ParseFromString(data[offset + 12 : offset + 12 + length])
            events.append(event)
            offset += 12 + length + 4
    return events


def wandb_records(path: Path) -> list:
    """The records of an offline W&B run file: a 7-byte header, then LevelDB log blocks of 32 KiB
    (each record: crc 4, length 2, type 1, data; FULL = 1, FIRST = 2, MIDDLE = 3, LAST = 4)."""
    from wandb.proto import wandb_internal_pb2

    data, records, pending = path.read_bytes(), [], b""
    block, offset = 32 * 1024, 7
    while offset + 7 <= len(data):
        left = block - offset % block
        if left < 7:  # a block's tail too short for a header is padding
            offset += left
            continue
        length, kind = struct.unpack("<HB", data[offset + 4 : offset + 7])
        chunk = data[offset + 7 : offset + 7 + length]
        offset += 7 + length
        if kind == 0 and length == 0:
            continue
        pending += chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def key(item: object) -> str:
    return item.key or "/".join(item.nested_key)


def tracked_config(tmp_path, mlflow_uri: str, **sections) -> dict:
    raw = minimal_config(
        tmp_path,
        methods=[{"name": "scratch"}],
        training={"batch_size": 32, "max_steps": 20, "warmup_steps": 2},
        eval={"every_n_steps": 10},
        scaling={"local_mode": True},
        tracking={
            "tensorboard": True,
            "mlflow": {"tracking_uri": mlflow_uri, "experiment": f"tracking-{tmp_path.name}"},
            "wandb": {"project": "ray_t2t_tests", "mode": "offline"},
        },
        **sections,
    )
    return raw


@pytest.fixture
def wandb_offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)


def test_a_training_run_logs_to_every_backend(tmp_path, mlflow_server, wandb_offline):
    from mlflow import MlflowClient

    from ray_t2t.training.launcher import train

    cfg = validate_config(tracked_config(tmp_path, mlflow_server))
    record = train(cfg, log=lambda message: None)
    curve, run_dir = record["learning_curve"], tmp_path / "runs" / "test" / "runs" / "scratch"
    steps = [point["step"] for point in curve]
    ids = json.loads((run_dir / "tracking.json").read_text())
    assert set(ids) == {"mlflow", "wandb"}

    # MLflow: one finished run named after the run, with the config, the curve and the final figures
    client = MlflowClient(tracking_uri=mlflow_server)
    run = client.get_run(ids["mlflow"])
    assert run.info.status == "FINISHED" and run.info.run_name == "scratch"
    assert run.data.params["method.name"] == "scratch" and run.data.params["training.max_steps"] == "20"
    history = client.get_metric_history(ids["mlflow"], "val_loss")
    assert [m.step for m in sorted(history, key=lambda m: m.step)] == steps
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([p["val_loss"] for p in curve])
    metrics = run.data.metrics
    assert metrics["final.test.wer"] == pytest.approx(record["final"]["test"]["wer"])
    assert metrics["final.cost"] == pytest.approx(record["cost"]["total"])
    assert metrics["final.device_hours"] == pytest.approx(record["device_seconds"] / 3600)

    # TensorBoard: the curve as scalars, the config as text, the final figures
    events = tensorboard_events(run_dir / "tensorboard")
    scalars = [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value if v.HasField("simple_value")]
    assert [s for s, tag, _ in scalars if tag == "val_loss"] == steps
    assert any(tag == "final/test/wer" for _, tag, _ in scalars)
    assert any(v.tag.startswith("config") for e in events for v in e.summary.value)

    # W&B (offline, under the run folder for `wandb sync`): the config, one history row per point, the summary
    (path,) = glob.glob(str(run_dir / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = wandb_records(Path(path))
    kinds = [(r.WhichOneof("record_type"), r) for r in records]
    history = [{key(i): json.loads(i.value_json) for i in r.history.item} for kind, r in kinds if kind == "history"]
    assert [row["_step"] for row in history] == steps
    assert [row["val_loss"] for row in history] == pytest.approx([p["val_loss"] for p in curve])
    summary = {key(i): i.value_json for kind, r in kinds if kind == "summary" for i in r.summary.update}
    assert json.loads(summary["final/test/wer"]) == pytest.approx(record["final"]["test"]["wer"])
    config = {key(i): i.value_json for kind, r in kinds if kind == "run" for i in r.run.config.update}
    assert json.loads(config["method"])["name"] == "scratch"
    assert not any(kind == "output_raw" for kind, _ in kinds)  # ray_t2t keeps the console; W&B does not take it


def test_a_resumed_run_continues_its_mlflow_run(tmp_path, mlflow_server):
    from ray_t2t.config.sections import TrackingSection
    from ray_t2t.tracking import Tracker

    tracking = TrackingSection(mlflow={"tracking_uri": mlflow_server, "experiment": f"resume-{tmp_path.name}"})
    first = Tracker.start(tracking, "x", "scratch", tmp_path, {"a": 1})
    first.log({"val_loss": 2.0}, step=10)
    again = Tracker.start(tracking, "x", "scratch", tmp_path, {"a": 1})  # the process restarted from a checkpoint
    again.log({"val_loss": 1.0}, step=20)
    again.finish({"test": {"loss": 1.0}})
    assert first.backends[0].run_id == again.backends[0].run_id
    history = again.backends[0].client.get_metric_history(first.backends[0].run_id, "val_loss")
    assert sorted((m.step, m.value) for m in history) == [(10, 2.0), (20, 1.0)]


def test_a_tracking_failure_does_not_stop_training(tmp_path, capsys):
    from ray_t2t.tracking import Tracker

    class Broken:
        kind, run_id = "mlflow", None

        def log(self, values, step):
            raise ConnectionError("the server went away")

    tracker = Tracker([Broken()])
    tracker.log({"val_loss": 1.0}, step=1)  # no exception
    tracker.log({"val_loss": 0.5}, step=2)
    assert tracker.backends == [] and capsys.readouterr().err.count("the server went away") == 1


def test_a_server_out_of_reach_fails_before_any_work(tmp_path, capsys, monkeypatch):
    from ray_t2t.cli import main

    monkeypatch.chdir(tmp_path)
    started = time.perf_counter()
    config = tmp_path / "experiment.yaml"
    import yaml

    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}], scaling={"local_mode": True})
    raw["tracking"] = {"mlflow": {"tracking_uri": "http://127.0.0.1:9"}}
    config.write_text(yaml.safe_dump(raw))
    assert main(["train", str(config)]) == 2
    assert time.perf_counter() - started < 60
    err = capsys.readouterr().err
    assert "tracking.mlflow.tracking_uri='http://127.0.0.1:9' does not answer" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_credentials_in_a_tracking_uri_are_refused(tmp_path):
    raw = minimal_config(tmp_path, tracking={"mlflow": {"tracking_uri": "https://user:s3cret@mlflow.example"}})
    with pytest.raises(UserError) as err:
        validate_config(raw)
    assert "holds no credentials" in str(err.value) and "s3cret" not in str(err.value)


def test_a_missing_package_is_named(tmp_path, monkeypatch):
    import importlib.util

    from ray_t2t.config.sections import TrackingSection
    from ray_t2t.tracking import check_tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(UserError, match=r"tracking.wandb needs the wandb package: pip install 'ray-t2t\[tracking\]'"):
        check_tracking(TrackingSection(wandb={"project": "p"}))


def test_the_report_goes_to_every_backend(tmp_path, mlflow_server, wandb_offline):
    from mlflow import MlflowClient
    from test_report import training_record

    from ray_t2t.config.sections import TrackingSection
    from ray_t2t.ledger import write_record
    from ray_t2t.reporting import build_report
    from ray_t2t.tracking import log_report

    folder = tmp_path / "experiment"
    for seed in range(2):
        write_record(folder / "sweep" / f"a{seed}", training_record("a", "scratch", seed, 100.0 + seed, 300, 0.4))
        write_record(folder / "sweep" / f"b{seed}", training_record("b", "scratch", seed, 200.0 + seed, 500, 0.5))
    report = build_report(folder, plots=False)
    experiment = f"report-{tmp_path.name}"
    tracking = TrackingSection(
        tensorboard=True,
        mlflow={"tracking_uri": mlflow_server, "experiment": experiment},
        wandb={"project": "ray_t2t_tests", "mode": "offline"},
    )
    log_report(tracking, "experiment", folder, report)

    client = MlflowClient(tracking_uri=mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert run.info.run_name == "report" and run.info.status == "FINISHED"
    names = {a.path for a in client.list_artifacts(run.info.run_id)} | {
        a.path for a in client.list_artifacts(run.info.run_id, "report")
    }
    assert {"verdict.txt", "report/report.md", "report/report.html"} <= names
    texts = [v for e in tensorboard_events(folder / "tensorboard" / "report") for v in e.summary.value]
    assert any(v.tag.startswith("verdict") for v in texts)
    assert glob.glob(str(folder / "wandb" / "offline-run-*" / "files" / "report.md"))


@pytest.mark.ray
def test_a_sweep_logs_its_trials_through_tunes_callbacks(tmp_path, mlflow_server, ray_t2t_bin):
    """Each trial becomes one MLflow run (Ray Tune's MLflowLoggerCallback) holding what the trial
    reported: the validation metrics at every evaluation; the training loop itself logs nothing more."""
    import os
    import subprocess

    import yaml
    from mlflow import MlflowClient

    raw = tracked_config(tmp_path, mlflow_server, tune={"seeds": [0, 1], "max_concurrent_trials": 1})
    del raw["tracking"]["wandb"]  # W&B's callback is Ray's, and offline it would write outside the run folder
    experiment = raw["tracking"]["mlflow"]["experiment"]
    config = tmp_path / "sweep.yaml"
    config.write_text(yaml.safe_dump(raw))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run([ray_t2t_bin, "sweep", str(config)], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(tracking_uri=mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 2, [r.info.run_name for r in runs]
    for run in runs:
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_loss")
        assert len(history) >= 2  # the evaluations at steps 10 and 20 (and the report of the final one)
    assert not list((tmp_path / "runs" / "test" / "sweep").glob("*/tracking.json"))  # trials: Tune's callbacks only

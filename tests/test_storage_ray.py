"""A whole comparison (`ray-t2t run`) with run.storage_path on S3 (moto's server on loopback): the
teacher's training and checkpoints (Ray Train), its soft-target shards (Ray Data replicas), a
distilled student reading them (a Tune trial), and the report all land in the bucket and nowhere on
local disk; rerunning the command reuses every stage from the bucket."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import yaml

from ray_t2t.storage import location

from conftest import TINY_T5, minimal_config

pytestmark = pytest.mark.ray


def test_a_comparison_on_s3_writes_only_to_the_bucket_and_resumes_from_it(tmp_path, s3_bucket, ray_t2t_bin):
    raw = minimal_config(
        tmp_path,
        methods=[
            {"name": "scratch", "label": "teacher", "model": "teacher", "max_steps": 40},
            {"name": "kd_logits", "top_k": 8},
        ],
    )
    raw["run"] = {"name": "s3pipe", "storage_path": f"{s3_bucket}/runs", "checkpoint_every_n_steps": 20}
    raw["data"] = {"split_sizes": {"train": 600, "validation": 32, "test": 32}}
    raw["models"] = {"student": TINY_T5, "teacher": TINY_T5}
    raw["soft_targets"] = {"top_k": 8, "rows_per_shard": 200, "replicas": 2}
    raw["training"] = {"batch_size": 32, "max_steps": 30, "learning_rate": 3e-3, "warmup_steps": 4}
    raw["eval"] = {"every_n_steps": 15, "metric": "per"}
    raw["scaling"] = {"num_workers": 1, "resources_per_worker": {"CPU": 1}}
    raw["tune"] = {"max_concurrent_trials": 1, "seeds": [0]}
    config = tmp_path / "s3.yaml"
    config.write_text(yaml.safe_dump(raw))
    workdir = tmp_path / "work"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # the fixture's AWS_* point at the server

    done = subprocess.run(
        [ray_t2t_bin, "run", str(config)], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    exp = location(f"{s3_bucket}/runs/s3pipe")
    names = [name for name, _, _ in exp.files()]
    teacher = json.loads((exp / "runs" / "teacher" / "record.json").read_text())
    assert teacher["status"] == "finished" and teacher["steps"]["done"] == 40
    assert teacher["model"]["export_path"] == str(exp / "runs" / "teacher" / "model")
    assert (
        "runs/teacher/model/config.json" in names
        and "runs/teacher/model/ray_t2t_tokenizer/pair_tokenizer.json" in names
    )
    assert any(n.startswith("train/teacher/checkpoint_") for n in names), "Ray Train checkpoints in the bucket"
    manifest = json.loads((exp / "soft_targets" / "teacher" / "manifest.json").read_text())
    assert manifest["rows"] == 600 and [s["name"] for s in manifest["shards"]] == [
        f"shard-0000{i}.parquet" for i in range(3)
    ]
    assert not [n for n in names if n.startswith("soft_targets/") and n.endswith(".tmp")]
    [student] = [
        json.loads((exp / n).read_text()) for n in names if n.startswith("sweep/") and n.endswith("/record.json")
    ]
    assert student["method"] == "kd_logits" and student["status"] == "finished" and student["steps"]["done"] == 30
    assert (
        student["learning_curve"][-1]["val_per"] < student["learning_curve"][0]["val_per"]
    )  # it learned from the bucket's shards
    assert any(n.startswith("tune/sweep/") for n in names), "Tune's experiment state in the bucket"
    assert {"report/report.md", "report/report.json", "report/report.html"} <= set(names)
    assert f"{exp}/report/report.md" in done.stdout
    assert sorted(p.name for p in workdir.iterdir()) == [], "nothing of the run on local disk"

    again = subprocess.run(
        [ray_t2t_bin, "run", str(config)], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "teacher: reusing the finished run" in again.stdout and "soft targets: reusing" in again.stdout
    assert json.loads((exp / "runs" / "teacher" / "record.json").read_text()) == teacher
    assert [
        json.loads((exp / n).read_text()) for n in names if n.startswith("sweep/") and n.endswith("/record.json")
    ] == [student]

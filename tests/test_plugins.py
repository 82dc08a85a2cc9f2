"""Plug-ins: examples/custom_method, installed as a package, adds a method, a task and a metric through
entry points; a config that names them validates and trains, and the method learns. A plug-in that is
broken, or takes a built-in name, ends in a message naming it (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

EXAMPLE = REPO / "examples" / "custom_method"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The example package installed (pip, as a user would) into a folder of its own, which the
    commands below get on PYTHONPATH: the test environment itself stays as it was."""
    import shutil

    source = shutil.copytree(EXAMPLE, tmp_path_factory.mktemp("source") / "custom_method")  # a build writes there
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-qq", "--no-deps", "--no-build-isolation", "-t", target, source],
        check=True,
        timeout=300,
    )
    return target


def ray_t2t(site: Path | None, *argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site)) if site else {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [sys.executable, "-m", "ray_t2t.cli", *argv], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )


def test_the_installed_plugin_trains_on_its_task_scored_by_its_metric(installed, tmp_path):
    config = str(EXAMPLE / "experiment.yaml")
    overrides = [f"run.storage_path={tmp_path}", "training.max_steps=200", "eval.every_n_steps=50"]
    done = ray_t2t(installed, "validate", config, *overrides, cwd=tmp_path)
    assert done.returncode == 0 and "task        reverse_words" in done.stdout, done.stderr
    done = ray_t2t(installed, "train", config, *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    record = json.loads((tmp_path / "custom_method" / "runs" / "smooth_ce" / "record.json").read_text())
    assert record["method"] == "smooth_ce" and record["params"]["smoothing"] == 0.1
    assert record["metric"] == {"name": "char_accuracy", "higher_is_better": True}
    first, last = record["learning_curve"][0], record["learning_curve"][-1]
    assert last["val_char_accuracy"] > first["val_char_accuracy"] + 0.1
    assert last["val_token_accuracy"] > first["val_token_accuracy"] + 0.1
    assert last["val_loss"] < first["val_loss"]
    assert "train_plain_loss" in last  # the method's own statistic
    assert record["final"]["test"]["char_accuracy"] > 0


def test_without_the_package_its_names_are_unknown(tmp_path):
    done = ray_t2t(None, "validate", str(EXAMPLE / "experiment.yaml"), cwd=tmp_path)
    assert done.returncode == 2
    assert "unknown task 'reverse_words'" in done.stderr and "Traceback" not in done.stderr


def fake_distribution(site: Path, name: str, entry_points: str) -> Path:
    """An installed distribution (its dist-info alone) declaring `entry_points`."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)
    return site


@pytest.mark.parametrize(
    ("entry_points", "expected"),
    [
        (
            "[ray_t2t.methods]\nbroken = no_such_module:METHOD\n",
            "plug-in 'broken' of broken-plugin 0.1 (ray_t2t.methods: no_such_module:METHOD) failed to load: "
            "ModuleNotFoundError",
        ),
        ("[ray_t2t.methods]\nscratch = json:dumps\n", "'scratch' is a built-in name"),
        ("[ray_t2t.metrics]\nodd = json:dumps\n", "a metric is a ray_t2t.metrics.Metric named 'odd'"),
        ("[ray_t2t.tasks]\nfiles = json:loads\n", "'files' is a built-in name"),
    ],
)
def test_a_broken_plugin_is_named_in_one_message(tmp_path, entry_points, expected):
    site = fake_distribution(tmp_path / "site", "broken-plugin", entry_points)
    done = ray_t2t(site, "validate", str(REPO / "configs/quickstart.yaml"), cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in done.stderr and "Traceback" not in done.stderr, done.stderr

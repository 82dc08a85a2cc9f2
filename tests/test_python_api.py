"""The Python API: `from ray_t2t import load_config, run, train, sweep, report` gives the commands as
functions, and examples/python_api.py (what docs/python_api.md shows) runs."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import REPO


def test_the_api_names_are_functions_even_after_the_modules_are_imported():
    code = (
        "import ray_t2t.training.launcher, ray_t2t.reporting, ray_t2t.sweeps, ray_t2t.pipeline\n"
        "from ray_t2t import load_config, run, train, sweep, report\n"
        "assert all(callable(f) and f.__module__ == 'ray_t2t.api' for f in (load_config, run, train, sweep, report))\n"
        "import ray_t2t; assert ray_t2t.train is train and ray_t2t.report is report\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_importing_ray_t2t_loads_neither_torch_nor_ray():
    code = "import sys, ray_t2t; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_a_mistake_raises_the_commands_message(tmp_path):
    import ray_t2t
    from ray_t2t.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown key 'no_such_key'"):
        ray_t2t.load_config(REPO / "examples/python_api.yaml", ["data.no_such_key=1"])
    cfg = ray_t2t.load_config(REPO / "examples/python_api.yaml", [f"run.storage_path={tmp_path}"])
    with pytest.raises(ConfigError, match="no method 'nope' in the config. Methods: lr_high, lr_low"):
        ray_t2t.train(cfg, method="nope")
    assert list(tmp_path.iterdir()) == []


def test_the_example_trains_every_method_with_three_seeds_and_reports(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "examples/python_api.py"),
            str(REPO / "examples/python_api.yaml"),
            f"run.storage_path={tmp_path}",
            "data.split_sizes.train=500",
            "training.max_steps=20",
            "eval.every_n_steps=10",
            "models.student.preset=t5-tiny",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for label in ("lr_high", "lr_low"):
        for seed in range(3):
            assert f"{label} seed {seed}: test per " in done.stdout
            assert (tmp_path / "python_api" / "runs" / f"{label}-seed{seed}" / "record.json").is_file()
    assert "2 method(s), 3 seed(s) each" in done.stdout
    assert (tmp_path / "python_api" / "report" / "report.md").is_file()

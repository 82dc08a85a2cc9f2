"""The `ray-t2t` command line, in process and as the installed console script."""

import subprocess

import pytest
import yaml

from ray_t2t.cli import main

from conftest import REPO, minimal_config


def write(tmp_path, raw):
    path = tmp_path / "experiment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_validate_quickstart(capsys):
    assert main(["validate", str(REPO / "configs/quickstart.yaml")]) == 0
    out = capsys.readouterr().out
    assert "valid (config hash" in out and "kd_logits" in out


def test_validate_takes_the_command_line_of_train(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quickstart = str(REPO / "configs/quickstart.yaml")
    assert main(["validate", quickstart, "method=kd_logits", "training.max_steps=10"]) == 0
    assert "methods     kd_logits\n" in capsys.readouterr().out
    for command in ("validate", "train"):  # the same message from both, before anything is written
        assert main([command, quickstart, "method=nope"]) == 2
        assert "no method 'nope' in the config. Methods: teacher, pretrain" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_validate_unknown_key_exits_nonzero_listing_valid_keys(capsys):
    assert main(["validate", str(REPO / "configs/quickstart.yaml"), "data.no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'no_such_key'" in err and "Valid keys: task, cmudict, num2words, huggingface, files" in err
    assert "Traceback" not in err


def test_validate_explain_with_and_without_config(capsys):
    assert main(["validate", "--explain", "--section", "tune"]) == 0
    out = capsys.readouterr().out
    fields = [line.split()[0] for line in out.splitlines() if line.strip()]
    assert "tune.seeds" in fields and not any(f.startswith("training.") for f in fields)  # only the section
    assert main(["validate", str(REPO / "configs/quickstart.yaml"), "tune.seeds=[3, 4]", "--explain"]) == 0
    assert "tune.seeds  (list of int, default [0, 1, 2])  = [3, 4]" in capsys.readouterr().out


def test_validate_needs_a_config_or_explain(capsys):
    assert main(["validate"]) == 2
    assert "give a CONFIG" in capsys.readouterr().err
    assert main(["validate", "training.max_steps=3"]) == 2
    assert "expected a config file before the overrides" in capsys.readouterr().err


def test_data_prints_identical_summaries_on_two_runs(tmp_path, capsys):
    config = write(tmp_path, minimal_config(tmp_path))
    assert main(["data", config, "--show", "2"]) == 0
    first = capsys.readouterr().out
    assert main(["data", config, "--show", "2"]) == 0
    second = capsys.readouterr().out
    assert "train" in first and "300" in first and "(built)" in first and "(reused)" in second
    summary = lambda out: [
        line for line in out.splitlines() if line.startswith(("task", "tokenizer", "train", "validation", "test", "  "))
    ]
    assert summary(first) == summary(second) and len(summary(first)) >= 11


def test_data_bad_input_exits_nonzero_without_traceback(tmp_path, capsys):
    raw = minimal_config(tmp_path, data={"task": "files", "files": {"train": str(tmp_path / "missing.csv")}})
    assert main(["data", write(tmp_path, raw)]) == 2
    err = capsys.readouterr().err
    assert "file not found" in err and "missing.csv" in err and "Traceback" not in err


def test_console_script_is_installed(ray_t2t_bin, tmp_path):
    done = subprocess.run(
        [ray_t2t_bin, "validate", str(REPO / "configs/quickstart.yaml"), "data.no_such_key=1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Valid keys" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([ray_t2t_bin, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "validate" in done.stdout and "data" in done.stdout


@pytest.mark.parametrize("argv", [["--version"], ["data", "--help"]])
def test_help_and_version(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip()


def test_a_run_shows_its_own_lines_and_logs_the_libraries_output(tmp_path, ray_t2t_bin):
    """By default the console gets ray-t2t's lines (stages, the run's summary, errors in full); what Ray,
    DeepSpeed, transformers and the loop print goes to a log file in the run folder. -v shows it all."""
    raw = minimal_config(
        tmp_path,
        methods=[{"name": "scratch"}],
        scaling={"local_mode": True},
        training={"max_steps": 4, "batch_size": 16, "warmup_steps": 1},
        eval={"every_n_steps": 2},
    )
    config = write(tmp_path, raw)
    done = subprocess.run([ray_t2t_bin, "train", config, "method=scratch"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (log,) = (tmp_path / "runs" / "test" / "logs").glob("train-*.log")
    assert f"log: {log} " in done.stdout
    assert "scratch: training in this process" in done.stdout and "4/4 steps" in done.stdout  # stage and summary
    shown = done.stdout + done.stderr
    for noise in ("[ray-t2t] step", "Loading weights", "DeepSpeed", "Warning", "Traceback", "ERROR"):
        assert noise not in shown, f"{noise!r} on the console:\n{shown}"
    logged = log.read_text()
    assert "[ray-t2t] step 4/4" in logged and "4/4 steps" in logged  # the loop's lines, and ray-t2t's own

    verbose = subprocess.run(
        [ray_t2t_bin, "train", "-v", config, "method=scratch", "run.name=verbose"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verbose.returncode == 0, verbose.stdout[-2000:] + verbose.stderr[-2000:]
    assert "[ray-t2t] step 4/4" in verbose.stdout and not (tmp_path / "runs" / "verbose" / "logs").exists()

    failed = subprocess.run(  # the run folder holds a run of other settings
        [ray_t2t_bin, "train", config, "method=scratch", "training.max_steps=5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert failed.returncode == 2 and "ray-t2t train: error: " in failed.stderr and "other settings" in failed.stderr
    assert "(everything the run printed: " in failed.stderr

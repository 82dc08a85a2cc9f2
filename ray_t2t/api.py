"""The Python API: what the ray-t2t commands do, as functions (docs/python_api.md).

    import ray_t2t

    cfg = ray_t2t.load_config("configs/quickstart.yaml", ["training.max_steps=200"])
    record = ray_t2t.train(cfg, method="scratch", seed=1)  # one run's record (a dict)
    records = ray_t2t.sweep(cfg)                           # every trial's record
    report = ray_t2t.report(cfg)                           # the verdict: report.summary, report.data, report.files
    report = ray_t2t.run(cfg)                              # all stages, as `ray-t2t run`

A config is a path (with optional overrides) or an ExperimentConfig; mistakes raise
ray_t2t.errors.UserError (ConfigError, DataError) with the message the command line prints. Progress
goes to `log` (print by default; pass `lambda message: None` for silence). Unlike the commands, these
functions leave Ray's and the libraries' output where it is (no log file) and leave a Ray they started
running, for the next call.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ray_t2t.config.experiment import ExperimentConfig, choose_method
from ray_t2t.config.experiment import load_config as _load_config
from ray_t2t.errors import UserError

Log = Callable[[str], None]
Config = ExperimentConfig | str | os.PathLike


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> ExperimentConfig:
    """The validated config of a YAML file, with `section.key=value` overrides applied."""
    return _load_config(str(path), list(overrides))


def _config(config: Config, overrides: Sequence[str]) -> ExperimentConfig:
    if isinstance(config, ExperimentConfig):
        if overrides:
            raise UserError("overrides go with a config path; change an ExperimentConfig with model_copy")
        return config
    return load_config(config, overrides)


def train(
    config: Config,
    method: str | None = None,
    overrides: Sequence[str] = (),
    seed: int | None = None,
    log: Log = print,
) -> dict:
    """`ray-t2t train`: train one of the config's methods (its label or name; the only one if None)
    and return its run record. With `seed`, the run is that seed's replicate of the method: it goes
    to runs/<label>-seed<seed>/, and the report counts the seeds of one label as one method, with
    intervals (as a sweep's trials)."""
    from ray_t2t.training.launcher import train as _train

    cfg = _config(config, overrides)
    if seed is None:
        return _train(cfg, method, log=log)
    entry = choose_method(cfg, method)
    label = entry.label or entry.name
    cfg = cfg.model_copy(update={"seed": seed})
    return _train(cfg, label, log=log, run_name=f"{label}-seed{seed}", record_fields={"group": label})


def sweep(config: Config, overrides: Sequence[str] = (), log: Log = print) -> list[dict]:
    """`ray-t2t sweep`: every method x tune.space point x seed as Ray Tune trials; their records."""
    from ray_t2t.sweeps import run_sweep

    return run_sweep(_config(config, overrides), log=log)


def run(config: Config, overrides: Sequence[str] = (), log: Log = print) -> Any:
    """`ray-t2t run`: teacher, soft targets, sweep, inference speed and report; the report."""
    from ray_t2t.pipeline import run_pipeline

    return run_pipeline(_config(config, overrides), log=log)


def report(
    experiment: Config,
    target: str | None = None,
    target_relative: float | None = None,
    confidence: float = 0.95,
    plots: bool = True,
) -> Any:
    """`ray-t2t report`: the verdict over an experiment's records (ray_t2t.reporting.Report: .summary,
    .data, .files). `experiment` is a config or its folder (<storage_path>/<run.name>)."""
    from ray_t2t.reporting import build_report

    folder = experiment.experiment_dir if isinstance(experiment, ExperimentConfig) else experiment
    if isinstance(folder, (str, os.PathLike)) and Path(folder).suffix in (".yaml", ".yml"):
        folder = load_config(folder).experiment_dir
    return build_report(folder, target=target, target_relative=target_relative, confidence=confidence, plots=plots)

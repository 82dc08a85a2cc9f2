"""`ray-t2t run`: data -> teacher and pretraining runs -> soft targets -> sweep -> inference speed ->
report, each stage reused when complete.

    from ray_t2t.pipeline import run_pipeline
    report = run_pipeline(load_config("configs/quickstart.yaml"))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ray_t2t.config.experiment import ExperimentConfig, validate_config
from ray_t2t.data import prepare_data
from ray_t2t.inference import measure_experiment
from ray_t2t.methods import get_method
from ray_t2t.preflight import (
    check_cluster_fits,
    check_fits,
    check_model_paths,
    check_storage_writable,
    machine_resources,
    needs_soft_targets,
)
from ray_t2t.ray_cluster import ensure_ray
from ray_t2t.reporting import build_report
from ray_t2t.storage import child
from ray_t2t.sweeps import (
    plan_trials,
    run_sweep,
    stage_one_labels,
    summarize_sweep,
    sweep_labels,
    waiting_cpus,
)
from ray_t2t.tracking import check_tracking, log_report
from ray_t2t.training.launcher import needs_no_ray, summarize, train

if TYPE_CHECKING:
    from ray_t2t.reporting import Report


def with_stage_one_models(cfg: ExperimentConfig) -> ExperimentConfig:
    """The config the sweep stage trains with: models.base and the first teacher, when a stage-one
    entry trains them (pretrain; {scratch or finetune, model: teacher}), point to that run's exported
    model, so finetune/lora/partial start from the pretraining and sft/kd_* learn from the trained
    teacher (as `ray-t2t teacher` and the live-teacher methods resolve it)."""
    raw = cfg.model_dump(mode="json")
    for entry in cfg.methods:
        label = entry.label or entry.name
        role = getattr(entry, "model", None)
        export = str((child(cfg.experiment_dir, "runs", label) / "model").resolve())
        if get_method(entry.name).makes_base and role == "base" and cfg.models.base is not None:
            raw["models"]["base"] = {"name_or_path": export}
        elif role == "teacher" and cfg.models.teachers:
            if isinstance(raw["models"]["teacher"], list):
                raw["models"]["teacher"][0] = {"name_or_path": export}
            else:
                raw["models"]["teacher"] = {"name_or_path": export}
    return validate_config(raw)


def run_pipeline(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> Report:
    """data -> teacher and pretraining runs -> soft targets -> sweep -> inference speed -> report, each
    stage reused when complete. Returns the report (ray_t2t.reporting.Report)."""
    first = stage_one_labels(cfg)
    swept = [label for label in sweep_labels(cfg) if label not in first]
    log(
        f"run: {cfg.run.name}: data -> {', '.join(first) or 'no teacher or pretraining'} -> sweep of "
        f"{', '.join(swept) or 'nothing'} -> {'inference speed -> ' if cfg.inference.enabled else ''}report"
    )
    plan_trials(cfg)  # config mistakes in the sweep fail now, before hours of training
    check_model_paths(cfg)
    check_storage_writable(cfg)
    check_tracking(cfg.tracking)
    if first:  # what every stage asks is checked now, before any training
        stages = ["train"] + ["sweep"] * bool(swept) + ["teacher"] * needs_soft_targets(cfg)
        if needs_no_ray(cfg, sweep_trial=False):
            # Stage one trains in this process and needs no Ray: none runs beside it (its processes took
            # ~5% of a core), so the teacher's time does not depend on them. Soft targets and the sweep
            # start Ray when they need it.
            for note in check_fits(cfg, stages, [machine_resources()], place="this machine"):
                log(f"machine: {note}")
        else:  # Ray as the sweep after them needs it (trials' CPUs)
            ensure_ray(cfg.scaling.use_gpu, extra_cpus=waiting_cpus(cfg) if swept else 0)
            check_cluster_fits(cfg, stages, log)
    prepare_data(cfg, log=log)
    for label in first:
        log(f"run: training {label}")
        log(summarize(train(cfg, label, log=log)))
    if swept:
        raw = with_stage_one_models(cfg).model_dump(mode="json")
        raw["tune"]["methods"] = swept
        records = run_sweep(validate_config(raw), log=log)
        log("run: sweep results\n" + summarize_sweep(records))
    if cfg.inference.enabled:  # after every run, so that nothing else runs beside a measurement
        measure_experiment(cfg, log=log)
    report = build_report(
        cfg.experiment_dir, confidence=cfg.report.confidence, plots=cfg.report.plots, formats=tuple(cfg.report.formats)
    )
    log_report(cfg.tracking, cfg.run.name, cfg.experiment_dir, report)
    return report

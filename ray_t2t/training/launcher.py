"""Run one method of an experiment on Ray Train: what `ray-t2t train CONFIG method=NAME` does.

    from ray_t2t.config.experiment import load_config
    from ray_t2t.training.launcher import train
    record = train(load_config("configs/quickstart.yaml"), "scratch")

Driver side only: it checks the method before any work, prepares the data, and builds the
TorchTrainer (ScalingConfig, RunConfig, FailureConfig, CheckpointConfig from the config). The loop
itself runs in the workers (ray_t2t.training.loop).

Reruns: a run is `<storage_path>/<run.name>/runs/<label>/`. A finished run with the same settings is
reused, not retrained; an unfinished one resumes from its last checkpoint, because the TorchTrainer
gets the same RunConfig(storage_path, name) again. A folder holding a run of different settings is
refused rather than mixed in.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray_t2t.config.experiment import ExperimentConfig, choose_method, config_hash
from ray_t2t.config.sections import MAX_STEPS
from ray_t2t.data import prepare_data
from ray_t2t.errors import ConfigError, UserError
from ray_t2t.ledger import hardware_of, read_record, write_record
from ray_t2t.methods import get_method
from ray_t2t.preflight import (
    check_cluster_fits,
    check_machine_fits,
    check_model_paths,
    check_storage_writable,
    worker_bundle,
)
from ray_t2t.ray_cluster import ensure_ray
from ray_t2t.soft_targets import produce_soft_targets
from ray_t2t.storage import child, location, ray_storage
from ray_t2t.tracking import check_tracking
from ray_t2t.training.loop import FAIL_ONCE_ENV, check_deepspeed_config, train_loop_per_worker

if TYPE_CHECKING:
    from ray_t2t.config.sections import MethodParams

RUN_HASH_FILE = "run_hash"


def entry_config(cfg: ExperimentConfig, entry: MethodParams) -> ExperimentConfig:
    """The config one method entry trains with: its own max_steps, learning_rate and
    resources_per_worker, when it sets them."""
    update = {}
    training = {
        key: value
        for key, value in (("max_steps", entry.max_steps), ("learning_rate", entry.learning_rate))
        if value is not None and value != getattr(cfg.training, key)
    }
    if entry.max_steps is not None and cfg.training.epochs is not None:
        training.update(max_steps=entry.max_steps, epochs=None)  # the entry's own step count wins
    if training:
        update["training"] = cfg.training.model_copy(update=training)
    if entry.resources_per_worker is not None and entry.resources_per_worker != cfg.scaling.resources_per_worker:
        update["scaling"] = cfg.scaling.model_copy(update={"resources_per_worker": dict(entry.resources_per_worker)})
    return cfg.model_copy(update=update) if update else cfg


def steps_from_epochs(cfg: ExperimentConfig, train_examples: int) -> ExperimentConfig:
    """The config with training.max_steps set from training.epochs (when set): ceil(epochs x
    train_examples / global batch), at least 1."""
    training = cfg.training
    if training.epochs is None:
        return cfg
    global_batch = training.batch_size * cfg.deepspeed.gradient_accumulation_steps * cfg.scaling.num_workers
    steps = max(1, math.ceil(training.epochs * train_examples / global_batch))
    if steps > MAX_STEPS:
        raise ConfigError(
            f"training.epochs={training.epochs:g} over {train_examples:,} examples in batches of {global_batch} "
            f"is {steps:,} steps, more than {MAX_STEPS:,}"
        )
    return cfg.model_copy(update={"training": training.model_copy(update={"max_steps": steps})})


def run_hash(cfg: ExperimentConfig, entry: MethodParams, with_seed: bool = True) -> str:
    """What decides a run's result: every section a worker reads, and this method's entry. Without
    the seed: the setting its replicates (other seeds) share."""
    dump = cfg.model_dump(mode="json")
    relevant = {
        key: dump[key] for key in ("seed", "data", "models", "training", "eval", "scaling", "deepspeed", "cost")
    }
    if not with_seed:
        del relevant["seed"]
    relevant["method"] = entry.model_dump(mode="json")
    if get_method(entry.name).teacher_use(entry) in ("soft_targets", "live"):
        relevant["soft_targets"] = dump["soft_targets"]
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def prepare_method(cfg: ExperimentConfig, entry: MethodParams, log: Callable[[str], None] = print) -> dict:
    """Driver-side work before a method trains: the stored outputs of its teachers (computed on Ray
    Data, or reused) when it reads them, then the method's own prepare(). What it returns reaches the
    workers as setup.extras."""
    method = get_method(entry.name)
    extras: dict = {}
    if method.teacher_use(entry) == "soft_targets":
        count = len(cfg.models.teachers) if method.all_teachers else 1
        manifests = [produce_soft_targets(cfg, log=log, teacher_index=i) for i in range(count)]
        extras["soft_targets"] = [
            str(cfg.experiment_dir.resolve() / "soft_targets" / m["teacher"]["label"]) for m in manifests
        ]
        extras["stored_temperatures"] = [m["identity"]["temperature"] for m in manifests]
    return {**extras, **method.prepare(cfg, entry, log)}


def train(
    cfg: ExperimentConfig,
    label: str | None = None,
    log: Callable[[str], None] = print,
    *,
    run_name: str | None = None,
    folder: str = "runs",
    record_fields: dict | None = None,
    report_to_tune: bool = False,
) -> dict:
    """Train one method; returns its run record. Raises UserError (before any training) for a bad
    method choice or config, a storage path it cannot write, or workers no node of the cluster can
    hold (ray_t2t.preflight), and UserError if training fails.

    A sweep trial names its run (`run_name`, default the method label) under `folder` ("sweep"), adds
    `record_fields` (group, seed, trial parameters) to the record, and forwards every report of the
    training workers to its Tune trial (`report_to_tune`, for schedulers such as ASHA).

    scaling.local_mode (trains_in_process): the run trains in this process (Ray Train's local mode),
    restarted here from its checkpoint after a failure up to run.max_failures times, and outside a
    sweep starts no Ray unless something else needs it (needs_no_ray). A run outside a
    sweep on a cluster trains on a Ray worker as without it: the driver's node (the head, under `ray
    job submit`) is no place to train."""
    entry = choose_method(cfg, label)
    label = entry.label or entry.name
    run_name = run_name or label
    cfg = entry_config(cfg, entry)
    try:
        method = get_method(entry.name)
    except KeyError as err:
        raise ConfigError(str(err.args[0])) from None
    method.check_config(cfg, entry)
    check_deepspeed_config(cfg, cfg.scaling.num_workers, method)
    if not cfg.scaling.use_gpu or cfg.scaling.accelerator_type:
        hardware_of(cfg).price_per_device_hour(cfg)  # a missing price fails now, not after training
    local_mode = trains_in_process(cfg, report_to_tune)
    if local_mode and cfg.scaling.use_gpu:
        import torch

        if not torch.cuda.is_available():
            raise UserError(
                "scaling.local_mode trains in this process, which sees no CUDA GPU (scaling.use_gpu "
                "is true): set scaling.local_mode: false to train on Ray workers with GPUs"
            )

    run_dir = child(cfg.experiment_dir, folder, run_name).resolve()
    this_run = run_hash(cfg, entry)
    hash_file = run_dir / RUN_HASH_FILE
    if hash_file.is_file() and hash_file.read_text().strip() != this_run:
        raise UserError(
            f"{run_dir} holds a run of '{label}' with other settings. Use another run.name or method "
            "label, or remove that folder to start over"
        )
    record = read_record(run_dir)
    if record is not None and record.get("status") == "finished":
        log(f"{run_name}: reusing the finished run in {run_dir}")
        return record

    checks = not report_to_tune  # a sweep checked storage and cluster before starting its trials
    if checks:
        check_model_paths(cfg)
        check_storage_writable(cfg)
        check_tracking(cfg.tracking)
    if needs_no_ray(cfg, report_to_tune):
        check_machine_fits(cfg, log)  # a method that needs Ray (teacher inference) starts it in prepare
    else:
        ensure_ray(cfg.scaling.use_gpu)
        if checks:
            check_cluster_fits(cfg, ("train",), log)
    prepared = prepare_data(cfg, log=log)
    cfg = steps_from_epochs(cfg, prepared.summary["splits"]["train"]["examples"])
    extras = prepare_method(cfg, entry, log)
    run_dir.mkdir(parents=True, exist_ok=True)
    hash_file.write_text(this_run)

    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    scaling = cfg.scaling
    resources = scaling.resources_per_worker
    train_storage = (cfg.experiment_dir / "train").resolve()
    payload = {
        "config": cfg.model_dump(mode="json"),
        "label": label,
        "data_path": str(prepared.path.resolve()),
        "run_dir": str(run_dir),
        "config_hash": config_hash(cfg),
        "run_hash": this_run,
        "setting_hash": run_hash(cfg, entry, with_seed=False),
        "threads": max(1, int((resources or {}).get("CPU", 1))),
        "fail_once_at_step": os.environ.get(FAIL_ONCE_ENV),
        "method_extras": extras,
        "record_fields": record_fields or {},
        "track": not report_to_tune,  # a sweep trial is tracked by Ray Tune's logger callbacks
    }
    callbacks = []
    if local_mode:  # Ray Train keeps no checkpoints and runs no callbacks then: the loop does both
        payload["local_mode"] = {
            "checkpoints": str(child(train_storage, run_name) / "local_checkpoints"),
            "keep": cfg.run.checkpoints_to_keep,
            "to_tune": report_to_tune,
        }
    elif report_to_tune:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    if local_mode:
        _quiet_local_mode_notice()
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=payload,
        scaling_config=ScalingConfig(
            num_workers=0 if local_mode else scaling.num_workers,
            use_gpu=scaling.use_gpu,
            resources_per_worker=resources,
            placement_strategy=scaling.placement_strategy,
            accelerator_type=scaling.accelerator_type,
        ),
        run_config=RunConfig(
            name=run_name,
            callbacks=callbacks,
            **ray_storage(train_storage),
            failure_config=FailureConfig(max_failures=cfg.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.run.checkpoints_to_keep),
        ),
    )
    where = "in this process (Ray Train's local mode)" if local_mode else f"on Ray ({scaling.num_workers} worker(s))"
    log(f"{run_name}: training {where}; run folder {run_dir}")
    try:
        _fit(trainer, cfg, run_name, log, local_mode)
    except Exception as err:  # Ray wraps the worker's exception; the run folder keeps its checkpoints
        reason = f"{type(err).__name__}: {err}"
        write_record(
            run_dir,
            {
                "label": label,
                "method": entry.name,
                "run_hash": this_run,
                "status": "failed",
                "reason": reason[:4000],
                **(record_fields or {}),
            },
        )
        raise UserError(
            f"training '{label}' failed: {reason}\nRerun the same command to resume from the last checkpoint."
        ) from None
    record = read_record(run_dir)
    if record is None or record.get("status") != "finished":
        raise UserError(f"training '{label}' ended without writing its run record in {run_dir}")
    return record


def _quiet_local_mode_notice() -> None:
    """Ray Train logs "Running in local mode ... please file a report" for every ScalingConfig of
    num_workers=0; ray_t2t says where each run trains itself ("training in this process")."""
    logger = logging.getLogger("ray.train.v2.api.config")
    if not any(isinstance(f, _LocalModeNotice) for f in logger.filters):
        logger.addFilter(_LocalModeNotice())


class _LocalModeNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Running in local mode.")


def trains_in_process(cfg: ExperimentConfig, sweep_trial: bool) -> bool:
    """Whether a run takes Ray Train's local mode: scaling.local_mode, in a sweep trial (whose process
    reserved the worker's resources, on any node) or on a local Ray (the driver is on the machine)."""
    return cfg.scaling.local_mode and (sweep_trial or not os.environ.get("RAY_ADDRESS"))


def needs_no_ray(cfg: ExperimentConfig, sweep_trial: bool) -> bool:
    """Whether a run can skip starting a local Ray: in local mode, outside a sweep, with no Ray running
    in this process and none named in RAY_ADDRESS, and a worker that asks for CPUs and GPUs only (which
    check_machine_fits checks without Ray; other resources exist only as a Ray node declares them).
    Ray Train's local mode itself needs no Ray: the run trains in this process, and none of Ray's own
    processes (~5 s to start, ~4% of a 2-core machine while training) run beside it."""
    import ray

    if not cfg.scaling.local_mode or sweep_trial or os.environ.get("RAY_ADDRESS") or ray.is_initialized():
        return False
    return set(worker_bundle(cfg)[0]) <= {"CPU", "GPU"}


def _fit(trainer: Any, cfg: ExperimentConfig, run_name: str, log: Callable[[str], None], local_mode: bool) -> None:
    """trainer.fit(). In local mode Ray Train restarts nothing, so a failed run is restarted here, from
    its last checkpoint, up to run.max_failures times, as Ray Train restarts a failed worker group."""
    restarts = 0
    while True:
        try:
            trainer.fit()
            return
        except Exception as err:
            allowed = cfg.run.max_failures
            if not local_mode or (allowed != -1 and restarts >= allowed):
                raise
            restarts += 1
            log(
                f"{run_name}: training failed ({type(err).__name__}: {err}); restart {restarts}"
                f"{'' if allowed == -1 else f' of {allowed}'} from its last checkpoint"
            )


def summarize(record: dict) -> str:
    """A few lines for the terminal."""
    test = record["final"]["test"]
    lines = [
        f"{record['label']} ({record['method']}): {record['steps']['done']}/{record['steps']['planned']} steps"
        + (", stopped at target" if record["stopped_at_target"] else "")
        + (f", resumed {record['resumes']}x" if record["resumes"] else ""),
        f"  model      {record['model']['architecture']} {record['model']['family'].replace('_', '-')}, "
        f"{record['model']['total_params'] / 1e6:.2f}M parameters "
        f"({record['model']['trainable_params'] / 1e6:.2f}M trained)",
        "  test       " + ", ".join(f"{k} {v:.4g}" for k, v in test.items()),
        f"  training   {record['times']['train_s']:.1f}s, {record['device_seconds'] / 3600:.4f} device-hours "
        f"({record['hardware']['devices']:g} x {record['hardware']['device_type']}), "
        f"{record['cost']['total']:.4f} {record['cost']['currency']}, {record['tokens_per_s'] or 0:,.0f} tokens/s",
    ]
    if record.get("cost_basis") == "inference":  # a method that does not train (fewshot in-context)
        lines[-1] = (
            f"  cost       no training; charged its validation and test inference: "
            f"{record['device_seconds'] / 3600:.4f} device-hours ({record['hardware']['devices']:g} x "
            f"{record['hardware']['device_type']}), {record['cost']['total']:.6f} {record['cost']['currency']}"
        )
    ttt = record["time_to_target"]
    target = record["target"]
    if target:
        reached = (
            f"reached at step {ttt['step']:.0f} after {ttt['wall_s']:.1f}s, {ttt['cost']:.4f} "
            f"{record['cost']['currency']} (interpolated between evaluations)"
            if ttt
            else "not reached"
        )
        lines.append(f"  target     {target['metric']} {target['op']} {target['value']:g}: {reached}")
    if record.get("inference"):
        inf = record["inference"]
        lines.append(
            f"  inference  {inf['tokens_per_s'] or 0:,.0f} tokens/s (batch {inf['batch_size']}), "
            f"{inf['latency_s'] * 1000:.1f} ms per example alone"
        )
    lines.append(f"  record     {location(record['model']['export_path']).parent / 'record.json'}")
    lines.append(f"  model      {record['model']['export_path']}")
    return "\n".join(lines)

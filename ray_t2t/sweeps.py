"""Sweeps: Ray Tune over methods x hyperparameters x seeds, each trial a Ray Train run of the loop.

    ray-t2t sweep CONFIG            # the config's `tune` section says what to sweep

The trials are listed up front, deterministically: for grid search every combination of each
method's lists in `tune.space`, for random search `tune.num_samples` draws per method (seeded by the
config's seed), each times every seed in `tune.seeds`. Optuna search is adaptive, so its trials are
not listed up front: per method, `tune.num_samples` trials suggested by Optuna's TPE sampler (seeded)
from the results so far, minimizing or maximizing the final validation metric, with the first seed;
then the method's best point is trained with every other seed. Tune runs them (concurrency from the
cluster's resources, `tune.max_concurrent_trials`, optional ASHA early stopping on the validation
metric); each trial function drives a TorchTrainer through `train()` and writes its run record to

    <storage_path>/<run.name>/sweep/<trial>/record.json   (with "group" and "seed", for the report)

The Tuner's state lives in <storage_path>/<run.name>/tune/sweep: rerunning the command after the
driver died restores it, so finished trials are not rerun (and an interrupted trial resumes from its
last Ray Train checkpoint, as its run name is fixed).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import random
from collections.abc import Callable
from typing import Any

from ray_t2t import console
from ray_t2t.config.experiment import ExperimentConfig, config_hash, validate_config
from ray_t2t.config.overrides import set_path
from ray_t2t.data import prepare_data
from ray_t2t.errors import ConfigError, UserError
from ray_t2t.ledger import read_record
from ray_t2t.methods import get_method
from ray_t2t.metrics import METRICS
from ray_t2t.placement import own_cores
from ray_t2t.preflight import check_cluster_fits, check_storage_writable, worker_bundle
from ray_t2t.ray_cluster import ensure_ray
from ray_t2t.storage import child, ray_storage
from ray_t2t.tracking import check_tracking, tune_callbacks
from ray_t2t.training.launcher import prepare_method, train
from ray_t2t.tune_search import check_optuna, optuna_searcher

SAMPLERS = ("uniform", "loguniform", "randint", "choice")
SWEEP_FOLDER = "sweep"


def sweep_labels(cfg: ExperimentConfig) -> list[str]:
    labels = [m.label or m.name for m in cfg.methods]
    chosen = cfg.tune.methods
    if chosen is None:  # the runs others start from (teacher, pretraining) are `ray-t2t run`'s first stage
        first = stage_one_labels(cfg)
        return [label for label in labels if label not in first]
    unknown = [label for label in chosen if label not in labels]
    if unknown:
        raise ConfigError(
            f"tune.methods: {', '.join(unknown)} is not a method label of this config (labels: {', '.join(labels)})"
        )
    return list(chosen)


def _entry(cfg: ExperimentConfig, label: str) -> Any:
    return next(m for m in cfg.methods if (m.label or m.name) == label)


def _check_space(cfg: ExperimentConfig, labels: list[str]) -> None:
    for label, space in cfg.tune.space.items():
        if label not in labels:
            raise ConfigError(f"tune.space.{label}: not a method this sweep trains (it trains: {', '.join(labels)})")
        entry = _entry(cfg, label)
        for key, spec in space.items():
            where = f"tune.space.{label}.{key}"
            if "." not in key and key not in type(entry).model_fields:
                raise ConfigError(
                    f"{where}: '{key}' is not a parameter of method {entry.name!r} "
                    f"(parameters: {', '.join(type(entry).model_fields)}); a config path has a dot"
                )
            if key in ("name", "label", "model"):
                raise ConfigError(f"{where}: '{key}' cannot be swept")
            if isinstance(spec, list):
                if not spec:
                    raise ConfigError(f"{where}: an empty list")
            elif isinstance(spec, dict) and len(spec) == 1 and next(iter(spec)) in SAMPLERS:
                kind, args = next(iter(spec.items()))
                if cfg.tune.search == "grid":
                    raise ConfigError(
                        f"{where}: {{{kind}: ...}} is sampled; grid search takes lists (or set "
                        "tune.search: random or optuna)"
                    )
                numbers = isinstance(args, list) and all(
                    isinstance(a, int | float) and not isinstance(a, bool) and math.isfinite(a) for a in args
                )
                if kind != "choice" and (not numbers or len(args) != 2 or args[0] > args[1]):
                    raise ConfigError(f"{where}: {kind} takes [low, high], two finite numbers")
                if kind == "loguniform" and args[0] <= 0:
                    raise ConfigError(f"{where}: loguniform needs a positive low end")
                if kind == "choice" and (not isinstance(args, list) or not args):
                    raise ConfigError(f"{where}: choice takes a non-empty list")
            else:
                raise ConfigError(f"{where}: give a list of values or one of {{{', '.join(SAMPLERS)}: ...}}")


def _draw(spec: Any, rng: random.Random) -> Any:
    if isinstance(spec, list):
        return rng.choice(spec)
    kind, args = next(iter(spec.items()))
    if kind == "uniform":
        return rng.uniform(*args)
    if kind == "loguniform":
        return math.exp(rng.uniform(math.log(args[0]), math.log(args[1])))
    if kind == "randint":
        return rng.randint(int(args[0]), int(args[1]))
    return rng.choice(args)


def _points(cfg: ExperimentConfig, label: str) -> list[dict]:
    space = cfg.tune.space.get(label, {})
    if not space:
        return [{}]
    keys = sorted(space)
    if cfg.tune.search == "grid":
        return [dict(zip(keys, values)) for values in itertools.product(*(space[k] for k in keys))]
    rng = random.Random(f"{cfg.seed}:{label}")  # the same draws on every rerun
    return [{k: _draw(space[k], rng) for k in keys} for _ in range(cfg.tune.num_samples)]


def _describe(params: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))


def make_trial(label: str, params: dict, seed: int) -> dict:
    """One trial: label, params, seed, group (label + params) and its run name."""
    group = f"{label} ({_describe(params)})" if params else label
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{label}-{digest}-seed{seed}" if params else f"{label}-seed{seed}"
    return {"label": label, "params": params, "seed": seed, "group": group, "name": name}


def check_sweep(cfg: ExperimentConfig) -> None:
    """What `ray-t2t validate` checks of tune.space without running: its labels and parameters, and
    the config of every trial a grid or random search plans (the first of each method with optuna),
    and that optuna is installed when the search needs it."""
    if cfg.tune.search == "optuna":
        check_optuna()
    if not cfg.tune.space:
        return
    for trial in plan_trials(cfg)[:1000]:
        trial_config(cfg, trial)


def plan_trials(cfg: ExperimentConfig) -> list[dict]:
    """Every trial of the sweep known before it starts. Optuna search: each method's first trial (its
    space's first point, or its only trial when it has no space); the others are suggested as it runs."""
    if cfg.tune.search == "optuna":
        check_optuna()
    labels = sweep_labels(cfg)
    if not labels:
        raise ConfigError("the sweep has no method to train: every method entry trains the teacher")
    _check_space(cfg, labels)
    if cfg.tune.search == "optuna":
        return [make_trial(label, _first_point(cfg.tune.space.get(label, {})), cfg.tune.seeds[0]) for label in labels]
    return [
        make_trial(label, params, seed) for label in labels for params in _points(cfg, label) for seed in cfg.tune.seeds
    ]


def _first_point(space: dict) -> dict:
    """A representative point of a space (checks trial configs before Optuna suggests any)."""
    point = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            point[key] = spec[0]
        else:
            kind, args = next(iter(spec.items()))
            point[key] = args[0] if kind != "loguniform" else math.sqrt(args[0] * args[1])
    return point


def _tune_domain(spec: Any) -> Any:
    """A space entry as a Tune search domain (for Optuna search)."""
    from ray import tune

    if isinstance(spec, list):
        return tune.choice(spec)
    kind, args = next(iter(spec.items()))
    if kind == "uniform":
        return tune.uniform(*args)
    if kind == "loguniform":
        return tune.loguniform(*args)
    if kind == "randint":
        return tune.randint(int(args[0]), int(args[1]) + 1)  # Tune's upper end is exclusive, ours inclusive
    return tune.choice(args)


def trial_config(cfg: ExperimentConfig, trial: dict) -> ExperimentConfig:
    """The experiment config of one trial: its parameters and seed applied, validated."""
    raw = cfg.model_dump(mode="json")
    raw["seed"] = trial["seed"]
    index = next(i for i, m in enumerate(cfg.methods) if (m.label or m.name) == trial["label"])
    for key, value in trial["params"].items():
        path = key if "." in key else f"methods.{index}.{key}"
        set_path(raw, path, value, f"tune.space.{trial['label']}.{key}")
    try:
        return validate_config(raw)
    except ConfigError as err:
        raise ConfigError(f"trial {trial['name']}: {err}") from None


def _trial(config: dict) -> None:
    """The Tune trainable: one trial = one training run (a TorchTrainer) of the shared loop."""
    from ray import tune

    trial = config.get("trial") or make_trial(config["label"], config["params"], config["seed"])  # optuna
    cfg = trial_config(validate_config(config["experiment"]), trial)
    fields = {
        "group": trial["group"],
        "seed": trial["seed"],
        "trial": {"name": trial["name"], "params": trial["params"]},
    }
    log = lambda message: print(message, flush=True)
    with _trial_cores(cfg, log):
        record = train(
            cfg,
            trial["label"],
            log=log,
            run_name=trial["name"],
            folder=SWEEP_FOLDER,
            record_fields=fields,
            report_to_tune=True,
        )
    metric = record["metric"]["name"]
    ttt = record["time_to_target"] or {}
    tune.report(
        {
            "done": True,
            f"val_{metric}": (record["final"]["validation"] or {}).get(metric),
            f"test_{metric}": record["final"]["test"].get(metric),
            "train_s": record["times"]["train_s"],
            "cost": record["cost"]["total"],
            "time_to_target_s": ttt.get("wall_s"),
            "cost_to_target": ttt.get("cost"),
        }
    )


def _trial_cores(cfg: ExperimentConfig, log: Callable[[str], None]) -> Any:
    """A trial that trains in its own process (local mode, CPU) claims its cores before its imports and
    model building, so that its start-up never lands on a neighbour's core; the loop reuses the claim."""
    from contextlib import nullcontext

    if not cfg.scaling.local_mode or cfg.scaling.use_gpu:
        return nullcontext()
    return own_cores(max(1, int((cfg.scaling.resources_per_worker or {}).get("CPU", 1))), log=log)


def _concurrency(cfg: ExperimentConfig, cluster_cpus: float, cluster_gpus: float, trial_cpus: bool = True) -> int:
    """Trials at once: tune.max_concurrent_trials, else what the cluster holds (each trial reserves
    its training workers' resources, plus trial_cpus unless those are extra logical CPUs)."""
    if cfg.tune.max_concurrent_trials:
        return cfg.tune.max_concurrent_trials
    scaling = cfg.scaling
    per_worker = scaling.resources_per_worker or {}
    trial_cpus = trial_cpus and not scaling.local_mode  # in local mode the trial is the worker
    cpus = scaling.num_workers * float(per_worker.get("CPU", 1)) + (cfg.tune.trial_cpus if trial_cpus else 0)
    fits = int(cluster_cpus // cpus)
    if scaling.use_gpu:
        gpus = scaling.num_workers * float(per_worker.get("GPU", 1))
        fits = min(fits, int(cluster_gpus // gpus))
    return max(1, fits)


def waiting_cpus(cfg: ExperimentConfig) -> int:
    """Logical CPUs a local Ray declares on top of the machine's for the trials' own processes: they
    only wait for their TorchTrainer, so trial_cpus never keeps a training worker from the cores.
    None in local mode: the trials train themselves."""
    if cfg.scaling.local_mode:
        return 0
    return math.ceil(cfg.tune.trial_cpus * _concurrency(cfg, os.cpu_count() or 1, 0, trial_cpus=False))


def _sweep_identity(cfg: ExperimentConfig, trials: list[dict]) -> str:
    return hashlib.sha256(json.dumps([config_hash(cfg), trials], sort_keys=True).encode()).hexdigest()[:16]


def run_sweep(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> list[dict]:
    """Run (or resume) the sweep; returns the trials' run records (failed trials: status failed)."""
    import ray
    from ray import tune

    trials = plan_trials(cfg)
    for trial in trials:  # every trial's config and method checks fail now, before any work
        trial_cfg = trial_config(cfg, trial)
        entry = _entry(trial_cfg, trial["label"])
        get_method(entry.name).check_config(trial_cfg, entry)
    check_storage_writable(cfg)
    check_tracking(cfg.tracking)
    cpus = os.cpu_count() or 1
    local = ensure_ray(cfg.scaling.use_gpu, extra_cpus=waiting_cpus(cfg))
    check_cluster_fits(cfg, ("sweep",), log)
    prepare_data(cfg, log=log)
    for label in dict.fromkeys(t["label"] for t in trials):
        # soft targets and teachers once, here, before trials could race for them
        prepare_method(cfg, _entry(cfg, label), log)

    tune_dir = (cfg.experiment_dir / "tune").resolve()
    identity = _sweep_identity(cfg, trials)
    identity_file = tune_dir / "sweep.identity"
    if identity_file.is_file() and identity_file.read_text().strip() != identity:
        raise UserError(
            f"{tune_dir} holds a sweep of other settings (methods, space, seeds or config). Use "
            "another run.name, or remove that folder to start the sweep over"
        )
    tune_dir.mkdir(parents=True, exist_ok=True)
    identity_file.write_text(identity)

    if local:
        concurrency = _concurrency(cfg, cpus, ray.cluster_resources().get("GPU", 0), trial_cpus=False)
    else:
        resources = ray.cluster_resources()
        concurrency = _concurrency(cfg, resources.get("CPU", 1), resources.get("GPU", 0))
    if cfg.tune.search != "optuna":
        log(
            f"sweep: {len(trials)} trial(s) ({len({t['group'] for t in trials})} group(s) x "
            f"{len(cfg.tune.seeds)} seed(s)), {concurrency} at a time"
        )
        _fit(cfg, tune_dir / "sweep", {"trial": tune.grid_search(trials)}, concurrency, log)
        return [_record_of(cfg, trial) for trial in trials]
    records = []
    for trial in trials:  # Optuna: per method, a search with the first seed, then its best point's other seeds
        label, space = trial["label"], cfg.tune.space.get(trial["label"], {})
        if space:
            log(
                f"sweep: {label}: {cfg.tune.num_samples} Optuna trial(s) with seed {trial['seed']}, "
                f"{concurrency} at a time"
            )
            results = _fit(
                cfg,
                tune_dir / f"optuna-{label}",
                {"label": label, "seed": trial["seed"], "params": {k: _tune_domain(v) for k, v in space.items()}},
                concurrency,
                log,
                searcher=True,
            )
            searched = [_record_of(cfg, make_trial(label, r.config["params"], r.config["seed"])) for r in results]
        else:
            _fit(cfg, tune_dir / f"optuna-{label}", {"trial": tune.grid_search([trial])}, concurrency, log)
            searched = [_record_of(cfg, trial)]
        records += searched
        best = best_params(cfg, searched)
        if best is not None and len(cfg.tune.seeds) > 1:
            seeded = [make_trial(label, best, seed) for seed in cfg.tune.seeds[1:]]
            log(
                f"sweep: {label}: best point {_describe(best) or '(no parameters)'}, trained with seeds "
                f"{', '.join(str(s) for s in cfg.tune.seeds[1:])}"
            )
            _fit(cfg, tune_dir / f"seeds-{label}", {"trial": tune.grid_search(seeded)}, concurrency, log)
            records += [_record_of(cfg, t) for t in seeded]
    return records


def _fit(
    cfg: ExperimentConfig, path: Any, space: dict, concurrency: int, log: Callable[[str], None], searcher: bool = False
) -> Any:
    """Run (or restore and finish) one Tuner at `path` over trials of `_trial`; returns its ResultGrid."""
    from ray import tune

    # A run also reports at checkpoints between evaluations, without the validation metric: Tune must not
    # take that for a trial that forgot its metric (ASHA and the Optuna searcher skip such reports).
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
    # Trials run where the driver runs (Tune would chdir into a trial folder, and every relative path of
    # the config, storage_path first, would point somewhere else). Tune passes this on to its trials.
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    # In local mode a trial trains in its own process: it reserves the training worker's resources.
    trainable = tune.with_resources(
        _trial, worker_bundle(cfg)[0] if cfg.scaling.local_mode else {"CPU": cfg.tune.trial_cpus}
    )
    where = ray_storage(path)  # {storage_path, storage_filesystem (object stores)} of the Tuner's folder
    if tune.Tuner.can_restore(where["storage_path"], where.get("storage_filesystem")):
        log(f"sweep: resuming the sweep in {path} (finished trials are kept)")
        return tune.Tuner.restore(
            where["storage_path"],
            trainable=trainable,
            resume_errored=True,
            storage_filesystem=where.get("storage_filesystem"),
        ).fit()
    metric, mode = f"val_{cfg.eval.metric}", "max" if METRICS[cfg.eval.metric].higher_is_better else "min"
    scheduler = search_alg = None
    if cfg.tune.scheduler == "asha":
        from ray.tune.schedulers import ASHAScheduler

        # Rungs at evaluations before the last step only: a trial stopped at its last report (ASHA's max_t, or
        # a rung there) would be killed after all its training, before its test metrics and record.
        scheduler = ASHAScheduler(
            time_attr="step",
            max_t=cfg.training.max_steps - 1,
            grace_period=cfg.eval.every_n_steps,
            stop_last_trials=False,
        )
    if searcher:
        search_alg = optuna_searcher(metric, mode, cfg.seed)

    def name(t: Any) -> str:
        c = t.config
        return c["trial"]["name"] if "trial" in c else make_trial(c["label"], c["params"], c["seed"])["name"]

    tuner = tune.Tuner(
        trainable,
        param_space={"experiment": cfg.model_dump(mode="json"), **space},
        tune_config=tune.TuneConfig(
            metric=metric,
            mode=mode,
            max_concurrent_trials=concurrency,
            scheduler=scheduler,
            search_alg=search_alg,
            num_samples=cfg.tune.num_samples if searcher else 1,
            trial_dirname_creator=name,
            trial_name_creator=name,
            # A trial that ASHA stops is still inside its TorchTrainer's fit(): Tune could
            # not reset its process for the next trial, and would fail that trial instead.
            reuse_actors=cfg.tune.reuse_actors and scheduler is None,
        ),
        run_config=tune.RunConfig(
            name=path.name,
            verbose=0,
            callbacks=[_progress_callback(len(space_trials(space))), *tune_callbacks(cfg.tracking, cfg.run.name)],
            **ray_storage(path.parent),
        ),
    )
    return tuner.fit()


def space_trials(space: dict) -> list:
    """The trials of a grid param_space ({"trial": tune.grid_search([...])}); [] for a searcher's space."""
    trial = space.get("trial")
    return list(trial.get("grid_search", [])) if isinstance(trial, dict) else []


def _progress_callback(total: int) -> Any:
    """A Tune callback that moves a progress bar (with ETA) over the sweep's trials on the terminal."""
    from ray import tune

    class Progress(tune.Callback):
        def __init__(self) -> None:
            self.bar = console.progress(total, "sweep", unit="trial") if total else console.progress(0, "")

        def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.bar.update(1)

        def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
            self.bar.update(1)

        def on_experiment_end(self, trials: list, **info: Any) -> None:
            self.bar.close()

    return Progress()


def _record_of(cfg: ExperimentConfig, trial: dict) -> dict:

    record = read_record(child(cfg.experiment_dir, SWEEP_FOLDER, trial["name"]))
    return record or {
        "label": trial["label"],
        "group": trial["group"],
        "seed": trial["seed"],
        "status": "stopped",
        "trial": {"name": trial["name"], "params": trial["params"]},
    }


def best_params(cfg: ExperimentConfig, records: list[dict]) -> dict | None:
    """The parameters of the finished record with the best final validation metric (None: none finished)."""

    sign = -1 if METRICS[cfg.eval.metric].higher_is_better else 1
    scored = [
        (sign * r["final"]["validation"][cfg.eval.metric], i, r)
        for i, r in enumerate(records)
        if r.get("status") == "finished" and (r["final"].get("validation") or {}).get(cfg.eval.metric) is not None
    ]
    return min(scored)[2]["trial"]["params"] if scored else None


def summarize_sweep(records: list[dict]) -> str:
    lines = []
    for record in records:
        name = (record.get("trial") or {}).get("name") or record.get("label")
        if record.get("status") != "finished":
            lines.append(f"  {name:<40} {record.get('status')}")
            continue
        metric = record["metric"]["name"]
        ttt = record["time_to_target"]
        lines.append(
            f"  {name:<40} test {metric} {record['final']['test'].get(metric, float('nan')):.4g}, "
            f"{record['times']['train_s']:.0f}s, {record['cost']['total']:.4f} {record['cost']['currency']}, "
            + (f"target at {ttt['wall_s']:.0f}s" if ttt else "target not reached")
        )
    return "\n".join(lines)


def stage_one_labels(cfg: ExperimentConfig) -> list[str]:
    """Method entries other runs start from: the teacher's training and pretraining."""
    return [
        m.label or m.name
        for m in cfg.methods
        if getattr(m, "model", None) == "teacher" or get_method(m.name).makes_base
    ]

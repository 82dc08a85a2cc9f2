"""Sweeps without Ray: the trial plan (grid, random, seeds), per-trial configs, concurrency, errors."""

from __future__ import annotations

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import ConfigError, UserError
from ray_t2t.sweeps import _concurrency, _tune_domain, best_params, make_trial, plan_trials, trial_config

from conftest import REPO, minimal_config


def sweep_config(tmp_path, **tune):
    raw = minimal_config(
        tmp_path,
        methods=[
            {"name": "scratch"},
            {"name": "scratch", "label": "teacher", "model": "teacher"},
            {"name": "kd_logits"},
        ],
    )
    raw["models"]["teacher"] = {"preset": "t5-tiny"}
    raw["tune"] = tune
    return validate_config(raw)


def test_grid_is_every_combination_times_every_seed_and_skips_the_teacher(tmp_path):
    cfg = sweep_config(
        tmp_path,
        seeds=[0, 1],
        space={
            "kd_logits": {"alpha": [0.2, 0.8], "temperature": [1, 2, 4]},
            "scratch": {"training.learning_rate": [1e-3, 3e-3]},
        },
    )
    trials = plan_trials(cfg)
    assert len(trials) == (2 + 6) * 2
    assert {t["label"] for t in trials} == {"scratch", "kd_logits"}
    groups = {t["group"] for t in trials}
    assert "kd_logits (alpha=0.2, temperature=4)" in groups and len(groups) == 8
    names = [t["name"] for t in trials]
    assert len(set(names)) == len(names)
    assert all(sum(t["group"] == g for t in trials) == 2 for g in groups)  # each group once per seed
    assert plan_trials(cfg) == trials  # deterministic


def test_random_search_draws_reproducibly_within_bounds(tmp_path):
    space = {
        "kd_logits": {
            "alpha": {"uniform": [0.1, 0.9]},
            "training.learning_rate": {"loguniform": [1e-4, 1e-2]},
            "top_k": {"randint": [4, 16]},
            "divergence": {"choice": ["forward_kl", "jsd"]},
        }
    }
    cfg = sweep_config(tmp_path, search="random", num_samples=5, methods=["kd_logits"], space=space, seeds=[0])
    trials = plan_trials(cfg)
    assert len(trials) == 5 and trials == plan_trials(cfg)
    for t in trials:
        p = t["params"]
        assert 0.1 <= p["alpha"] <= 0.9 and 1e-4 <= p["training.learning_rate"] <= 1e-2
        assert 4 <= p["top_k"] <= 16 and p["divergence"] in ("forward_kl", "jsd")
    assert len({t["params"]["alpha"] for t in trials}) == 5


def test_optuna_plans_one_checked_trial_per_method_and_maps_the_space_to_tune(tmp_path):
    space = {
        "kd_logits": {
            "alpha": {"uniform": [0.1, 0.9]},
            "training.learning_rate": {"loguniform": [1e-4, 1e-2]},
            "top_k": {"randint": [4, 16]},
            "divergence": ["forward_kl", "jsd"],
        }
    }
    cfg = sweep_config(tmp_path, search="optuna", num_samples=8, seeds=[3, 4], space=space)
    trials = plan_trials(cfg)  # the rest are suggested while the sweep runs
    assert [(t["label"], t["seed"]) for t in trials] == [("scratch", 3), ("kd_logits", 3)]
    first = trials[1]["params"]
    assert first == {
        "alpha": 0.1,
        "training.learning_rate": pytest.approx(1e-3),
        "top_k": 4,
        "divergence": "forward_kl",
    }
    assert trial_config(cfg, trials[1]).methods[2].top_k == 4
    domains = {key: _tune_domain(spec) for key, spec in space["kd_logits"].items()}
    assert (domains["alpha"].lower, domains["alpha"].upper) == (0.1, 0.9)
    assert type(domains["training.learning_rate"].get_sampler()).__name__.strip("_") == "LogUniform"
    assert (domains["top_k"].lower, domains["top_k"].upper) == (4, 17)  # Tune's upper end is exclusive
    assert domains["divergence"].categories == ["forward_kl", "jsd"]


def test_best_params_is_the_best_final_validation_metric(tmp_path):
    cfg = sweep_config(tmp_path, search="optuna")  # wer: lower is better

    def record(lr, wer, status="finished"):
        return {
            "status": status,
            "final": {"validation": {"wer": wer}, "test": {"wer": 0.0}},
            "trial": {"params": {"training.learning_rate": lr}},
        }

    records = [record(1e-3, 0.6), record(3e-3, 0.4), record(1e-2, 0.1, status="failed"), record(2e-3, 0.4)]
    assert best_params(cfg, records) == {"training.learning_rate": 3e-3}  # ties: the first
    assert best_params(cfg, [record(1e-2, 0.1, status="failed")]) is None
    assert make_trial("scratch", {}, 2)["name"] == "scratch-seed2"


def test_trial_config_applies_parameters_and_seed(tmp_path):
    cfg = sweep_config(tmp_path, seeds=[7], space={"kd_logits": {"alpha": [0.9], "training.learning_rate": [0.01]}})
    trial = next(t for t in plan_trials(cfg) if t["label"] == "kd_logits")
    one = trial_config(cfg, trial)
    assert one.seed == 7 and one.training.learning_rate == 0.01
    assert one.methods[2].alpha == 0.9 and cfg.methods[2].alpha == 0.5


@pytest.mark.parametrize(
    "tune, message",
    [
        ({"space": {"nope": {"alpha": [1]}}}, "tune.space.nope: not a method this sweep trains"),
        ({"space": {"kd_logits": {"alpah": [1]}}}, "'alpah' is not a parameter of method 'kd_logits'"),
        ({"space": {"kd_logits": {"alpha": {"uniform": [0, 1]}}}}, "grid search takes lists"),
        ({"search": "random", "space": {"kd_logits": {"alpha": {"uniform": [1, 0]}}}}, "uniform takes [low, high]"),
        ({"space": {"kd_logits": {"alpha": 0.5}}}, "give a list of values"),
        ({"methods": ["kd_logit"]}, "tune.methods: kd_logit is not a method label"),
        (
            {"search": "optuna", "space": {"kd_logits": {"alpha": {"loguniform": [0, 1]}}}},
            "loguniform needs a positive",
        ),
    ],
)
def test_sweep_mistakes_name_the_key(tmp_path, tune, message):
    with pytest.raises(ConfigError) as err:
        plan_trials(sweep_config(tmp_path, **tune))
    assert message in str(err.value)


def test_a_value_the_method_refuses_names_the_trial(tmp_path):
    cfg = sweep_config(tmp_path, space={"kd_logits": {"alpha": [2.0]}})
    trial = next(t for t in plan_trials(cfg) if t["label"] == "kd_logits")
    with pytest.raises(ConfigError, match=f"(?s)trial {trial['name']}: .*alpha"):
        trial_config(cfg, trial)


def test_concurrency_follows_resources(tmp_path):
    raw = minimal_config(tmp_path, scaling={"num_workers": 1, "resources_per_worker": {"CPU": 2}})
    cfg = validate_config(raw)
    assert _concurrency(cfg, 2, 0) == 1 and _concurrency(cfg, 8, 0) == 3  # 2.5 CPUs a trial
    assert _concurrency(cfg, 8, 0, trial_cpus=False) == 4  # a local Ray gives trials extra logical CPUs
    gpu = validate_config(dict(raw, scaling={"num_workers": 2, "use_gpu": True, "resources_per_worker": {"CPU": 1}}))
    assert _concurrency(gpu, 64, 4) == 2
    capped = validate_config(dict(raw, tune={"max_concurrent_trials": 1}))
    assert _concurrency(capped, 64, 0) == 1


def test_the_sweep_stage_starts_from_what_stage_one_trained(tmp_path):
    from ray_t2t.pipeline import with_stage_one_models

    raw = minimal_config(
        tmp_path,
        methods=[
            {"name": "pretrain"},
            {"name": "finetune"},
            {"name": "sft"},
            {"name": "scratch", "label": "big", "model": "teacher"},
        ],
    )
    raw["models"] = {"student": {"preset": "t5-tiny"}, "base": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-0.5m"}}
    cfg = validate_config(raw)
    swept = with_stage_one_models(cfg)
    runs = (tmp_path / "runs" / "test" / "runs").resolve()
    assert swept.models.base.name_or_path == str(runs / "pretrain" / "model")
    assert swept.models.teachers[0].name_or_path == str(runs / "big" / "model")
    assert swept.models.student == cfg.models.student
    # a teacher fine-tuned from Hub weights is the fine-tuned one too; a base nobody pretrains stays
    hub = dict(
        raw,
        methods=[{"name": "finetune"}, {"name": "finetune", "label": "big", "model": "teacher"}],
        models=dict(
            raw["models"], base={"name_or_path": "google-t5/t5-small"}, teacher={"name_or_path": "google-t5/t5-base"}
        ),
    )
    swept = with_stage_one_models(validate_config(hub))
    assert swept.models.base.name_or_path == "google-t5/t5-small"
    assert swept.models.teachers[0].name_or_path == str(runs / "big" / "model")


@pytest.mark.parametrize(
    "name",
    [
        "quickstart.yaml",
        "g2p_full.yaml",
        "quickstart_smoke.yaml",
        "g2p_gpu.yaml",
        "xsum_t5.yaml",
        "xsum_gpt2.yaml",
        "alternatives.yaml",
    ],
)
def test_shipped_pipelines_plan_their_sweeps(name, repo):
    from ray_t2t.config.experiment import load_config
    from ray_t2t.pipeline import with_stage_one_models
    from ray_t2t.sweeps import stage_one_labels

    cfg = load_config(repo / "configs" / name)
    swept = with_stage_one_models(cfg)
    trials = plan_trials(swept)
    assert trials and all(trial_config(swept, t) for t in trials)
    assert not {t["label"] for t in trials} & {label for label in stage_one_labels(cfg) if label == "teacher"}


def test_a_local_ray_runs_without_ray_trains_preemption_watcher(monkeypatch):
    from ray_t2t.ray_cluster import job_env_vars

    monkeypatch.delenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", raising=False)
    assert job_env_vars(use_gpu=False, local=True)["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"
    # a cluster's nodes can be preempted: Ray Train keeps its default there
    assert "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER" not in job_env_vars(use_gpu=True, local=False)
    monkeypatch.setenv("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "1")  # the user's own setting wins
    assert job_env_vars(use_gpu=False, local=True)["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "1"


def test_local_mode_trials_reserve_their_worker_and_nothing_besides(tmp_path):
    """scaling.local_mode: a trial trains in its own process, so it reserves the worker's bundle and no
    tune.trial_cpus on top; a local Ray declares no extra logical CPUs for waiting trials."""
    from ray_t2t.preflight import requests
    from ray_t2t.sweeps import waiting_cpus

    raw = minimal_config(tmp_path, scaling={"num_workers": 1, "resources_per_worker": {"CPU": 1}, "local_mode": True})
    cfg = validate_config(raw)
    assert _concurrency(cfg, 2, 0) == 2 and _concurrency(cfg, 2, 0, trial_cpus=False) == 2
    assert waiting_cpus(cfg) == 0
    assert [(r.stage, r.bundle, r.count) for r in requests(cfg, ("train", "sweep"))] == [("train", {"CPU": 1.0}, 1)]
    workers = validate_config(dict(raw, scaling={"num_workers": 1, "resources_per_worker": {"CPU": 1}}))
    assert _concurrency(workers, 2, 0) == 1 and waiting_cpus(workers) == 1
    assert [r.stage for r in requests(workers, ("train", "sweep"))] == ["train", "sweep"]


@pytest.mark.parametrize(
    "scaling, tune, message",
    [
        (
            {"num_workers": 2, "local_mode": True},
            {},
            "scaling: local_mode trains one worker in the calling process, but num_workers is 2",
        ),
        ({}, {"scheduler": "asha"}, "eval.every_n_steps (500) leaves none before training.max_steps (500)"),
    ],
)
def test_settings_that_cannot_work_together_are_refused(tmp_path, scaling, tune, message):
    raw = minimal_config(tmp_path, scaling=scaling, tune=tune, training={"max_steps": 500}, eval={"every_n_steps": 500})
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    assert message in str(err.value)


def test_local_mode_restarts_a_failed_run_up_to_run_max_failures(tmp_path):
    """Ray Train restarts nothing in local mode: the launcher restarts fit() (the loop resumes from its
    checkpoint) as often as run.max_failures allows, -1 without limit; with workers Ray Train does it."""
    from ray_t2t.training.launcher import _fit

    class Trainer:
        def __init__(self, failures: int):
            self.failures, self.calls = failures, 0

        def fit(self):
            self.calls += 1
            if self.calls <= self.failures:
                raise RuntimeError(f"failure {self.calls}")

    def attempt(failures: int, max_failures: int, local_mode: bool = True):
        cfg = validate_config(
            minimal_config(tmp_path, run={"name": "t", "storage_path": str(tmp_path), "max_failures": max_failures})
        )
        trainer, messages = Trainer(failures), []
        try:
            _fit(trainer, cfg, "run", messages.append, local_mode)
        except RuntimeError as err:
            return trainer.calls, messages, str(err)
        return trainer.calls, messages, None

    assert attempt(2, 2) == (
        3,
        [
            "run: training failed (RuntimeError: failure 1); restart 1 of 2 from its last checkpoint",
            "run: training failed (RuntimeError: failure 2); restart 2 of 2 from its last checkpoint",
        ],
        None,
    )
    assert attempt(2, 1)[0::2] == (2, "failure 2")
    assert attempt(3, -1)[0] == 4 and attempt(3, -1)[1][-1].endswith("restart 3 from its last checkpoint")
    assert attempt(1, 0)[0::2] == (1, "failure 1")
    assert attempt(1, 5, local_mode=False)[0::2] == (1, "failure 1")  # Ray Train's FailureConfig restarts workers


def test_local_mode_trains_in_process_in_sweep_trials_anywhere_and_in_the_driver_only_on_a_local_ray(
    tmp_path, monkeypatch
):
    from ray_t2t.training.launcher import trains_in_process

    cfg = validate_config(minimal_config(tmp_path, scaling={"local_mode": True}))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert trains_in_process(cfg, sweep_trial=False) and trains_in_process(cfg, sweep_trial=True)
    monkeypatch.setenv("RAY_ADDRESS", "http://head:8265")  # a job on a cluster: the driver is on the head node
    assert not trains_in_process(cfg, sweep_trial=False) and trains_in_process(cfg, sweep_trial=True)
    assert not trains_in_process(validate_config(minimal_config(tmp_path)), sweep_trial=True)


def test_a_lone_local_mode_run_starts_no_ray_unless_something_needs_it(tmp_path, monkeypatch):
    """Ray Train's local mode needs no Ray: a lone run in it skips starting one, except in a sweep
    trial, with a cluster named (RAY_ADDRESS) or joined already, and for a worker that asks for a
    resource only a Ray node declares (accelerator types, custom resources)."""
    import ray

    from ray_t2t.training.launcher import needs_no_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    local = validate_config(minimal_config(tmp_path, scaling={"local_mode": True, "resources_per_worker": {"CPU": 1}}))
    assert needs_no_ray(local, sweep_trial=False)
    assert not needs_no_ray(local, sweep_trial=True)
    custom = validate_config(
        minimal_config(tmp_path, scaling={"local_mode": True, "resources_per_worker": {"CPU": 1, "ssd": 1}})
    )
    assert not needs_no_ray(custom, sweep_trial=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: True)  # `ray-t2t run` started Ray for its other stages
    assert not needs_no_ray(local, sweep_trial=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setenv("RAY_ADDRESS", "auto")
    assert not needs_no_ray(local, sweep_trial=False)


def test_ray_trains_local_mode_notice_is_left_out_of_the_run_log():
    """Ray Train logs a "please file a report" notice for every local-mode ScalingConfig; ray_t2t says
    where a run trains itself, so that one line is filtered out and the logger's other lines are kept."""
    import logging

    from ray.train import ScalingConfig

    from ray_t2t.training.launcher import _LocalModeNotice, _quiet_local_mode_notice

    logger = logging.getLogger("ray.train.v2.api.config")
    for earlier in [f for f in logger.filters if isinstance(f, _LocalModeNotice)]:  # an in-process run before
        logger.removeFilter(earlier)
    seen: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: seen.append(record.getMessage())
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        ScalingConfig(num_workers=0)
        assert any(line.startswith("Running in local mode.") for line in seen)  # Ray's own notice, unfiltered
        seen.clear()
        _quiet_local_mode_notice()
        _quiet_local_mode_notice()  # once is enough; twice adds nothing
        ScalingConfig(num_workers=0)
        logger.info("another line")
        assert seen == ["another line"]
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_optuna_is_an_optional_dependency_checked_by_validate(tmp_path, capsys, monkeypatch):
    """Without optuna installed, tune.search: optuna is refused by validate (and before a sweep), saying
    what to install; the other searches need nothing more."""
    import importlib.util

    from ray_t2t.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    quickstart = str(REPO / "configs/quickstart.yaml")
    assert main(["validate", quickstart, "tune.search=optuna"]) == 2
    assert "pip install 'ray-t2t[optuna]'" in capsys.readouterr().err
    with pytest.raises(UserError, match="optuna needs the optuna package"):
        plan_trials(sweep_config(tmp_path, search="optuna"))
    assert main(["validate", quickstart, "tune.search=random"]) == 0

"""Checks before any work (ray_t2t.preflight), without Ray: the cluster is a list of node resources.

Bad cluster-side input — a worker bigger than every node, an accelerator no node has, a storage
path that cannot be written — fails before data, teacher inference or training, with a message that
names the config key to change."""

from __future__ import annotations

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import ConfigError
from ray_t2t.preflight import check_fits, check_storage_writable, needs_soft_targets, worker_bundle

from conftest import minimal_config

HEAD = {"CPU": 0.0, "memory": 8e9, "node:__internal_head__": 1.0}  # schedules no training work
A10G = {"CPU": 8.0, "GPU": 1.0, "memory": 30e9, "accelerator_type:A10G": 1.0}
CPU2 = {"CPU": 2.0, "memory": 4e9}


def config(tmp_path, **sections):
    return validate_config(minimal_config(tmp_path, **sections))


# ------------------------------------------------------------------------------------------ storage


@pytest.mark.parametrize(
    "uri,why",
    [
        ("ftp://host/runs", "unknown storage scheme ftp://"),
        ("file:///tmp/runs", "as a plain path (e.g. /tmp/runs)"),
        ("s3://", "no bucket"),
    ],
)
def test_a_storage_uri_ray_t2t_cannot_use_is_refused_at_validation(tmp_path, uri, why):
    raw = minimal_config(tmp_path)
    raw["run"]["storage_path"] = uri
    with pytest.raises(ConfigError) as err:
        validate_config(raw)
    message = str(err.value)
    assert "run.storage_path" in message and uri in message and why in message


@pytest.mark.parametrize(
    "uri,folder",
    [
        ("s3://bucket/ray_t2t_runs", "s3://bucket/ray_t2t_runs/test"),
        ("gs://bucket/runs/?project_id=p", "gs://bucket/runs/test?project_id=p"),
    ],
)
def test_an_object_store_uri_is_a_valid_storage_path(tmp_path, uri, folder):
    raw = minimal_config(tmp_path)
    raw["run"]["storage_path"] = uri
    assert str(validate_config(raw).experiment_dir) == folder


def test_a_writable_storage_path_is_checked_and_left_as_it_was(tmp_path):
    """The check creates the folder and a file in it, then removes what it created: a command refused
    after it leaves nothing behind; a folder that was there stays, clean."""
    cfg = config(tmp_path, run={"name": "exp", "storage_path": str(tmp_path / "new" / "runs")})
    folder = check_storage_writable(cfg)
    assert folder == tmp_path / "new" / "runs" / "exp" and not (tmp_path / "new").exists()
    folder.mkdir(parents=True)
    assert check_storage_writable(cfg) == folder and folder.is_dir()
    assert list(folder.iterdir()) == []  # the probe file is gone


def test_an_unwritable_storage_path_names_run_storage_path(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    cfg = config(tmp_path, run={"name": "exp", "storage_path": str(blocker / "runs")})
    with pytest.raises(ConfigError, match=r"run.storage_path=.*a_file/runs.* is not writable: .*Set run.storage_path"):
        check_storage_writable(cfg)


def test_a_relative_storage_path_is_refused_inside_a_ray_job(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = config(tmp_path, run={"name": "exp", "storage_path": "./ray_t2t_runs"})
    assert check_storage_writable(cfg).resolve() == tmp_path / "ray_t2t_runs" / "exp"  # fine on a laptop
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "{}")  # what Ray sets for a job's entrypoint
    with pytest.raises(ConfigError, match=r"relative path, and this runs as a Ray job.*run.storage_path=/mnt/shared"):
        check_storage_writable(cfg)


# --------------------------------------------------------------------------------- cluster: refusals


def test_more_gpus_per_worker_than_any_node_offers_is_refused(tmp_path):
    cfg = config(tmp_path, scaling={"use_gpu": True, "resources_per_worker": {"GPU": 2, "CPU": 4}})
    with pytest.raises(ConfigError) as err:
        check_fits(cfg, ["train"], [HEAD, A10G, A10G])
    message = str(err.value)
    assert "each training worker asks for {GPU: 2, CPU: 4}" in message
    assert "no node of this Ray cluster has GPU: 2" in message
    assert "lower scaling.resources_per_worker.GPU to at most 1" in message
    assert "2 x {GPU: 1, CPU: 8}" in message  # what the nodes offer


def test_a_gpu_run_on_cpu_nodes_says_to_train_on_cpu(tmp_path):
    cfg = config(tmp_path, scaling={"use_gpu": True})
    with pytest.raises(ConfigError, match=r"asks for \{GPU: 1\}.*set scaling.use_gpu=false"):
        check_fits(cfg, ["train"], [CPU2])


def test_an_accelerator_type_no_node_has_is_refused(tmp_path):
    cfg = config(tmp_path, scaling={"use_gpu": True, "accelerator_type": "H100"})
    with pytest.raises(
        ConfigError,
        match=r"an accelerator of type H100.*accelerator: A10G.*scaling.accelerator_type to "
        r"one the nodes have \(A10G\)",
    ):
        check_fits(cfg, ["train"], [HEAD, A10G])
    cfg = config(tmp_path, scaling={"use_gpu": True, "accelerator_type": "A10G"})
    assert check_fits(cfg, ["train"], [HEAD, A10G]) == []


def test_teacher_replicas_with_gpus_on_a_cpu_cluster_are_refused(tmp_path):
    cfg = config(tmp_path, soft_targets={"gpus_per_replica": 1})
    with pytest.raises(
        ConfigError,
        match=r"each teacher replica asks for \{CPU: 1, GPU: 1\}.*"
        r"set soft_targets.gpus_per_replica to 0 \(CPU inference\)",
    ):
        check_fits(cfg, ["teacher"], [CPU2])
    assert check_fits(cfg, ["train"], [CPU2]) == []  # each stage checks only what it runs


def test_more_workers_than_a_fixed_cluster_holds_at_once_are_refused(tmp_path):
    cfg = config(tmp_path, scaling={"num_workers": 4, "resources_per_worker": {"CPU": 4}})
    with pytest.raises(
        ConfigError,
        match=r"scaling.num_workers=4 training workers of \{CPU: 4\} must run at once, "
        r"but this Ray cluster \(no autoscaler\) holds only 2.*Lower scaling.num_workers to 2",
    ):
        check_fits(cfg, ["train"], [HEAD, A10G])
    spread = config(tmp_path, scaling={"num_workers": 2, "placement_strategy": "STRICT_SPREAD"})
    with pytest.raises(ConfigError, match="on distinct nodes"):
        check_fits(spread, ["train"], [CPU2])
    assert check_fits(spread, ["train"], [CPU2, CPU2]) == []


def test_a_sweep_trial_must_fit_next_to_its_workers(tmp_path):
    cfg = config(tmp_path, scaling={"num_workers": 2}, tune={"trial_cpus": 0.5})
    with pytest.raises(
        ConfigError, match=r"a sweep trial needs \{CPU: 0.5\} \(tune.trial_cpus\).*holds only 2 of those 3"
    ):
        check_fits(cfg, ["sweep"], [CPU2])
    assert check_fits(cfg, ["sweep"], [{"CPU": 3.0}]) == []  # a local sweep declares extra logical CPUs


def test_teacher_replicas_beyond_the_cluster_are_only_noted(tmp_path):
    cfg = config(tmp_path, soft_targets={"replicas": 4})
    notes = check_fits(cfg, ["teacher"], [CPU2])
    assert notes and "holds 2 teacher replica(s)" in notes[0]


# ------------------------------------------------------------------------------ cluster: autoscaling


def test_an_autoscaling_cluster_with_unknown_node_types_is_not_refused(tmp_path):
    """Nodes an autoscaler could add do not show in ray.nodes(): a CPU-only head says nothing about them."""
    cfg = config(tmp_path, scaling={"use_gpu": True, "num_workers": 8})
    notes = check_fits(cfg, ["train"], [HEAD], node_types=None, autoscaling=True)
    assert len(notes) == 1 and "not checked" in notes[0]


def test_an_autoscaling_cluster_with_known_node_types_checks_the_types_not_the_count(tmp_path):
    cfg = config(tmp_path, scaling={"use_gpu": True, "num_workers": 8})
    assert check_fits(cfg, ["train"], [HEAD], node_types=[A10G], autoscaling=True) == []
    big = config(tmp_path, scaling={"use_gpu": True, "resources_per_worker": {"GPU": 8}})
    with pytest.raises(ConfigError, match="no node type of this autoscaling Ray cluster, nor any node, has GPU: 8"):
        check_fits(big, ["train"], [HEAD], node_types=[A10G, {"CPU": 48.0, "GPU": 4.0}], autoscaling=True)


# ------------------------------------------------------------------------------------------ helpers


def test_worker_bundle_mirrors_ray_train_scaling_config(tmp_path):
    from ray.train import ScalingConfig

    for scaling in (
        {},
        {"use_gpu": True},
        {"resources_per_worker": {"CPU": 2}},
        {"use_gpu": True, "resources_per_worker": {"CPU": 4}},
        {"use_gpu": True, "accelerator_type": "A10G", "resources_per_worker": {"CPU": 4, "GPU": 2}},
    ):
        cfg = config(tmp_path, scaling=scaling)
        s = cfg.scaling
        ray_side = ScalingConfig(
            num_workers=s.num_workers,
            use_gpu=s.use_gpu,
            resources_per_worker=s.resources_per_worker,
            accelerator_type=s.accelerator_type,
        )._resources_per_worker_not_none
        assert worker_bundle(cfg)[0] == ray_side, scaling


def test_needs_soft_targets(tmp_path):
    teacher = {"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-tiny"}}
    assert not needs_soft_targets(config(tmp_path, methods=[{"name": "scratch"}]))
    assert needs_soft_targets(config(tmp_path, models=teacher, methods=[{"name": "kd_logits"}]))
    assert not needs_soft_targets(
        config(tmp_path, models=teacher, methods=[{"name": "kd_logits", "teacher_source": "online"}])
    )


# ------------------------------------------------------------------ entry points refuse before any work


def test_train_refuses_an_impossible_worker_before_preparing_data(tmp_path, monkeypatch):
    import ray_t2t.preflight as preflight
    import ray_t2t.training.launcher as launcher

    monkeypatch.setattr(launcher, "ensure_ray", lambda *args, **kwargs: True)
    monkeypatch.setattr(preflight, "cluster_view", lambda: ([CPU2], None, False))
    cfg = config(tmp_path, methods=[{"name": "scratch"}], scaling={"use_gpu": True})
    with pytest.raises(ConfigError, match="set scaling.use_gpu=false"):
        launcher.train(cfg, "scratch", log=lambda message: None)
    assert not (cfg.experiment_dir / "data").exists() and not (cfg.experiment_dir / "runs").exists()


def test_train_refuses_an_unwritable_storage_path_before_starting_ray(tmp_path, monkeypatch):
    import ray_t2t.training.launcher as launcher

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the storage check")

    monkeypatch.setattr(launcher, "ensure_ray", no_ray)
    (tmp_path / "a_file").write_text("")
    cfg = config(tmp_path, methods=[{"name": "scratch"}], run={"name": "x", "storage_path": str(tmp_path / "a_file")})
    with pytest.raises(ConfigError, match="run.storage_path=.* is not writable"):
        launcher.train(cfg, "scratch", log=lambda message: None)


def test_a_lone_local_mode_run_is_checked_against_this_machine_without_starting_ray(tmp_path, monkeypatch):
    """scaling.local_mode outside a sweep: the run trains in this process and no Ray is started for it;
    its worker is checked against this machine's CPUs (as a local Ray counts them) before any data."""
    import ray

    import ray_t2t.preflight as preflight
    import ray_t2t.training.launcher as launcher

    class Prepared(Exception):
        pass

    def no_ray(*args, **kwargs):
        raise AssertionError("a Ray was started for a run in local mode")

    def prepare(*args, **kwargs):
        raise Prepared

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(launcher, "ensure_ray", no_ray)
    monkeypatch.setattr(launcher, "prepare_data", prepare)
    monkeypatch.setattr(preflight, "machine_resources", lambda: dict(CPU2))
    big = config(
        tmp_path, methods=[{"name": "scratch"}], scaling={"local_mode": True, "resources_per_worker": {"CPU": 4}}
    )
    with pytest.raises(ConfigError) as err:
        launcher.train(big, "scratch", log=lambda message: None)
    assert (
        "each training worker asks for {CPU: 4}, but this machine does not have CPU: 4 (this machine: "
        "1 x {CPU: 2}). To fix: lower scaling.resources_per_worker.CPU to at most 2"
    ) in str(err.value)
    assert not (big.experiment_dir / "data").exists() and not (big.experiment_dir / "runs").exists()
    fits = config(
        tmp_path, methods=[{"name": "scratch"}], scaling={"local_mode": True, "resources_per_worker": {"CPU": 2}}
    )
    with pytest.raises(Prepared):  # checked, no Ray, on to the data
        launcher.train(fits, "scratch", log=lambda message: None)


def test_this_machine_is_counted_as_a_local_ray_counts_it():
    from ray._private.utils import get_num_cpus

    from ray_t2t.preflight import machine_resources

    resources = machine_resources()
    assert resources["CPU"] == get_num_cpus() >= 1
    assert set(resources) <= {"CPU", "GPU"}


def test_a_sweep_refuses_before_preparing_data(tmp_path, monkeypatch):
    import ray_t2t.preflight as preflight
    import ray_t2t.sweeps as sweep
    from ray_t2t.sweeps import run_sweep

    monkeypatch.setattr(sweep, "ensure_ray", lambda *args, **kwargs: True)
    monkeypatch.setattr(preflight, "cluster_view", lambda: ([CPU2], None, False))
    cfg = config(tmp_path, methods=[{"name": "scratch"}], scaling={"resources_per_worker": {"CPU": 4}})
    with pytest.raises(ConfigError, match="lower scaling.resources_per_worker.CPU to at most 2"):
        run_sweep(cfg, log=lambda message: None)
    assert not (cfg.experiment_dir / "data").exists()


# ------------------------------------------------------------------- telling an autoscaler is there


@pytest.fixture
def gcs(monkeypatch, tmp_path):
    """What _autoscaler reads from Ray, faked: the reported cluster config, the KV store, $HOME."""
    import ray._private.state
    import ray.experimental.internal_kv

    kv: dict[bytes, bytes] = {}
    monkeypatch.setattr(ray._private.state.state, "get_cluster_config", lambda: None)
    monkeypatch.setattr(
        ray.experimental.internal_kv,
        "_internal_kv_get",
        lambda key, namespace=None: kv.get(key.encode() if isinstance(key, str) else key),
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RAY_USAGE_STATS_KUBERAY_IN_USE", raising=False)
    (tmp_path / "home").mkdir()
    return kv


def monitor_status(*node_types: str) -> bytes:
    import json

    return json.dumps(
        {
            "autoscaler_report": {
                "active_nodes": {t: 1 for t in node_types},
                "idle_nodes": None,
                "pending_launches": {},
                "node_type_mapping": {},
            }
        }
    ).encode()


def test_a_local_or_hand_started_ray_is_a_fixed_cluster(gcs):
    from ray._private import ray_constants

    from ray_t2t.preflight import _autoscaler

    assert _autoscaler() == (None, False)  # nothing reported yet
    gcs[ray_constants.DEBUG_AUTOSCALING_STATUS.encode()] = monitor_status("node_18ce8f8698a64c1f")  # read-only monitor
    assert _autoscaler() == (None, False)


def test_an_autoscaler_is_recognised_by_its_node_types(gcs, monkeypatch):
    import ray
    from ray._private import ray_constants

    from ray_t2t.preflight import _autoscaler

    gcs[ray_constants.DEBUG_AUTOSCALING_STATUS.encode()] = monitor_status("node_18ce8f86", "gpu-l4")  # KubeRay group
    assert _autoscaler() == (None, True)
    gcs.clear()
    gcs[ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY.encode()] = b"1"
    assert _autoscaler() == (None, True)
    gcs.clear()
    monkeypatch.setenv("RAY_USAGE_STATS_KUBERAY_IN_USE", "1")  # KubeRay, autoscaler not reporting yet
    assert _autoscaler() == (None, True)


@pytest.mark.parametrize("shipped, most_gpus", [("aws.yaml", 4), ("gcp.yaml", 1)])
def test_on_a_ray_up_head_the_shipped_node_types_decide(gcs, tmp_path, shipped, most_gpus):
    """The driver of a job runs on the head, where `ray up` left its config: node types are known."""
    import shutil

    from ray_t2t.preflight import _autoscaler

    from conftest import REPO

    shutil.copy(REPO / "cluster" / shipped, tmp_path / "home" / "ray_bootstrap_config.yaml")
    types, scalable = _autoscaler()
    assert scalable and {"CPU": 8.0, "GPU": 1.0, "accelerator_type:L4": 1.0} in types
    one_l4 = config(
        tmp_path,
        scaling={
            "num_workers": 4,
            "use_gpu": True,
            "accelerator_type": "L4",
            "resources_per_worker": {"CPU": 4, "GPU": 1},
        },
    )
    assert check_fits(one_l4, ["train"], [HEAD], types, scalable) == []  # no GPU node yet: the autoscaler adds them
    eight = config(tmp_path, scaling={"use_gpu": True, "resources_per_worker": {"GPU": 8}})
    with pytest.raises(ConfigError, match=f"lower scaling.resources_per_worker.GPU to at most {most_gpus}"):
        check_fits(eight, ["train"], [HEAD], types, scalable)
    h100 = config(tmp_path, scaling={"use_gpu": True, "accelerator_type": "H100"})
    with pytest.raises(ConfigError, match=r"scaling.accelerator_type to one the nodes have \((A100, )?L4\)"):
        check_fits(h100, ["train"], [HEAD], types, scalable)


def test_the_pipeline_starts_ray_with_room_for_its_sweep_and_checks_every_stage_first(tmp_path, monkeypatch):
    """`ray-t2t run` trains the teacher first, then sweeps: the local Ray it starts declares the
    trials' waiting CPUs up front (as `ray-t2t sweep` does), so a sweep trial (tune.trial_cpus) fits
    next to a worker that takes every core; checked before the data is prepared."""
    import ray_t2t.pipeline as pipeline
    import ray_t2t.preflight as preflight
    from ray_t2t.pipeline import run_pipeline

    started = {}

    def fake_ensure_ray(use_gpu, extra_cpus=0):
        started["extra_cpus"] = extra_cpus
        return True

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    cores = float(__import__("os").cpu_count() or 1)
    monkeypatch.setattr(pipeline, "ensure_ray", fake_ensure_ray)
    monkeypatch.setattr(preflight, "cluster_view", lambda: ([{"CPU": cores + started["extra_cpus"]}], None, False))
    monkeypatch.setattr(pipeline, "prepare_data", stop)
    models = {"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-tiny"}}
    methods = [{"name": "scratch"}, {"name": "scratch", "label": "teacher", "model": "teacher"}]
    cfg = config(tmp_path, models=models, methods=methods, scaling={"resources_per_worker": {"CPU": cores}})
    with pytest.raises(Stop):
        run_pipeline(cfg, log=lambda message: None)
    assert started["extra_cpus"] >= 1

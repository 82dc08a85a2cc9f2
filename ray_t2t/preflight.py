"""Checks that run before any work: can the storage path be written, and can the Ray cluster ever
hold what the config asks of it? Each failure is a ConfigError that names the config key to change.

    from ray_t2t.preflight import check_storage_writable, check_cluster_fits
    check_storage_writable(cfg)               # no Ray needed
    check_cluster_fits(cfg, ("train",), log)  # after ray.init (ensure_ray)
    check_machine_fits(cfg, log)              # a run in local mode that starts no Ray (launcher.needs_no_ray)

What a stage asks for, mirroring what Ray schedules:
  train    scaling.num_workers bundles of ScalingConfig's per-worker resources (use_gpu adds GPU: 1,
           accelerator_type adds `accelerator_type:<T>`), placed with scaling.placement_strategy
  teacher  soft_targets.replicas actors of {CPU: cpus_per_replica, GPU: gpus_per_replica}
  sweep    per trial: one {CPU: tune.trial_cpus} trial bundle on top of the training workers
           (scaling.local_mode: none; the trial is its one training worker)

Which nodes count. Ray lists only the nodes that exist now, and an autoscaling cluster can add more
(how preflight tells which case it is in: _autoscaler):
- The node types are known (reported by the autoscaler to the GCS, or the `ray up` config on the
  head): a request must fit one node type or an existing node; the count is not checked when the
  types can scale (the autoscaler adds nodes).
- An autoscaler runs but its node types are unknown here (KubeRay): nothing is refused, since a node
  that fits may be added later; a log line says so (`ray status` lists requests no node type can
  satisfy).
- No Ray at all (a lone run in scaling.local_mode, training in this process): this machine's CPUs
  and GPUs, counted as a local Ray would count them, are the one node.
- No autoscaler (a fixed cluster, a local Ray): the existing nodes are all there is, so a bundle no
  node holds is refused before any work, and so are training workers (or a sweep trial with its
  workers) that cannot all be placed at once, which Ray would otherwise wait for forever. Teacher
  replicas that do not all fit are only noted: Ray Data runs with those that start.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ray_t2t.config.sections import storage_uri_problem
from ray_t2t.errors import ConfigError, shorten
from ray_t2t.methods import get_method
from ray_t2t.storage import StoragePath, is_uri

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig

STAGES = ("train", "teacher", "sweep")
ACCELERATOR_PREFIX = "accelerator_type:"
CLUSTER_HELP = "see cluster/README.md for the node types the shipped cluster configs offer"
_EPS = 1e-9
JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # set by Ray for the entrypoint of a submitted job


# ----------------------------------------------------------------------------------------- storage


def check_model_paths(cfg: ExperimentConfig) -> None:
    """Every models.* name_or_path written as a local path (/..., ./..., ../..., ~/...) is an existing
    folder; a Hub name (org/name) is looked up when the model loads. Raises ConfigError naming the key."""
    specs = [("models.student", cfg.models.student), ("models.base", cfg.models.base)]
    teachers = cfg.models.teachers
    specs += [(f"models.teacher{f'.{i}' if len(teachers) > 1 else ''}", spec) for i, spec in enumerate(teachers)]
    for key, spec in specs:
        value = spec.name_or_path if spec is not None else None
        if not value or is_uri(value) or not value.startswith(("/", "./", "../", "~")):
            continue
        if not Path(value).expanduser().is_dir():
            raise ConfigError(
                f"{key}.name_or_path: no folder {shorten(value)} (a local model is a save_pretrained folder)"
            )


def check_storage_writable(cfg: ExperimentConfig) -> StoragePath:
    """Create the experiment folder (<run.storage_path>/<run.name>) and a file in it, then remove both
    (the folder only if this check created it). Returns the folder; raises ConfigError naming
    run.storage_path when that fails (a missing bucket, no permission, no credentials), and, inside a
    submitted Ray job, for a relative path."""
    value = cfg.run.storage_path
    problem = storage_uri_problem(value)
    if problem:
        raise ConfigError(f"run.storage_path: {problem}")
    remote = is_uri(value)
    if not remote and not Path(value).is_absolute() and JOB_ENV in os.environ:
        raise ConfigError(
            f"run.storage_path={value!r} is a relative path, and this runs as a Ray job: it would resolve "
            f"inside the job's working directory ({os.getcwd()}), a temporary copy Ray deletes, and to other "
            "folders on other nodes. Give an absolute path that every node mounts, e.g. "
            "run.storage_path=/mnt/shared/ray_t2t_runs, or an object store URI such as s3://bucket/ray_t2t_runs "
            "(cluster/README.md, Storage)"
        )
    folder = cfg.experiment_dir
    probe = folder / f".ray_t2t_write_check.{os.getpid()}.{uuid.uuid4().hex[:8]}"
    # folders this check creates are removed again: a command refused later leaves nothing behind
    created = [] if remote else [p for p in [folder, *folder.parents] if not p.exists()]
    if remote:
        folder.exists()  # one request: a bucket out of reach fails here, in seconds, naming what to check
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ray_t2t")
        probe.unlink()
        for path in created:  # deepest first
            path.rmdir()
    except OSError as err:
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        reason = ((err.strerror or str(err)).strip().splitlines() or [repr(err)])[0]
        advice = (
            "Check the bucket exists and that this machine's credentials (AWS_* / GOOGLE_APPLICATION_CREDENTIALS "
            "environment variables, or the node's instance role) may write to it"
            if remote
            else "Set run.storage_path to a folder this user can write to (on a cluster: one every node mounts at "
            "the same path)"
        )
        raise ConfigError(
            f"run.storage_path={value!r} is not writable: cannot create files in {folder}: {reason}{where}. "
            f"{advice}; see cluster/README.md, Storage"
        ) from None
    return folder


# ----------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Request:
    """`count` bundles a stage needs at once. `keys` names, per resource, the config key that sets it."""

    stage: str
    what: str  # "training worker", "teacher replica", "sweep trial"
    bundle: dict[str, float]
    count: int
    strategy: str  # PACK, SPREAD, STRICT_PACK, STRICT_SPREAD
    keys: dict[str, str]
    count_key: str


def worker_bundle(cfg: ExperimentConfig) -> tuple[dict[str, float], dict[str, str]]:
    """One training worker's resources, as ray.train.ScalingConfig computes them, and the config key
    behind each."""
    scaling = cfg.scaling
    given = scaling.resources_per_worker
    keys: dict[str, str] = {}
    if given is None:
        bundle = {"GPU": 1.0} if scaling.use_gpu else {"CPU": 1.0}
        keys = {"GPU": "scaling.use_gpu", "CPU": "scaling.resources_per_worker.CPU"}
    else:
        bundle = {k: float(v) for k, v in given.items() if v != 0}
        keys = {k: f"scaling.resources_per_worker.{k}" for k in bundle}
    if scaling.use_gpu and "GPU" not in bundle:
        bundle["GPU"] = 1.0
        keys["GPU"] = "scaling.use_gpu"
    if scaling.accelerator_type:
        accelerator = ACCELERATOR_PREFIX + scaling.accelerator_type
        bundle.setdefault(accelerator, 0.001)
        keys[accelerator] = "scaling.accelerator_type"
    return bundle, keys


def requests(cfg: ExperimentConfig, stages: Iterable[str]) -> list[Request]:
    out = []
    for stage in stages:
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        if stage in ("train", "sweep"):
            bundle, keys = worker_bundle(cfg)
            out.append(
                Request(
                    "train",
                    "training worker",
                    bundle,
                    cfg.scaling.num_workers,
                    cfg.scaling.placement_strategy,
                    keys,
                    "scaling.num_workers",
                )
            )
        if stage == "sweep" and not cfg.scaling.local_mode:  # in local mode a trial is its training worker
            out.append(
                Request(
                    "sweep",
                    "sweep trial",
                    {"CPU": float(cfg.tune.trial_cpus)},
                    1,
                    "PACK",
                    {"CPU": "tune.trial_cpus"},
                    "tune.max_concurrent_trials",
                )
            )
        if stage == "teacher":
            st = cfg.soft_targets
            bundle = {"CPU": float(st.cpus_per_replica)}
            if st.gpus_per_replica:
                bundle["GPU"] = float(st.gpus_per_replica)
            out.append(
                Request(
                    "teacher",
                    "teacher replica",
                    bundle,
                    st.replicas,
                    "PACK",
                    {"CPU": "soft_targets.cpus_per_replica", "GPU": "soft_targets.gpus_per_replica"},
                    "soft_targets.replicas",
                )
            )
    # the same request twice (train and sweep both ask for the workers) is checked once
    unique = []
    for request in out:
        if request not in unique:
            unique.append(request)
    return unique


# -------------------------------------------------------------------------------------------- fit


def holds(node: dict[str, float], bundle: dict[str, float]) -> int:
    """How many copies of `bundle` one node's total resources hold."""
    counts = [math.floor(node.get(k, 0.0) / v + _EPS) for k, v in bundle.items() if v > 0]
    return min(counts) if counts else 1_000_000


def _place(bundles: list[dict[str, float]], nodes: list[dict[str, float]], strategy: str) -> int:
    """How many of `bundles` (in order) fit at once: first fit for PACK/SPREAD, one node for
    STRICT_PACK, distinct nodes for STRICT_SPREAD."""
    if strategy == "STRICT_PACK":
        best = 0
        for node in nodes:
            free, placed = dict(node), 0
            for bundle in bundles:
                if holds(free, bundle) < 1:
                    break
                for k, v in bundle.items():
                    free[k] = free.get(k, 0.0) - v
                placed += 1
            best = max(best, placed)
        return best
    free_nodes = [dict(node) for node in nodes]
    used: set[int] = set()
    placed = 0
    for bundle in bundles:
        for i, free in enumerate(free_nodes):
            if strategy == "STRICT_SPREAD" and i in used:
                continue
            if holds(free, bundle) >= 1:
                for k, v in bundle.items():
                    free[k] = free.get(k, 0.0) - v
                used.add(i)
                placed += 1
                break
    return placed


def _fmt(amount: float) -> str:
    return f"{amount:g}"


def _describe(bundle: dict[str, float]) -> str:
    return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in bundle.items()) + "}"


def _offers(nodes: list[dict[str, float]], keys: Iterable[str]) -> str:
    """'2 x {CPU: 8, GPU: 1}, 1 x {CPU: 0}': the nodes, shown by the resources that matter."""
    asked = list(keys)
    keys = [k for k in asked if not k.startswith(ACCELERATOR_PREFIX)]
    accelerators = len(keys) < len(asked)  # the request names an accelerator type: show each node's

    def shape(node: dict[str, float]) -> str:
        text = ", ".join(f"{k}: {_fmt(node.get(k, 0.0))}" for k in keys)
        if accelerators:
            names = [k.removeprefix(ACCELERATOR_PREFIX) for k in node if k.startswith(ACCELERATOR_PREFIX)]
            text += f"{', ' if text else ''}accelerator: {'/'.join(names) or 'none'}"
        return "{" + text + "}"

    shapes = Counter(shape(node) for node in nodes)
    return ", ".join(f"{n} x {text}" for text, n in shapes.items())


def _name(resource: str, amount: float) -> str:
    if resource.startswith(ACCELERATOR_PREFIX):
        return f"an accelerator of type {resource.removeprefix(ACCELERATOR_PREFIX)}"
    return f"{resource}: {_fmt(amount)}"


def _fix(request: Request, resource: str, nodes: list[dict[str, float]]) -> str:
    """What to change in the config so that `resource` of the request fits a node."""
    key = request.keys.get(resource, request.keys.get("CPU", "the config"))
    if resource.startswith(ACCELERATOR_PREFIX):
        present = sorted(
            {k.removeprefix(ACCELERATOR_PREFIX) for node in nodes for k in node if k.startswith(ACCELERATOR_PREFIX)}
        )
        return f"set {key} to " + (f"one the nodes have ({', '.join(present)}) or " if present else "") + "null (any)"
    most = max((node.get(resource, 0.0) for node in nodes), default=0.0)
    if key == "scaling.use_gpu":
        return "set scaling.use_gpu=false (CPU training)"
    if most <= 0:
        return f"set {key} to 0" + (" (CPU inference)" if key == "soft_targets.gpus_per_replica" else "")
    return f"lower {key} to at most {_fmt(most)}"


def check_fits(
    cfg: ExperimentConfig,
    stages: Iterable[str],
    nodes: list[dict[str, float]],
    node_types: list[dict[str, float]] | None = None,
    autoscaling: bool = False,
    place: str | None = None,
) -> list[str]:
    """Refuse (ConfigError) what can never be scheduled. `nodes`: total resources of the alive nodes;
    `node_types`: resources of the node types an autoscaler can add (None = unknown); `autoscaling`:
    whether the cluster can add nodes; `place`: the one node's name in messages (default: a Ray cluster's).
    Returns notes for the log (checks skipped)."""
    notes = []
    every = requests(cfg, stages)
    if autoscaling and node_types is None:
        return [
            "the cluster autoscales and Ray does not know its node types: what "
            f"{', '.join(sorted({r.what for r in every}))}s "
            "ask for is not checked against them (`ray status` lists requests no node type can satisfy)"
        ]
    candidates = list(nodes) + list(node_types or [])
    where = (
        f"{place} does not have"
        if place
        else "no node type of this autoscaling Ray cluster, nor any node, has"
        if autoscaling
        else "no node of this Ray cluster has"
    )
    for request in every:
        if any(holds(node, request.bundle) >= 1 for node in candidates):
            continue
        missing = [
            k for k in request.bundle if not any(node.get(k, 0.0) + _EPS >= request.bundle[k] for node in candidates)
        ]
        if not missing:  # every resource exists somewhere, never together on one node
            missing = list(request.bundle)
        fixes = "; ".join(dict.fromkeys(_fix(request, k, candidates) for k in missing))
        asks = ", ".join(_name(k, request.bundle[k]) for k in missing)
        raise ConfigError(
            f"each {request.what} asks for {_describe(request.bundle)}, but {where} {asks} "
            f"({place or ('nodes and node types' if node_types else 'nodes')}: {_offers(candidates, request.bundle)}). "
            f"To fix: {fixes}; or run on a cluster with "
            f"such nodes ({CLUSTER_HELP})"
        )
    if autoscaling:
        return notes
    for request in every:
        bundles = [request.bundle] * request.count
        if request.stage == "sweep":  # a trial's own bundle, next to its training workers
            train = next(r for r in every if r.stage == "train")
            placed = _place([request.bundle] + [train.bundle] * train.count, nodes, "PACK")
            if placed < 1 + train.count:
                raise ConfigError(
                    f"a sweep trial needs {_describe(request.bundle)} (tune.trial_cpus) next to its "
                    f"{train.count} training worker(s) of {_describe(train.bundle)}, but this Ray cluster holds "
                    f"only {placed} of those {1 + train.count} bundles at once "
                    f"(nodes: {_offers(nodes, train.bundle | request.bundle)}). "
                    "Lower tune.trial_cpus, scaling.num_workers or scaling.resources_per_worker"
                )
            continue
        placed = _place(bundles, nodes, request.strategy)
        if placed >= request.count:
            continue
        how = {
            "STRICT_PACK": " on one node (scaling.placement_strategy=STRICT_PACK)",
            "STRICT_SPREAD": " on distinct nodes (scaling.placement_strategy=STRICT_SPREAD)",
        }.get(request.strategy if request.stage == "train" else "", "")
        if request.stage == "teacher":
            notes.append(
                f"{request.count_key}={request.count}: this Ray cluster holds {placed} teacher replica(s) of "
                f"{_describe(request.bundle)} at once; the others wait for room"
            )
            continue
        raise ConfigError(
            f"{request.count_key}={request.count} {request.what}s of {_describe(request.bundle)} must run at "
            f"once{how}, "
            f"but this Ray cluster (no autoscaler) holds only {placed} (nodes: {_offers(nodes, request.bundle)}). "
            f"Lower {request.count_key} to {placed or 1}"
            + (" or the per-worker resources" if request.stage == "train" else "")
            + ", or add nodes to the cluster"
        )
    return notes


# ---------------------------------------------------------------------------------------- cluster


def cluster_view() -> tuple[list[dict[str, float]], list[dict[str, float]] | None, bool]:
    """(total resources of each alive node, node types an autoscaler can add or None when unknown,
    whether the cluster may add nodes). Needs ray.init."""
    import ray

    nodes = [dict(node.get("Resources") or {}) for node in ray.nodes() if node.get("Alive")]
    try:
        return nodes, *_autoscaler()
    except Exception:  # private Ray APIs moved: assume an autoscaler, so nothing is wrongly refused
        return nodes, None, True


READONLY_NODE_TYPE = re.compile(r"^node_[0-9a-f]+$")  # the monitor's names when no autoscaler config


def _autoscaler() -> tuple[list[dict[str, float]] | None, bool]:
    """What Ray tells about an autoscaler, most precise first:
    1. node types the autoscaler reported to the GCS (ClusterConfig);
    2. ~/ray_bootstrap_config.yaml: the `ray up` config, on the head where a job's driver runs;
    3. autoscaler v2 enabled (KubeRay's autoscaler v2): it autoscales, types unknown;
    4. the v1 monitor's status in the GCS: node types named by a config (an autoscaler) or the
       read-only monitor every `ray start --head` and local Ray run (a fixed cluster);
    5. nothing reported: on KubeRay an autoscaler may not have reported yet (unknown), elsewhere a
       fixed cluster."""
    import ray
    from ray._private import ray_constants
    from ray._private.state import state
    from ray.experimental.internal_kv import _internal_kv_get

    config = state.get_cluster_config()
    if config is not None and config.node_group_configs:
        groups = [g for g in config.node_group_configs if g.resources and g.max_count != 0]
        scalable = any(g.max_count == -1 or g.max_count > g.min_count for g in groups)
        return [{k: float(v) for k, v in g.resources.items()} for g in groups], scalable
    bootstrap = Path("~/ray_bootstrap_config.yaml").expanduser()
    if bootstrap.is_file():
        import yaml

        launched = yaml.safe_load(bootstrap.read_text()) or {}
        head = launched.get("head_node_type")
        types = {name: t for name, t in (launched.get("available_node_types") or {}).items() if name != head}
        scalable = any(
            t.get("max_workers", launched.get("max_workers", 0)) > t.get("min_workers", 0) for t in types.values()
        )
        return [{k: float(v) for k, v in (t.get("resources") or {}).items()} for t in types.values()], scalable
    v2 = _internal_kv_get(
        ray._raylet.GCS_AUTOSCALER_V2_ENABLED_KEY, namespace=ray._raylet.GCS_AUTOSCALER_STATE_NAMESPACE
    )
    if v2 == b"1":
        return None, True
    status = _internal_kv_get(ray_constants.DEBUG_AUTOSCALING_STATUS)
    report = (json.loads(status) if status else {}).get("autoscaler_report") or {}
    named = (
        set(report.get("active_nodes") or {})
        | set(report.get("idle_nodes") or {})
        | set(report.get("pending_launches") or {})
        | set((report.get("node_type_mapping") or {}).values())
    )
    if named:
        return None, any(not READONLY_NODE_TYPE.match(name) for name in named)
    return None, "RAY_USAGE_STATS_KUBERAY_IN_USE" in os.environ


def check_cluster_fits(cfg: ExperimentConfig, stages: Iterable[str], log: Callable[[str], None] = print) -> None:
    """check_fits against the Ray cluster this process is connected to (call after ensure_ray)."""
    nodes, node_types, autoscaling = cluster_view()
    for note in check_fits(cfg, stages, nodes, node_types, autoscaling):
        log(f"cluster: {note}")


def machine_resources() -> dict[str, float]:
    """This machine's CPUs and CUDA GPUs, counted as a local Ray would count them (CPU limits of a
    container included): the node a run in Ray Train's local mode has when no Ray runs."""
    from ray._private.utils import get_num_cpus

    resources = {"CPU": float(get_num_cpus())}
    import torch

    if torch.cuda.is_available():
        resources["GPU"] = float(torch.cuda.device_count())
    return resources


def check_machine_fits(cfg: ExperimentConfig, log: Callable[[str], None] = print) -> None:
    """check_fits of the training worker against this machine (machine_resources), for a run that
    trains in this process without Ray (launcher.needs_no_ray)."""
    for note in check_fits(cfg, ("train",), [machine_resources()], place="this machine"):
        log(f"machine: {note}")


def needs_soft_targets(cfg: ExperimentConfig) -> bool:
    """Whether a method of the config trains on stored teacher outputs (teacher inference on Ray Data)."""
    return any(get_method(m.name).teacher_use(m) == "soft_targets" for m in cfg.methods)

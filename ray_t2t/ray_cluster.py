"""Starting or joining Ray: the cluster in RAY_ADDRESS, or a local one bound to loopback, with the
environment every ray_t2t process on it gets."""

from __future__ import annotations

import os
from typing import Any

from ray_t2t.errors import UserError


def ensure_ray(use_gpu: bool, extra_cpus: int = 0) -> bool:
    """Join the cluster in RAY_ADDRESS (set by `ray job submit`; `RAY_ADDRESS=auto` joins one started
    on this machine with `ray start`), or start a local Ray (declaring `extra_cpus` logical CPUs on top
    of the machine's, for processes that only wait, such as sweep trials). True when Ray is local."""
    import ray

    if ray.is_initialized():
        return not os.environ.get("RAY_ADDRESS")
    address = os.environ.get("RAY_ADDRESS")
    runtime_env = {"env_vars": job_env_vars(use_gpu, local=not address)}
    if not address:
        # No "auto" probing here: a stale cluster file from a killed Ray makes it wait for minutes.
        start_local_ray(runtime_env, **({"num_cpus": (os.cpu_count() or 1) + extra_cpus} if extra_cpus else {}))
        return True
    try:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=True)
    except ConnectionError as err:
        raise UserError(f"cannot reach the Ray cluster at RAY_ADDRESS={address}: {err}") from None
    return False


def job_env_vars(use_gpu: bool, local: bool) -> dict[str, str]:
    """The environment of every Ray process of a ray_t2t job (its runtime_env's env_vars)."""
    env_vars = {
        "DS_ACCELERATOR": "cuda" if use_gpu else "cpu",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0",  # otherwise every worker line prints twice
        # Ray Train's controller polls its workers this often (default 2 s): a finished run's fit()
        # returned ~2 s after its workers did, for every run and sweep trial (benchmarks/train_overhead.py).
        "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5"),
    }
    if local:
        # Ray Train watches for nodes being preempted (spot instances) with an actor of its own per run:
        # a process importing Ray and Ray Train, ~1.4 s of a core as the run starts. A one-machine Ray has
        # no node to lose; without it a sweep's trials started ~1.3 s sooner on 2 cores (docs/performance.md).
        env_vars["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] = os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    return env_vars


def start_local_ray(runtime_env: dict | None = None, **kwargs: Any) -> None:
    """A one-machine Ray bound to loopback: nothing it opens is reachable from the network.

    Ray maps a node address of 127.0.0.1 to the machine's network address unless it believes it runs
    on a laptop OS; RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 (inherited by the workers) and the same switch
    in this already-imported Ray make it keep the loopback address, as it does on macOS.

    address="local": a new Ray, always. Without it ray.init() joins the cluster a `ray start` on this
    machine last recorded (/tmp/ray/ray_current_cluster), someone else's on a shared machine (and
    then refuses num_cpus). Joining one is what RAY_ADDRESS=auto is for.
    """
    import ray
    from ray._private import ray_constants

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    # The dashboard hosts the state API that Ray Train's placement-group cleaner polls; without it
    # the driver prints a warning every few seconds.
    ray.init(
        address="local",
        runtime_env=runtime_env,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        **kwargs,
    )

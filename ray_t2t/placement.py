"""Cores of its own for every timed run: concurrent trials never share a core.

    from ray_t2t.placement import own_cores
    with own_cores(2) as placement:     # {"cpus": [0, 1], "pinned": True, "threads": 2}
        ...                             # this process (every thread) runs on cores 0 and 1 only

Ray reserves CPUs as counts, not as cores: two trials of {CPU: 1} on a 2-core machine are free to
run on one core while their neighbours' work lands on theirs, so a run's seconds would depend on
what ran beside it. Here a run claims whole cores through lock files, one per core this process may
use (os.sched_getaffinity), in <tmp>/ray_t2t_cores-<uid>/: an exclusive fcntl lock that the kernel
drops when its process dies, so a killed trial never keeps a core. Holding them, the process pins
all its threads to those cores and torch uses one thread per core.

If no cores are free within `wait_s` (another experiment on the same machine holds them), the run
goes on unpinned and says so: its record's placement reads `shared`, and the report flags it. A
process holding a claim reuses it (a sweep trial claims before its imports and model building, so
that start-up work lands on its own cores too, and the training loop inside finds the claim made).
GPU runs are not pinned: Ray gives each worker GPUs of its own (CUDA_VISIBLE_DEVICES), recorded.
"""

from __future__ import annotations

import errno
import os
import random
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

_held: dict | None = None  # this process's claim: {"cores": [...], "fds": [...], "users": n, "placement": {...}}


LOCKS_ENV = "RAY_T2T_CORE_LOCKS"  # where the claims live, when not <tmp>/ray_t2t_cores-<uid> (tests)


def lock_folder() -> Path:
    return Path(os.environ.get(LOCKS_ENV) or Path(tempfile.gettempdir()) / f"ray_t2t_cores-{os.getuid()}")


def _allowed() -> list[int]:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


def _try_claim(count: int, allowed: list[int]) -> list[tuple[int, int]]:
    """(core, fd) for `count` cores, or [] (nothing held) when fewer are free."""
    import fcntl

    folder = lock_folder()
    folder.mkdir(mode=0o700, exist_ok=True)
    held = []
    for core in allowed:
        fd = os.open(folder / f"core{core}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            continue
        held.append((core, fd))
        if len(held) == count:
            return held
    for _, fd in held:  # all or nothing: two runs each holding half of what both need would wait forever
        os.close(fd)
    return []


def pin_process(cores: set[int]) -> None:
    """Pin every thread of this process (not only the calling one, as sched_setaffinity(0) would)."""
    try:
        threads = [int(tid) for tid in os.listdir("/proc/self/task")]
    except OSError:
        threads = [0]
    for tid in threads:
        try:
            os.sched_setaffinity(tid, cores)
        except OSError:  # a thread that ended meanwhile
            pass


def _set_threads(count: int) -> None:
    import torch

    torch.set_num_threads(max(1, count))


def claim(count: int, wait_s: float = 120.0, log: Callable[[str], None] | None = None) -> dict:
    """Claim `count` cores for this process (see the module docstring) and pin it to them; returns
    the placement for the run record. Reentrant: a process that holds a claim of at least `count`
    cores gets it again. Release with release()."""
    global _held
    count = max(1, int(count))
    if _held is not None and len(_held["cores"]) >= count:
        _held["users"] += 1
        return _held["placement"]
    allowed = _allowed()
    if not hasattr(os, "sched_setaffinity") or not allowed:
        return {"pinned": False, "cpus": [], "threads": count, "why": "this OS has no CPU affinity"}
    if count > len(allowed):
        return {
            "pinned": False,
            "cpus": allowed,
            "threads": count,
            "why": f"{count} cores asked for, this process may use {len(allowed)}",
        }
    deadline = time.monotonic() + wait_s
    announced = False
    while True:
        held = _try_claim(count, allowed)
        if held:
            break
        if time.monotonic() >= deadline:
            why = f"no {count} free core(s) in {wait_s:.0f} s: other ray_t2t runs held them"
            if log:
                log(f"running unpinned, beside other work ({why}); its times are not comparable")
            return {"pinned": False, "cpus": allowed, "threads": count, "why": why}
        if log and not announced:
            log(f"waiting for {count} free core(s) (other ray_t2t runs on this machine hold them)")
            announced = True
        time.sleep(0.2 + random.random() * 0.3)
    cores = [core for core, _ in held]
    previous = set(os.sched_getaffinity(0))
    pin_process(set(cores))
    _set_threads(count)
    placement = {"pinned": True, "cpus": cores, "threads": count}
    _held = {"cores": cores, "fds": [fd for _, fd in held], "users": 1, "placement": placement, "previous": previous}
    return placement


def release() -> None:
    """Undo one claim(); the last one unpins the process and frees its cores."""
    global _held
    if _held is None:
        return
    _held["users"] -= 1
    if _held["users"] > 0:
        return
    pin_process(_held["previous"])
    for fd in _held["fds"]:
        os.close(fd)
    _held = None


@contextmanager
def own_cores(count: int, wait_s: float = 120.0, log: Callable[[str], None] | None = None) -> Iterator[dict]:
    placement = claim(count, wait_s, log)
    try:
        yield placement
    finally:
        if placement.get("pinned"):
            release()


def gpu_placement() -> dict:
    """The GPUs a worker sees (Ray sets CUDA_VISIBLE_DEVICES to the ones it reserved for it)."""
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    return {"pinned": bool(visible), "gpus": visible, "cpus": []}

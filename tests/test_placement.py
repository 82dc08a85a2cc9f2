"""Cores of its own for every timed run (ray_t2t.placement): claims through lock files, every
thread pinned, claims freed by release and by the kernel when a process is killed. Ray-free."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from ray_t2t import placement

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs CPU affinity and at least 2 cores",
)

HOLDER = """
import os, sys, time
from ray_t2t.placement import claim
placement = claim(int(sys.argv[1]), wait_s=0)
print(placement["cpus"] if placement["pinned"] else "unpinned", flush=True)
time.sleep(60)
"""


@pytest.fixture(autouse=True)
def locks(tmp_path, monkeypatch):
    monkeypatch.setenv(placement.LOCKS_ENV, str(tmp_path / "locks"))
    before = os.sched_getaffinity(0)
    yield tmp_path / "locks"
    while placement._held is not None:
        placement.release()
    os.sched_setaffinity(0, before)


def holder(count: int):
    """A process that claims `count` cores and keeps them; (process, the cores it got)."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(count)], stdout=subprocess.PIPE, text=True, env=dict(os.environ)
    )
    return process, process.stdout.readline().strip()


def test_a_claim_pins_every_thread_and_release_undoes_it():
    allowed = os.sched_getaffinity(0)
    started = threading.Event()
    finish = threading.Event()
    worker = threading.Thread(target=lambda: (started.set(), finish.wait()))
    worker.start()
    started.wait()
    try:
        got = placement.claim(1, wait_s=0)
        assert got["pinned"] and len(got["cpus"]) == 1 and got["threads"] == 1
        core = set(got["cpus"])
        assert os.sched_getaffinity(0) == core
        assert os.sched_getaffinity(worker.native_id) == core  # a thread started before the claim, too
        import torch

        assert torch.get_num_threads() == 1
        assert placement.claim(1, wait_s=0) is got  # reentrant: the training loop inside a sweep trial
        placement.release()
        assert os.sched_getaffinity(0) == core  # still held by the outer claim
        placement.release()
        assert os.sched_getaffinity(0) == allowed and placement._held is None
    finally:
        finish.set()
        worker.join()


def test_concurrent_runs_get_different_cores_and_a_full_machine_runs_unpinned():
    process, theirs = holder(1)
    try:
        assert theirs.startswith("[")
        mine = placement.claim(1, wait_s=5)
        assert mine["pinned"] and str(mine["cpus"]) != theirs  # never the core another run holds
        placement.release()
        started = time.monotonic()
        lines = []
        whole = placement.claim(len(os.sched_getaffinity(0)), wait_s=0.5, log=lines.append)
        assert time.monotonic() - started >= 0.5
        assert not whole["pinned"] and "other ray_t2t runs held them" in whole["why"]
        assert any("running unpinned" in line for line in lines)
    finally:
        process.kill()
        process.wait()


def test_a_killed_run_frees_its_cores():
    cores = len(os.sched_getaffinity(0))
    process, theirs = holder(cores)
    assert theirs.startswith("[")
    assert not placement.claim(1, wait_s=0)["pinned"]  # all taken
    process.send_signal(signal.SIGKILL)
    process.wait()
    got = placement.claim(cores, wait_s=2)  # the kernel dropped the dead process's locks
    assert got["pinned"] and len(set(got["cpus"])) == cores


def test_more_cores_than_the_process_may_use_is_said_not_waited_for():
    got = placement.claim(len(os.sched_getaffinity(0)) + 1, wait_s=30)
    assert not got["pinned"] and "this process may use" in got["why"]

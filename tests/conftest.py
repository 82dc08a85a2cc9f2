"""Shared fixtures. Everything is built in code or written to tmp_path: no network, no hub."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Never reach for the Hugging Face hub from tests: local paths only.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _isolated_hf_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "hf_cache"
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))


def minimal_config(tmp_path: Path, **sections) -> dict:
    """The smallest valid experiment config as a dict, storage under tmp_path; sections replace defaults."""
    raw = {
        "run": {"name": "test", "storage_path": str(tmp_path / "runs")},
        "data": {"split_sizes": {"train": 300, "validation": 20, "test": 20}},
        "models": {"student": {"preset": "t5-tiny"}},
    }
    raw.update(sections)
    return raw


LOCAL_WORKER = textwrap.dedent(
    """
    import json, sys
    from ray_t2t.train.context import LocalContext
    from ray_t2t.train.loop import run_worker
    payload = json.loads(sys.argv[1])
    run_worker(payload, LocalContext(payload["run_dir"]))
    """
)


def train_locally(cfg, label: str, data_path, run_dir: Path, threads: int = 1, timeout: int = 600,
                  extras: dict | None = None) -> dict:
    """One run of the training loop in a fresh process without Ray (LocalContext); its run record.
    `extras`: what the method's driver-side prepare() returned."""
    payload = {"config": cfg.model_dump(mode="json"), "label": label, "data_path": str(data_path),
               "run_dir": str(run_dir), "config_hash": "-", "run_hash": "-", "threads": threads,
               "method_extras": extras or {}}
    done = subprocess.run([sys.executable, "-c", LOCAL_WORKER, json.dumps(payload)], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return json.loads((run_dir / "record.json").read_text())


@pytest.fixture(scope="module")
def torch_one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine they lose a lot."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture
def ray_t2t_bin() -> str:
    return str(Path(sys.executable).parent / "ray-t2t")

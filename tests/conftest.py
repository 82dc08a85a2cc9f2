"""Shared fixtures. Everything is built in code or written to tmp_path: no network, no hub."""

import os
import sys
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

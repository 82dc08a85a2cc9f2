"""The training loop without Ray (LocalContext), one process per run: ZeRO stages and CPU offload
must give the same training as plain data parallelism on one worker."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO, minimal_config
from ray_t2t.config import validate_config
from ray_t2t.data import prepare_data

SCRIPT = textwrap.dedent(
    """
    import json, sys
    from ray_t2t.train.context import LocalContext
    from ray_t2t.train.loop import run_worker
    payload = json.loads(sys.argv[1])
    run_worker(payload, LocalContext(payload["run_dir"]))
    """
)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    raw = minimal_config(folder, methods=[{"name": "scratch"}])
    raw["data"] = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}
    raw["training"] = {"batch_size": 32, "max_steps": 30, "warmup_steps": 2}
    raw["eval"] = {"every_n_steps": 15}
    return folder, raw, prepare_data(validate_config(raw))


def run_locally(folder, raw, prepared, name: str, deepspeed: dict) -> dict:
    cfg = validate_config(dict(raw, deepspeed=deepspeed))
    run_dir = folder / name
    payload = {"config": cfg.model_dump(mode="json"), "label": "scratch", "data_path": str(prepared.path),
               "run_dir": str(run_dir), "config_hash": "-", "run_hash": "-", "threads": 1}
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(payload)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((run_dir / "record.json").read_text())


def test_zero_stages_and_offload_train_identically(prepared):
    folder, raw, data = prepared
    plain = run_locally(folder, raw, data, "zero0", {"zero_stage": 0})
    offload_optimizer = run_locally(folder, raw, data, "zero2_offload", {"zero_stage": 2, "offload_optimizer": True})
    offload_all = run_locally(folder, raw, data, "zero3_offload",
                              {"zero_stage": 3, "offload_optimizer": True, "offload_params": True})
    losses = [[p["val_loss"] for p in r["learning_curve"]] for r in (plain, offload_optimizer, offload_all)]
    assert losses[0][-1] < losses[0][0]
    for other in losses[1:]:
        assert other == pytest.approx(losses[0], rel=1e-3)
    assert plain["steps"]["done"] == 30 and plain["status"] == "finished"

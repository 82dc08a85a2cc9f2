"""The training loop without Ray (LocalContext), one process per run: ZeRO stages and CPU offload
must give the same training as plain data parallelism on one worker."""

from __future__ import annotations

import pytest

from conftest import minimal_config, train_locally
from ray_t2t.config import validate_config
from ray_t2t.data import prepare_data


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    folder = tmp_path_factory.mktemp("local")
    raw = minimal_config(folder, methods=[{"name": "scratch"}])
    raw["data"] = {"split_sizes": {"train": 2000, "validation": 64, "test": 64}}
    raw["training"] = {"batch_size": 32, "max_steps": 30, "warmup_steps": 2}
    raw["eval"] = {"every_n_steps": 15}
    return folder, raw, prepare_data(validate_config(raw))


def run_locally(folder, raw, prepared, name: str, deepspeed: dict) -> dict:
    return train_locally(validate_config(dict(raw, deepspeed=deepspeed)), "scratch", prepared.path, folder / name)


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

"""GPU-only paths of the training loop: bf16 on a CUDA device, MFU and NVML energy in the run record,
and QLoRA (4-bit base + LoRA, bitsandbytes). Skipped where there is no CUDA GPU (CI); run them on a
GPU machine with `python -m pytest tests/test_gpu.py` (benchmarks/gpu_check.sh does, with the MFU
measurement)."""

from __future__ import annotations

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.data import prepare_data

from conftest import minimal_config, train_locally

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def gpu_config(folder, methods, models=None, steps=200, **sections) -> dict:
    raw = minimal_config(folder, methods=methods)
    raw["data"] = {"split_sizes": {"train": 8000, "validation": 256, "test": 256}}
    raw["models"] = models or {"student": {"preset": "t5-0.5m"}}
    raw["scaling"] = {"use_gpu": True, "num_workers": 1}
    raw["training"] = {"batch_size": 64, "max_steps": steps, "warmup_steps": 10, "learning_rate": 3e-3}
    raw["eval"] = {"every_n_steps": steps // 2, "metric": "per", "batch_size": 256}
    raw["cost"] = {"device_hour": {"H200": 4.0, "H100": 3.0, "A100": 2.0, "gpu": 2.0}}
    raw.update(sections)
    return raw


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu")
    cfg = validate_config(gpu_config(folder, [{"name": "scratch"}]))
    data = prepare_data(cfg)
    return folder, data, train_locally(cfg, "scratch", data.path, folder / "scratch")


def test_bf16_training_on_gpu_learns_and_records_mfu_and_energy(bf16_run):
    _, _, record = bf16_run
    curve = record["learning_curve"]
    assert record["precision"] == "bf16" and record["status"] == "finished"
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]
    assert curve[-1]["val_token_accuracy"] > curve[0]["val_token_accuracy"]
    assert record["hardware"]["device_type"] != "cpu" and record["hardware"]["devices"] == 1
    assert 0 < record["mfu"] < 1, record["mfu"]
    assert record["flops"] == pytest.approx(record["flops_per_token"] * record["data"]["tokens_seen"])
    assert record["peak_memory_bytes"] > 0
    assert record["energy_j"] is not None and record["energy_j"] > 0
    # energy only grows along the curve; a GPU draws between ~20 W and ~1 kW while it trains
    energies = [point["energy_j"] for point in curve]
    assert energies == sorted(energies)
    assert 20 < record["energy_j"] / record["times"]["train_s"] < 1500
    from ray_t2t.inference import measure

    settings = {
        "examples": 64,
        "single_examples": 4,
        "output_tokens": 8,
        "batch_sizes": [1, 64],
        "repeats": 2,
        "device": "gpu",
        "cpus": 1,
        "accelerator_type": None,
    }
    speed = measure(record["model"]["export_path"], [[5, 6, 7, 1]] * 64, settings)
    assert all(result["examples_per_s"]["median"] > 0 for result in speed["results"]), speed


def test_zero2_on_gpu_matches_zero0(bf16_run, tmp_path):
    folder, data, plain = bf16_run
    raw = gpu_config(folder, [{"name": "scratch"}], deepspeed={"zero_stage": 2})
    zero2 = train_locally(validate_config(raw), "scratch", data.path, tmp_path / "zero2")
    # bf16 rounding differs between ZeRO's flat fp32 master weights and stage 0's: close, not equal
    assert zero2["learning_curve"][-1]["val_loss"] == pytest.approx(plain["learning_curve"][-1]["val_loss"], rel=0.05)


def test_qlora_trains_only_adapters_and_exports_a_plain_model(bf16_run, tmp_path):
    pytest.importorskip("bitsandbytes")
    from transformers import AutoModelForSeq2SeqLM

    from ray_t2t.tokenizer import PairTokenizer

    folder, data, base_record = bf16_run
    base = base_record["model"]["export_path"]
    raw = gpu_config(
        folder,
        [{"name": "qlora", "rank": 8, "alpha": 16}],
        steps=100,
        models={"student": {"preset": "t5-0.5m"}, "base": {"name_or_path": base}},
    )
    raw["training"]["learning_rate"] = 1e-2
    record = train_locally(validate_config(raw), "qlora", data.path, tmp_path / "qlora")
    curve = record["learning_curve"]
    assert record["precision"] == "fp32"  # the engine; the 4-bit layers compute in bf16
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]
    model = record["model"]
    assert model["trainable_params"] < 0.2 * model["total_params"]
    # params: the exported (merged) model, the base's shape; the adapters trained beside it are listed apart
    assert model["total_params"] == pytest.approx(base_record["model"]["total_params"], rel=0.01)
    assert model["training_only_params"] == pytest.approx(model["trainable_params"], rel=0.05)
    exported = AutoModelForSeq2SeqLM.from_pretrained(model["export_path"])
    assert getattr(exported.config, "quantization_config", None) is None
    tok = PairTokenizer.load(f"{model['export_path']}/ray_t2t_tokenizer")
    ids = tok.encode_sources(["cat"])[0]
    out = exported.generate(torch.tensor([ids]), max_new_tokens=8)
    assert out.shape[1] > 1


def test_ray_train_gpu_path_trains_a_packed_decoder_only_student(tmp_path):
    """scaling.use_gpu through Ray Train (not local mode): a TorchTrainer worker that Ray gives one GPU
    trains a tiny Llama with packed batches in bf16; the record says cuda and the model learned."""
    import json
    import subprocess
    import sys

    import yaml

    pytest.importorskip("ray")
    raw = gpu_config(
        tmp_path,
        [{"name": "scratch"}],
        models={"student": {"preset": "llama-2m"}},
        steps=100,
        scaling={"use_gpu": True, "num_workers": 1, "local_mode": False, "resources_per_worker": {"GPU": 1, "CPU": 1}},
    )
    raw["training"]["packing"] = True
    raw["training"]["group_by_length"] = False
    config = tmp_path / "gpu.yaml"
    config.write_text(yaml.safe_dump(raw))
    done = subprocess.run(
        [sys.executable, "-m", "ray_t2t.cli", "train", str(config), "method=scratch"],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    record = json.loads(next((tmp_path / "runs").rglob("record.json")).read_text())
    assert record["hardware"]["device_type"] == "cuda" and record["precision"] == "bf16"
    curve = record["learning_curve"]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"]

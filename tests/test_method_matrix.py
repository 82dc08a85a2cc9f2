"""Every method learns on every model family it supports: a tiny T5, BART, GPT-2 and Llama each trained
by every method through the shared loop (no Ray), validation loss and token accuracy against step 0.

Per family, one experiment holds every method: a student to train from scratch, a weak `base` (the
student's shape after a few steps) for the methods that start from one, a deeper teacher trained for
150 steps (sft's layers, the live teacher of kd_logits online, kd_hidden, kd_attention and
kd_relational), and two teachers' stored soft targets (written in this process) for kd_logits,
kd_sequence and kd_multi_teacher. multitask learns g2p and p2g on data of its own. The runs of a
family go through one subprocess, one after another. qlora needs CUDA (tests/test_gpu.py); scratch
is tests/test_families.py's.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.data import Split, prepare_data

from conftest import (
    LOCAL_DATA,
    REPO,
    local_payload,
    minimal_config,
    save_like_an_export,
    train_briefly,
    write_teacher_shards,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

# student, and the teacher's extra depth (its other dimensions are the student's); no dropout: short runs
FAMILIES = {
    "t5": (
        {"preset": "t5-tiny", "overrides": {"d_model": 64, "d_ff": 128, "d_kv": 32, "dropout_rate": 0.0}},
        {"num_layers": 2, "num_decoder_layers": 2},
    ),
    "bart": (
        {
            "preset": "bart-tiny",
            "overrides": {"d_model": 64, "encoder_ffn_dim": 128, "decoder_ffn_dim": 128, "dropout": 0.0},
        },
        {"encoder_layers": 2, "decoder_layers": 2},
    ),
    "gpt2": (
        {"preset": "gpt2-tiny", "overrides": {"n_embd": 64, "resid_pdrop": 0.0, "embd_pdrop": 0.0, "attn_pdrop": 0.0}},
        {"n_layer": 4},
    ),
    "llama": (
        {"preset": "llama-tiny", "overrides": {"hidden_size": 64, "intermediate_size": 176}},
        {"num_hidden_layers": 4},
    ),
}
ENCODER_DECODER = {"t5", "bart"}
METHODS = [
    {"name": "finetune"},
    {"name": "lora", "rank": 8, "alpha": 16, "dropout": 0.0, "learning_rate": 3e-2},
    {"name": "partial", "top_n_layers": 1},
    {"name": "sft"},
    {"name": "pretrain"},
    {"name": "fewshot", "k": 512},
    {"name": "kd_logits", "top_k": 8},
    {"name": "kd_logits", "label": "kd_logits_online", "teacher_source": "online"},
    {"name": "kd_sequence"},
    {"name": "kd_hidden"},
    {"name": "kd_attention"},
    {"name": "kd_relational"},
    {"name": "kd_multi_teacher", "top_k": 8},
    {"name": "gan"},
]
ENCODER_DECODER_ONLY = [{"name": "vae"}]
TRAINING = {"batch_size": 32, "max_steps": 60, "warmup_steps": 4, "learning_rate": 1e-2}
SOFT_TARGETS = {"rows_per_shard": 1000, "batch_size": 64, "top_k": 8, "generations": "greedy"}

RUN_ALL = """
import json, pathlib, sys, traceback
from ray_t2t.training.context import LocalContext
from ray_t2t.training.loop import run_worker
for payload in json.loads(open(sys.argv[1]).read()):
    try:
        run_worker(payload, LocalContext(payload["run_dir"]))
    except BaseException:
        run_dir = pathlib.Path(payload["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "error.txt").write_text(traceback.format_exc())
"""


def with_overrides(spec: dict, extra: dict) -> dict:
    return {**spec, "overrides": {**spec.get("overrides", {}), **extra}}


def build_and_train(spec: dict, prepared, steps: int, seed: int, folder: Path, lr: float = 5e-3) -> Path:
    from ray_t2t.config.sections import ModelSpec
    from ray_t2t.methods import Setup
    from ray_t2t.models import build_model, is_encoder_decoder

    tokenizer = prepared.tokenizer()
    train = Split(prepared, "train")
    model, _ = build_model(ModelSpec(**spec), tokenizer, seed=seed)
    setup = Setup(None, None, tokenizer, seed=seed, encoder_decoder=is_encoder_decoder(model))
    train_briefly(model, setup, train.source_ids, train.target_ids, steps=steps, lr=lr)
    return save_like_an_export(model, tokenizer, folder)


def run_all(payloads: list[dict], folder: Path) -> None:
    listing = folder / "payloads.json"
    listing.write_text(json.dumps(payloads))
    done = subprocess.run([sys.executable, "-c", RUN_ALL, str(listing)], cwd=REPO, timeout=1500,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]


def outcome(run_dir: Path) -> str | None:
    """None if the run learned; otherwise why not."""
    if (run_dir / "error.txt").is_file():
        return (run_dir / "error.txt").read_text()[-1500:]
    record = json.loads((run_dir / "record.json").read_text())
    curve = record["learning_curve"]
    first, last = curve[0], curve[-1]
    if record["status"] != "finished" or last["step"] != record["steps"]["planned"]:
        return f"status {record['status']}, steps {record['steps']}"
    if not last["val_loss"] < first["val_loss"]:
        return f"val_loss {first['val_loss']:.4f} -> {last['val_loss']:.4f}"
    if not last["val_token_accuracy"] > first["val_token_accuracy"]:
        return f"val_token_accuracy {first['val_token_accuracy']:.4f} -> {last['val_token_accuracy']:.4f}"
    return None


@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_learns_on_every_family_it_supports(tmp_path, family):
    from ray_t2t.training.launcher import prepare_method

    student, deeper = FAMILIES[family]
    methods = METHODS + (ENCODER_DECODER_ONLY if family in ENCODER_DECODER else [])
    raw = minimal_config(tmp_path, methods=[{"name": "scratch"}])  # the data is the methods' data
    raw["data"] = LOCAL_DATA
    prepared = prepare_data(validate_config(raw))
    raw["methods"] = methods
    teacher = build_and_train(with_overrides(student, deeper), prepared, steps=300, seed=1, folder=tmp_path / "teacher")
    base = build_and_train(student, prepared, steps=5, seed=2, folder=tmp_path / "base", lr=1e-3)
    raw["models"] = {
        "student": student,
        "base": {"name_or_path": str(base)},
        "teacher": [{"name_or_path": str(teacher)}, {"name_or_path": str(base)}],
    }
    raw.update(training=TRAINING, eval={"every_n_steps": 30, "metric": "per"}, soft_targets=SOFT_TARGETS)
    cfg = validate_config(raw)
    shards = math.ceil(LOCAL_DATA["split_sizes"]["train"] / SOFT_TARGETS["rows_per_shard"])
    for folder in (teacher, base):  # a teacher's label is its folder's name
        write_teacher_shards(cfg, prepared, folder, folder.name, shards)

    payloads = []
    for entry in cfg.methods:
        label = entry.label or entry.name
        extras = prepare_method(cfg, entry, lambda message: None)
        payloads.append(local_payload(cfg, label, prepared.path, tmp_path / "runs_of" / label, extras=extras))
    payloads.append(multitask_payload(tmp_path, student))
    run_all(payloads, tmp_path)

    failures = {p["label"]: outcome(Path(p["run_dir"])) for p in payloads}
    failures = {label: why for label, why in failures.items() if why}
    assert not failures, f"{family}: " + json.dumps(failures, indent=1)
    assert len(payloads) == len(methods) + 1


def multitask_payload(tmp_path: Path, student: dict) -> dict:
    """multitask on g2p + p2g (its own data: characters and phonemes on both sides)."""
    from ray_t2t.methods import get_method

    folder = tmp_path / "multitask"
    tasks = [{"task": "g2p_cmudict"}, {"task": "p2g_cmudict"}]
    raw = minimal_config(folder, methods=[{"name": "multitask", "tasks": tasks}], models={"student": student})
    raw["data"] = dict(LOCAL_DATA, tokenizer={"source_level": "char", "target_level": "char"})
    raw.update(training=TRAINING, eval={"every_n_steps": 30, "metric": "per"})
    cfg = validate_config(raw)
    extras = get_method("multitask").prepare(cfg, cfg.methods[0], lambda message: None)
    return local_payload(cfg, "multitask", prepare_data(cfg).path, tmp_path / "runs_of" / "multitask", extras=extras)

"""Training through real Ray Train + DeepSpeed on CPU, tiny models: every method learns, ZeRO 2 and 3
with two workers, a worker failure resumes, a finished run is reused, the export loads in transformers.

One local Ray on loopback for the module. Each TorchTrainer.fit costs ~20 s of start-up here, so runs
are shared: the pretrain run's exported model is the base of finetune, lora and partial, and the
scratch run's is the teacher that sft shrinks."""

from __future__ import annotations

import json
import math

import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.errors import ConfigError, UserError
from ray_t2t.ray_cluster import start_local_ray
from ray_t2t.training.launcher import summarize, train
from ray_t2t.training.loop import FAIL_ONCE_ENV

from conftest import TINY_T5, minimal_config

pytestmark = pytest.mark.ray

TARGET = 0.95  # PER: an untrained model scores 1 (it says nothing); the tiny scratch model gets below
STEPS, EVERY = 600, 200


@pytest.fixture(scope="module")
def ray_session():
    import ray

    start_local_ray(
        {"env_vars": {"RAY_TRAIN_ENABLE_WORKER_STRUCTURED_LOGGING": "0", "DS_ACCELERATOR": "cpu"}}, num_cpus=2
    )
    assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    return tmp_path_factory.mktemp("train_runs")


def experiment(storage, methods, models=None, **sections):
    raw = minimal_config(storage, methods=methods, **sections)
    raw["run"] = {"name": "tiny", "storage_path": str(storage), "checkpoint_every_n_steps": EVERY}
    raw["data"] = {
        "split_sizes": {"train": 20000, "validation": 256, "test": 64},
        "max_source_length": 24,
        "max_target_length": 24,
    }
    raw["models"] = models or {"student": TINY_T5}
    raw.setdefault("training", {"batch_size": 64, "max_steps": STEPS, "learning_rate": 5e-3, "warmup_steps": 20})
    raw.setdefault("eval", {"every_n_steps": EVERY, "batch_size": 64, "target": f"per <= {TARGET}"})
    return validate_config(raw)


def assert_learned(record):
    curve = record["learning_curve"]
    first, last = curve[0], curve[-1]
    assert first["step"] == 0 and last["step"] == record["steps"]["planned"] == record["steps"]["done"]
    assert last["val_loss"] < 0.7 * first["val_loss"], curve
    assert last["val_token_accuracy"] > first["val_token_accuracy"] + 0.2, curve


def assert_consistent(record):
    """Every field present, and the figures agree with each other."""
    for key in (
        "experiment",
        "label",
        "method",
        "params",
        "seed",
        "config_hash",
        "run_hash",
        "status",
        "resumes",
        "steps",
        "model",
        "data",
        "hardware",
        "times",
        "device_seconds",
        "cost",
        "tokens_per_s",
        "mfu",
        "peak_memory_bytes",
        "energy_j",
        "learning_curve",
        "target",
        "time_to_target",
        "final",
        "setting_hash",
    ):
        assert key in record, key
    assert record["status"] == "finished"
    hw, times = record["hardware"], record["times"]
    assert record["device_seconds"] >= times["train_s"] * hw["workers"] * hw["devices_per_worker"] * 0.999
    assert math.isclose(
        record["cost"]["total"], record["device_seconds"] / 3600 * record["cost"]["price_per_device_hour"]
    )
    assert times["total_s"] >= times["train_s"] + times["eval_s"] > 0
    assert record["tokens_per_s"] == pytest.approx(record["data"]["tokens_seen"] / times["train_s"])
    steps = [p["step"] for p in record["learning_curve"]]
    assert steps == sorted(set(steps))
    walls = [p["wall_s"] for p in record["learning_curve"]]
    assert walls == sorted(walls)
    ttt = record["time_to_target"]
    if ttt is not None:  # interpolated between the last evaluation above the target and the first meeting it
        index = next(i for i, p in enumerate(record["learning_curve"]) if p["val_per"] <= TARGET)
        point = record["learning_curve"][index]
        assert ttt["wall_s"] <= point["wall_s"] and ttt["step"] <= point["step"]
        if index:
            assert ttt["wall_s"] > record["learning_curve"][index - 1]["wall_s"]
        assert all(p["val_per"] > TARGET for p in record["learning_curve"][:index])
    assert record["model"]["size_on_disk_bytes"] > 0
    assert record["model"]["architecture_key"] and "inference" not in record  # measured later, alone
    assert record["hardware"]["placement"]["pinned"] and len(record["hardware"]["placement"]["cpus"]) == 1
    assert record["peak_memory_bytes"] > 0
    assert set(record["final"]["test"]) >= {"loss", "wer", "per"}


@pytest.fixture(scope="module")
def scratch_run(ray_session, storage):
    cfg = experiment(storage, [{"name": "scratch"}])
    return cfg, train(cfg, "scratch")


def test_scratch_learns_and_writes_a_consistent_record(scratch_run):
    _, record = scratch_run
    assert_learned(record)
    assert_consistent(record)
    curve = record["learning_curve"]
    assert curve[-1]["val_per"] < curve[0]["val_per"]  # decoded outputs improve too
    assert record["time_to_target"] is not None
    assert record["hardware"]["device_type"] == "cpu" and record["mfu"] is None
    assert "test" in summarize(record)
    # Ray started the worker's process, then called the training function, then the loop stepped
    stamps = record["timestamps"]
    assert (
        stamps["process_start"]
        <= stamps["function_start"]
        <= stamps["first_step"]
        <= stamps["last_step"]
        <= stamps["record_written"]
    )


def test_rerun_reuses_the_finished_run(scratch_run):
    cfg, record = scratch_run
    messages = []
    again = train(cfg, "scratch", log=messages.append)
    assert again == record
    assert any("reusing the finished run" in m for m in messages)
    changed = cfg.model_copy(update={"seed": 1})
    with pytest.raises(UserError, match="holds a run of 'scratch' with other settings"):
        train(changed, "scratch")


def test_export_loads_with_plain_transformers_and_generates(scratch_run):
    from transformers import AutoModelForSeq2SeqLM

    from ray_t2t.decoding import generate
    from ray_t2t.tokenizer import PairTokenizer

    _, record = scratch_run
    folder = record["model"]["export_path"]
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    tok = PairTokenizer.load(f"{folder}/ray_t2t_tokenizer")
    predictions = generate(model, tok, tok.encode_sources(["hello", "world"]), max_new_tokens=20)
    assert len(predictions) == 2 and all(p.strip() for p in predictions)


@pytest.fixture(scope="module")
def pretrain_run(ray_session, storage):
    cfg = experiment(
        storage,
        [{"name": "pretrain"}],
        models={"student": TINY_T5, "base": TINY_T5},
        training={"batch_size": 64, "max_steps": 200, "learning_rate": 5e-3, "warmup_steps": 10},
    )
    return train(cfg, "pretrain")


def test_pretrain_learns_its_own_objective(pretrain_run):
    curve = pretrain_run["learning_curve"]
    assert [p["step"] for p in curve] == [0, 200]
    assert curve[-1]["val_loss"] < 0.7 * curve[0]["val_loss"]  # denoising loss on held-out text
    assert "val_per" not in curve[-1]  # it is not evaluated on the task
    assert pretrain_run["time_to_target"] is None


def from_pretrained_base(storage, pretrain_run, method: dict, learning_rate: float):
    """A config whose base is the pretrain run's exported model; 200 steps."""
    models = {"student": TINY_T5, "base": {"name_or_path": pretrain_run["model"]["export_path"]}}
    return experiment(
        storage,
        [method],
        models=models,
        training={"batch_size": 64, "max_steps": 200, "learning_rate": learning_rate, "warmup_steps": 10},
    )


def assert_improved(record, loss_factor: float = 0.9, accuracy_gain: float = 0.05):
    """Lower validation loss and higher token accuracy than at its own starting point."""
    first, last = record["learning_curve"][0], record["learning_curve"][-1]
    assert last["val_loss"] < loss_factor * first["val_loss"], record["learning_curve"]
    assert last["val_token_accuracy"] > first["val_token_accuracy"] + accuracy_gain, record["learning_curve"]


def test_finetune_starts_from_the_pretrained_base_and_improves(pretrain_run, storage):
    record = train(from_pretrained_base(storage, pretrain_run, {"name": "finetune"}, 5e-3), "finetune")
    assert_learned(record)
    assert_consistent(record)
    assert record["model"]["trainable_params"] == record["model"]["total_params"]


def test_sft_copies_half_the_teacher_and_improves(scratch_run, storage):
    models = {"student": TINY_T5, "teacher": {"name_or_path": scratch_run[1]["model"]["export_path"]}}
    cfg = experiment(
        storage,
        [{"name": "sft"}],
        models=models,
        training={"batch_size": 64, "max_steps": 200, "learning_rate": 3e-3, "warmup_steps": 5},
    )
    record = train(cfg, "sft")
    assert_consistent(record)
    assert record["model"]["total_params"] < scratch_run[1]["model"]["total_params"]
    assert_improved(record)


def test_lora_trains_only_adapters(pretrain_run, storage):
    from peft import get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from ray_t2t.methods.lora import lora_config

    all_linear = ["q", "k", "v", "o", "wi", "wo"]
    lora = {"name": "lora", "rank": 8, "alpha": 16, "target_modules": all_linear}
    cfg = from_pretrained_base(storage, pretrain_run, lora, 1e-2)
    record = train(cfg, "lora")
    assert_consistent(record)
    assert_improved(record)
    base = AutoModelForSeq2SeqLM.from_pretrained(pretrain_run["model"]["export_path"])
    base_params = sum(p.numel() for p in base.parameters())
    peft_model = get_peft_model(base, lora_config(base, cfg.methods[0]))
    adapters = sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)
    assert record["model"]["trainable_params"] == adapters
    # params: the exported (merged) model, the base's shape; the adapters trained beside it are listed apart
    assert record["model"]["total_params"] == base_params and record["model"]["training_only_params"] == adapters
    # merged on export: plain transformers loads it, same shapes as the base
    merged = AutoModelForSeq2SeqLM.from_pretrained(record["model"]["export_path"])
    assert sum(p.numel() for p in merged.parameters()) == base_params


def test_partial_trains_only_the_top_layers(pretrain_run, storage):
    partial = {"name": "partial", "trainable": "top_layers", "top_n_layers": 1}
    record = train(from_pretrained_base(storage, pretrain_run, partial, 5e-3), "partial")
    assert_consistent(record)
    assert 0 < record["model"]["trainable_params"] < record["model"]["total_params"]
    assert_improved(record)


@pytest.mark.parametrize(
    "stage, preset",
    [(2, TINY_T5), (3, {"preset": "gpt2-tiny", "overrides": {"n_embd": 64}})],
    ids=["zero2-t5", "zero3-gpt2"],
)
def test_two_workers_under_zero_stage(ray_session, storage, stage, preset):
    cfg = experiment(
        storage,
        [{"name": "scratch", "label": f"zero{stage}"}],
        models={"student": preset},
        scaling={"num_workers": 2},
        deepspeed={"zero_stage": stage},
        training={"batch_size": 32, "max_steps": STEPS, "learning_rate": 5e-3, "warmup_steps": 20},
    )
    record = train(cfg, f"zero{stage}")
    assert_learned(record)
    assert_consistent(record)
    assert record["hardware"]["workers"] == 2


def test_a_failed_worker_resumes_from_its_checkpoint(ray_session, storage, tmp_path, monkeypatch):
    monkeypatch.setenv(FAIL_ONCE_ENV, f"300:{tmp_path / 'failed_once'}")
    cfg = experiment(storage, [{"name": "scratch", "label": "fault"}], deepspeed={"zero_stage": 1})
    cfg.run.max_failures = 1
    record = train(cfg, "fault")
    assert (tmp_path / "failed_once").exists()  # the failure really happened
    assert record["resumes"] == 1
    assert record["steps"]["done"] == cfg.training.max_steps
    curve = record["learning_curve"]
    assert [p["step"] for p in curve] == [0, 200, 400, 600]  # each point once: resumed at step 200
    assert curve[2]["val_loss"] < curve[1]["val_loss"]  # continued, not restarted
    assert_consistent(record)


def test_refusals_come_before_any_work(ray_session, storage):
    cfg = experiment(
        storage, [{"name": "qlora"}], models={"student": {"preset": "t5-tiny"}, "base": {"name_or_path": "x"}}
    )
    with pytest.raises(ConfigError, match="qlora' quantizes the base model to 4 bits .* needs a CUDA GPU"):
        train(cfg, "qlora")
    cfg = experiment(
        storage, [{"name": "finetune"}], models={"student": {"preset": "t5-tiny"}, "base": {"preset": "t5-tiny"}}
    )
    with pytest.raises(ConfigError, match="starts from pretrained weights"):
        train(cfg, "finetune")
    with pytest.raises(ConfigError, match=r"no method 'nope' in the config. Methods: finetune"):
        train(cfg, "nope")
    assert not (storage / "tiny" / "runs" / "qlora").exists()


def test_kd_logits_student_learns_from_stored_soft_targets(scratch_run, storage):
    teacher = scratch_run[1]["model"]["export_path"]
    models = {"student": {"preset": "t5-tiny"}, "teacher": {"name_or_path": teacher}}
    cfg = experiment(
        storage,
        [{"name": "kd_logits", "alpha": 0.5, "temperature": 2.0, "top_k": 8}],
        models=models,
        training={"batch_size": 64, "max_steps": 200, "learning_rate": 5e-3, "warmup_steps": 10},
        soft_targets={"top_k": 8, "rows_per_shard": 8192, "batch_size": 512},
    )
    messages = []
    record = train(cfg, "kd_logits", log=messages.append)
    assert any("3 of 3 shards to compute" in m for m in messages)  # soft targets made first, on Ray Data
    # a run's export is the teacher: its folder is named for the run, whose training is charged
    manifest = json.loads((storage / "tiny" / "soft_targets" / scratch_run[1]["label"] / "manifest.json").read_text())
    assert manifest["teacher"]["pre_existing"] is False
    assert_consistent(record)
    assert_improved(record, loss_factor=0.8, accuracy_gain=0.1)


def test_kd_sequence_student_learns_from_teacher_generations(scratch_run, storage):
    models = {"student": {"preset": "t5-tiny"}, "teacher": {"name_or_path": scratch_run[1]["model"]["export_path"]}}
    cfg = experiment(
        storage,
        [{"name": "kd_sequence", "gold_mix": 0.2}],
        models=models,
        training={"batch_size": 64, "max_steps": 200, "learning_rate": 5e-3, "warmup_steps": 10},
        soft_targets={"top_k": 4, "generations": "greedy", "rows_per_shard": 8192, "batch_size": 512},
    )
    cfg.run.name = "tiny_seq"  # its own soft-target folder: generations make a different request
    record = train(cfg, "kd_sequence")
    assert (storage / "tiny_seq" / "soft_targets" / scratch_run[1]["label"] / "manifest.json").is_file()
    assert_consistent(record)
    assert_improved(record, loss_factor=0.8, accuracy_gain=0.1)


def test_fewshot_in_context_runs_as_any_run(ray_session, storage):
    """fewshot in context through the launcher on Ray: checked and prepared on the driver, its
    demonstrations reach the worker, and the record is a finished run of zero steps charged its inference."""
    method = {"name": "fewshot", "label": "fewshot_icl", "k": 4, "mode": "in_context", "model": "student"}
    cfg = experiment(
        storage,
        [method],
        models={"student": {"preset": "gpt2-tiny"}},
        eval={"batch_size": 64, "max_new_tokens": 20, "target": f"per <= {TARGET}"},
    )
    record = train(cfg, "fewshot_icl")
    assert record["status"] == "finished" and record["steps"] == {"planned": 0, "done": 0}
    assert record["cost_basis"] == "inference" and record["times"]["train_s"] == 0 < record["device_seconds"]
    assert record["data"]["train_examples"] == 4 and len(record["learning_curve"]) == 1
    assert math.isfinite(record["final"]["test"]["per"])
    assert "cost       no training; charged its validation and test inference" in summarize(record)

"""Teacher soft targets: shard contents, the manifest and its checks, refusals, resume on Ray Data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from ray_t2t.config.experiment import validate_config
from ray_t2t.config.sections import ModelSpec
from ray_t2t.data import prepare_data
from ray_t2t.errors import ConfigError, DataError, UserError
from ray_t2t.ledger import read_record
from ray_t2t.models import build_model
from ray_t2t.soft_targets import TeacherReplica, produce_soft_targets
from ray_t2t.teachers import MANIFEST, load_soft_targets, resolve_teacher, shard_name, verify_manifest

from conftest import minimal_config, train_locally

pytestmark = pytest.mark.usefixtures("torch_one_thread")
ROWS_PER_SHARD = 128  # 300 training examples -> shards of 128, 128, 44


def experiment(tmp_path, teacher_preset: str, **soft_targets):
    raw = minimal_config(tmp_path)
    cfg = validate_config(raw)
    prepared = prepare_data(cfg)
    teacher, _ = build_model(ModelSpec(preset=teacher_preset), prepared.tokenizer(), seed=0)
    teacher.save_pretrained(tmp_path / "teacher")
    raw["models"]["teacher"] = {"name_or_path": str(tmp_path / "teacher")}
    raw["soft_targets"] = {"rows_per_shard": ROWS_PER_SHARD, "batch_size": 64, "top_k": 8, **soft_targets}
    return validate_config(raw), prepared


def write_all_shards_in_process(cfg, prepared) -> tuple:
    """What the Ray Data actors do, in this process: every shard of the training split."""
    teacher = resolve_teacher(cfg)
    folder = cfg.experiment_dir / "soft_targets" / teacher.label
    folder.mkdir(parents=True, exist_ok=True)
    replica = TeacherReplica(
        {
            "config": cfg.model_dump(mode="json"),
            "data_path": str(prepared.path),
            "teacher_path": teacher.path,
            "folder": str(folder),
        }
    )
    for index in range(3):
        replica.write_shard(index)
    return replica, folder


@pytest.mark.parametrize("preset", ["t5-tiny", "gpt2-tiny"])
def test_shards_hold_the_teachers_top_k_at_every_target_position(tmp_path, preset):
    cfg, prepared = experiment(tmp_path, preset, generations="greedy")
    replica, folder = write_all_shards_in_process(cfg, prepared)
    table = pq.read_table(folder / shard_name(1))
    assert table.column("example_id").to_pylist() == list(range(128, 256))
    import pyarrow as pa

    assert table.schema.field("teacher_topk_ids").type.value_type == pa.uint8()  # vocabulary of 70
    assert table.schema.field("teacher_topk_logprobs").type.value_type == pa.float16()
    row = table.slice(5, 1).to_pylist()[0]
    example = row["example_id"]
    target = replica.target_ids[example]
    assert row["positions"] == len(target)
    ids = np.array(row["teacher_topk_ids"]).reshape(len(target), 8)
    logprobs = np.array(row["teacher_topk_logprobs"], dtype=np.float32).reshape(len(target), 8)
    assert (np.diff(logprobs, axis=1) <= 1e-3).all()  # sorted, best first
    # the stored best token is the teacher's argmax at each target position
    from ray_t2t.batching import family_collate

    batch = family_collate(replica.encoder_decoder, replica.tokenizer, [replica.source_ids[example]], [target])
    with torch.no_grad():
        logits = replica.model(**batch).logits[0]
    if preset.startswith("gpt2"):
        prompt = len(replica.source_ids[example])  # source without its eos + sep, then the target
        logits = logits[prompt - 1 : prompt - 1 + len(target)]
    assert ids[:, 0].tolist() == logits.argmax(-1).tolist()
    assert np.allclose(logprobs[:, 0], torch.log_softmax(logits, -1).max(-1).values.numpy(), atol=2e-3)
    assert len(row["teacher_generation"]) >= 1


def test_manifest_is_written_last_and_verified(tmp_path):
    cfg, prepared = experiment(tmp_path, "t5-tiny")
    _, folder = write_all_shards_in_process(cfg, prepared)
    manifest = produce_soft_targets(cfg, log=lambda m: None)  # all shards there: no Ray needed
    assert manifest["rows"] == 300 and [s["rows"] for s in manifest["shards"]] == [128, 128, 44]
    assert manifest["bytes_per_target_token"] < 100  # at k=8 here; the goal is <= 100 at k=32
    assert manifest["teacher"]["pre_existing"] is True
    assert verify_manifest(folder) == manifest

    shard = folder / shard_name(2)
    original = shard.read_bytes()
    shard.write_bytes(original[:-10] + b"x" * 10)
    with pytest.raises(DataError, match="shard-00002.parquet: checksum does not match"):
        verify_manifest(folder)
    with pytest.raises(DataError, match="shard-00002.parquet: checksum does not match"):
        load_soft_targets(folder)  # each shard checked as it is read
    shard.unlink()
    with pytest.raises(DataError, match="shard-00002.parquet: listed in the manifest but missing"):
        verify_manifest(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(DataError, match="no manifest.json; the soft targets are incomplete"):
        verify_manifest(folder)


def test_a_different_request_for_the_same_folder_is_refused(tmp_path):
    cfg, prepared = experiment(tmp_path, "t5-tiny")
    write_all_shards_in_process(cfg, prepared)
    produce_soft_targets(cfg, log=lambda m: None)
    changed = cfg.model_copy(deep=True)
    changed.soft_targets.top_k = 4
    changed.soft_targets.temperature = 2.0
    with pytest.raises(UserError, match=r"different k \(8 -> 4\), temperature \(1.0 -> 2.0\)"):
        produce_soft_targets(changed, log=lambda m: None)
    (tmp_path / "teacher" / "config.json").write_text((tmp_path / "teacher" / "config.json").read_text() + " ")
    with pytest.raises(UserError, match="different teacher weights"):
        produce_soft_targets(cfg, log=lambda m: None)


def test_a_teacher_must_have_weights(tmp_path):
    raw = minimal_config(tmp_path, models={"student": {"preset": "t5-tiny"}, "teacher": {"preset": "t5-2m"}})
    with pytest.raises(ConfigError, match="models.teacher has no trained weights"):
        resolve_teacher(validate_config(raw))
    raw["methods"] = [{"name": "scratch", "label": "big", "model": "teacher"}]
    with pytest.raises(UserError, match="run `ray-t2t train CONFIG method=big` first"):
        resolve_teacher(validate_config(raw))


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from ray_t2t.ray_cluster import start_local_ray

    start_local_ray(num_cpus=2)
    yield
    ray.shutdown()


def read_ids(folder) -> list[int]:
    ids = []
    for shard in json.loads((folder / MANIFEST).read_text())["shards"]:
        ids += pq.read_table(folder / shard["name"], columns=["example_id"]).column("example_id").to_pylist()
    return ids


@pytest.mark.ray
@pytest.mark.parametrize("preset", ["t5-tiny", "gpt2-tiny"])
def test_ray_data_inference_resumes_and_reuses(ray_session, tmp_path, preset):
    cfg, prepared = experiment(tmp_path, preset)
    messages = []
    manifest = produce_soft_targets(cfg, log=messages.append)
    folder = tmp_path / "runs" / "test" / "soft_targets" / "teacher"
    assert read_ids(folder) == list(range(300))
    record = read_record(folder)  # the ledger's record of the inference
    assert record["kind"] == "teacher_inference" and record["teacher"]["pre_existing"]
    assert record["teacher"]["training_cost"] == 0.0
    assert record["device_seconds"] == pytest.approx(sum(s["seconds"] for s in manifest["shards"]))
    assert record["cost"]["total"] == pytest.approx(record["device_seconds"] / 3600 * cfg.cost.cpu_hour)
    assert record["data"]["target_tokens"] == manifest["target_tokens"] and record["data"]["source_tokens"] > 0
    assert record["storage"]["bytes"] == manifest["bytes"] and record["tokens_per_s"] > 0
    # a job killed after two shards: the last shard and the manifest are missing
    (folder / MANIFEST).unlink()
    (folder / shard_name(2)).unlink()
    untouched = (folder / shard_name(0)).stat().st_mtime_ns
    messages.clear()
    resumed = produce_soft_targets(cfg, log=messages.append)
    assert any("1 of 3 shards to compute" in m for m in messages)
    assert (folder / shard_name(0)).stat().st_mtime_ns == untouched
    assert read_ids(folder) == list(range(300))  # one row per example, none twice
    assert [s["sha256"] for s in resumed["shards"][:2]] == [s["sha256"] for s in manifest["shards"][:2]]
    # the kept shards' inference is still charged, once; the rerun's wall time is not the whole job's
    assert read_record(folder)["device_seconds"] == pytest.approx(sum(s["seconds"] for s in resumed["shards"]))
    assert read_record(folder)["tokens_per_s"] is None
    messages.clear()
    produce_soft_targets(cfg, log=messages.append)
    assert any("reusing" in m for m in messages)
    assert not list(folder.glob(".*.tmp"))


@pytest.mark.parametrize("preset", ["t5-tiny", "gpt2-tiny"])
def test_kd_collate_aligns_teacher_rows_with_labelled_positions(tmp_path, preset):
    from ray_t2t.methods import Setup
    from ray_t2t.methods.kd_logits import collate as kd_collate
    from ray_t2t.methods.kd_logits import kd_loss

    cfg, prepared = experiment(tmp_path, preset)
    replica, folder = write_all_shards_in_process(cfg, prepared)
    produce_soft_targets(cfg, log=lambda m: None)
    raw = cfg.model_dump(mode="json")
    raw["methods"] = [{"name": "kd_logits", "top_k": 4, "temperature": 2.0}]
    kd_cfg = validate_config(raw)
    setup = Setup(
        kd_cfg,
        kd_cfg.methods[0],
        replica.tokenizer,
        seed=0,
        encoder_decoder=replica.encoder_decoder,
        extras={"soft_targets": [str(folder)], "stored_temperatures": [1.0]},
    )
    indices = [3, 150, 299]
    batch = kd_collate(
        setup, [replica.source_ids[i] for i in indices], [replica.target_ids[i] for i in indices], indices=indices
    )
    positions = sum(len(replica.target_ids[i]) for i in indices)
    assert batch["teacher_topk_ids"].shape == (positions, 4)
    # the teacher itself as the student: its own distribution, so the divergence is ~0
    teacher_ids, teacher_logprobs = batch.pop("teacher_topk_ids"), batch.pop("teacher_topk_logprobs")
    with torch.no_grad():
        logits = replica.model(**batch).logits
    loss = kd_loss(logits, batch["labels"], teacher_ids, teacher_logprobs, setup.encoder_decoder, kd_cfg.methods[0])
    assert float(loss) == pytest.approx(0.0, abs=2e-3)  # float16 storage


def test_kd_sequence_trains_on_the_teachers_generations(tmp_path):
    from ray_t2t.methods import Setup
    from ray_t2t.methods.kd_sequence import collate as seq_collate
    from ray_t2t.methods.kd_sequence import keeps_gold
    from ray_t2t.teachers import load_generations

    cfg, prepared = experiment(tmp_path, "t5-tiny", generations="greedy")
    replica, folder = write_all_shards_in_process(cfg, prepared)
    produce_soft_targets(cfg, log=lambda m: None)
    generations = load_generations(folder)
    assert sorted(generations) == list(range(300))
    indices = list(range(40))
    sources = [replica.source_ids[i] for i in indices]
    golds = [replica.target_ids[i] for i in indices]
    eos = replica.tokenizer.eos_id

    def labels_with(gold_mix):
        raw = cfg.model_dump(mode="json")
        raw["methods"] = [{"name": "kd_sequence", "gold_mix": gold_mix}]
        seq_cfg = validate_config(raw)
        setup = Setup(
            seq_cfg,
            seq_cfg.methods[0],
            replica.tokenizer,
            seed=0,
            encoder_decoder=True,
            extras={"soft_targets": [str(folder)]},
        )
        labels = seq_collate(setup, sources, golds, indices=indices)["labels"].tolist()
        return [[t for t in row if t != -100] for row in labels]

    teacher_only = labels_with(0.0)
    assert all(row[-1] == eos for row in teacher_only)
    assert teacher_only == [
        g if g[-1:] == [eos] else g + [eos] for g in (generations[i] or golds[n] for n, i in enumerate(indices))
    ]
    half = labels_with(0.5)
    kept = [keeps_gold(i, 0.5, 0) for i in indices]
    assert 10 < sum(kept) < 30
    assert all(row == (golds[n] if kept[n] else teacher_only[n]) for n, row in enumerate(half))
    assert labels_with(1.0) == golds

    shard = folder / shard_name(0)
    shard.write_bytes(shard.read_bytes()[:-10] + b"x" * 10)
    with pytest.raises(DataError, match="shard-00000.parquet: checksum does not match"):
        load_generations(folder)  # each shard checked as it is read


@pytest.mark.ray
def test_a_teacher_job_killed_mid_run_resumes_to_exactly_one_row_per_example(tmp_path, ray_t2t_bin):
    """`ray-t2t teacher` in its own process group, SIGKILLed (driver, local Ray and its actors) once
    its first shard is on disk, then rerun: every example once, checksums verified, no temporary files."""
    import os
    import signal
    import subprocess
    import time

    import yaml

    raw = minimal_config(tmp_path)
    raw["data"]["split_sizes"] = {"train": 2400, "validation": 20, "test": 20}
    prepared = prepare_data(validate_config(raw))
    teacher, _ = build_model(ModelSpec(preset="t5-0.5m"), prepared.tokenizer(), seed=0)
    teacher.save_pretrained(tmp_path / "teacher")
    raw["models"]["teacher"] = {"name_or_path": str(tmp_path / "teacher")}
    raw["soft_targets"] = {"rows_per_shard": 100, "batch_size": 50, "top_k": 8, "generations": "greedy"}
    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(raw))
    folder = tmp_path / "runs" / "test" / "soft_targets" / "teacher"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    job = subprocess.Popen(
        [ray_t2t_bin, "teacher", str(config)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (folder / shard_name(0)).exists() and job.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    time.sleep(1)  # let any orphan finish dying
    kept = sorted(folder.glob("shard-*.parquet"))
    assert 1 <= len(kept) < 24 and not (folder / MANIFEST).exists(), "the kill did not land mid-run"

    done = subprocess.run([ray_t2t_bin, "teacher", str(config)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert f"{24 - len(kept)} of 24 shards to compute" in done.stdout
    ids = read_ids(folder)
    assert sorted(ids) == list(range(2400)) and len(ids) == len(set(ids))
    verify_manifest(folder)  # every checksum
    assert not list(folder.glob(".*.tmp"))  # a shard half-written at the kill was cleared


@pytest.mark.parametrize("kind", ["forward_kl", "reverse_kl", "jsd"])
def test_a_one_teacher_mixture_is_kd_logits_and_duplicates_change_nothing(kind):
    from types import SimpleNamespace

    from ray_t2t.methods.kd_logits import kd_loss
    from ray_t2t.methods.kd_multi_teacher import mixture_kd_loss

    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 30, generator=generator, requires_grad=True)
    labels = torch.randint(0, 30, (2, 5), generator=generator)
    labels[1, 3:] = -100
    positions = int((labels != -100).sum())
    ids = torch.stack([torch.randperm(30, generator=generator)[:6] for _ in range(positions)])
    logprobs = torch.log_softmax(torch.randn(positions, 6, generator=generator), -1)
    params = SimpleNamespace(temperature=2.0, divergence=kind)
    single = kd_loss(logits, labels, ids, logprobs, True, params)
    mixed = mixture_kd_loss(logits, labels, ids[None], logprobs[None], [1.0], True, params)
    assert float(mixed.detach()) == pytest.approx(float(single.detach()), rel=1e-5)
    twice = mixture_kd_loss(
        logits, labels, torch.stack([ids, ids]), torch.stack([logprobs, logprobs]), [0.3, 0.7], True, params
    )
    assert float(twice.detach()) == pytest.approx(float(single.detach()), rel=1e-5)
    twice.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0


def test_kd_multi_teacher_student_learns_from_two_teachers(tmp_path):
    from ray_t2t.methods import get_method

    raw = minimal_config(tmp_path)
    prepared = prepare_data(validate_config(raw))
    for name, seed in (("teacher_a", 1), ("teacher_b", 2)):
        model, _ = build_model(ModelSpec(preset="t5-tiny"), prepared.tokenizer(), seed=seed)
        model.save_pretrained(tmp_path / name)
    raw["models"]["teacher"] = [{"name_or_path": str(tmp_path / n)} for n in ("teacher_a", "teacher_b")]
    raw["soft_targets"] = {"rows_per_shard": ROWS_PER_SHARD, "batch_size": 64, "top_k": 8}
    raw["methods"] = [{"name": "kd_multi_teacher", "weights": [1, 3], "top_k": 8}]
    raw["training"] = {"batch_size": 32, "max_steps": 40, "warmup_steps": 2, "learning_rate": 3e-3}
    raw["eval"] = {"every_n_steps": 40}
    cfg = validate_config(raw)
    with pytest.raises(ConfigError, match="weights has 1 entries for 2 teacher"):
        get_method("kd_multi_teacher").check(cfg, cfg.methods[0].model_copy(update={"weights": [1.0]}))
    for name in ("teacher_a", "teacher_b"):  # shards in this process: no Ray needed
        folder = cfg.experiment_dir / "soft_targets" / name
        folder.mkdir(parents=True)
        replica = TeacherReplica(
            {
                "config": cfg.model_dump(mode="json"),
                "data_path": str(prepared.path),
                "teacher_path": str(tmp_path / name),
                "folder": str(folder),
            }
        )
        for shard in range(3):
            replica.write_shard(shard)
    from ray_t2t.training.launcher import prepare_method

    extras = prepare_method(cfg, cfg.methods[0], lambda m: None)
    assert [Path(f).name for f in extras["soft_targets"]] == ["teacher_a", "teacher_b"]
    assert extras["weights"] == [0.25, 0.75]
    record = train_locally(cfg, "kd_multi_teacher", prepared.path, tmp_path / "student", extras=extras)
    curve = record["learning_curve"]
    assert curve[-1]["val_loss"] < curve[0]["val_loss"] and record["status"] == "finished"

"""Teacher soft targets: computed once on Ray Data, stored as checksummed shards, reused by students.

    ray-t2t teacher CONFIG                 # or: from ray_t2t.soft_targets import produce_soft_targets

Layout, under <storage_path>/<run.name>/soft_targets/<teacher>/:

    request.json           what was asked (identity of teacher weights, tokenizer, data, k, ...),
                           written before any shard: a different request for this folder is refused
    shard-00000.parquet    rows [0, rows_per_shard) of the training split, and so on: shard ids are
                           fixed by row numbers, so a rerun computes exactly the missing shards
    record.json            the ledger's record of this inference (device-seconds, $, tokens/s,
                           bytes and their storage price), in the format of training run records
    manifest.json          written last: shards with rows and sha256, totals, bytes per target token

A shard row: example_id, positions (target tokens, end-of-sequence included), teacher_topk_ids
(positions x k, in the smallest unsigned type that holds the vocabulary), teacher_topk_logprobs
(positions x k, float16, log-softmax of logits / temperature), and optionally the teacher's own
generation (token ids). Each shard is written under a temporary name and renamed when complete, so a
killed job leaves complete shards or nothing; readers (open_soft_targets) verify the manifest.

Ray Data runs the inference: a dataset of the missing shard ids goes through map_batches over an
actor pool of teacher replicas (`soft_targets.replicas`, CPUs/GPUs each), one shard per call.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ray_t2t.batching import family_collate
from ray_t2t.config.experiment import ExperimentConfig, validate_config
from ray_t2t.config.sections import ModelSpec
from ray_t2t.data import SPLIT_FILE, PreparedData, Split, prepare_data
from ray_t2t.decoding import generate_ids
from ray_t2t.errors import ConfigError, DataError, UserError
from ray_t2t.ledger import Hardware, read_record, short_gpu_name, write_record
from ray_t2t.models import build_model, is_encoder_decoder
from ray_t2t.preflight import check_cluster_fits, check_storage_writable
from ray_t2t.ray_cluster import ensure_ray
from ray_t2t.run_record import RECORD_VERSION
from ray_t2t.storage import (
    StoragePath,
    absolute,
    child,
    files_under,
    location,
    open_input,
    sha256_of,
    write_atomic,
    write_parquet,
)
from ray_t2t.teachers import (
    FORMAT_VERSION,
    MANIFEST,
    REQUEST,
    Teacher,
    id_type_for,
    resolve_teachers,
    shard_name,
    verify_manifest,
)

if TYPE_CHECKING:
    import torch

    from ray_t2t.tokenizer import PairTokenizer

# ------------------------------------------------------------------------------------- the teacher


def identity(cfg: ExperimentConfig, teacher: Teacher, prepared: PreparedData) -> dict[str, Any]:
    """What the stored soft targets depend on; a folder holds soft targets of one identity only."""
    path = location(teacher.path)
    if path.is_dir():
        digest = hashlib.sha256()
        for name, file, _ in files_under(path):
            digest.update(name.encode())
            digest.update(sha256_of(file).encode())
        teacher_hash = digest.hexdigest()
    else:  # a hub name: its name stands for its weights
        teacher_hash = hashlib.sha256(teacher.path.encode()).hexdigest()
    meta = json.dumps(prepared.tokenizer().meta, sort_keys=True)
    settings = cfg.soft_targets
    return {
        "format": FORMAT_VERSION,
        "teacher weights": teacher_hash,
        "tokenizer": hashlib.sha256(meta.encode()).hexdigest(),
        "data split": sha256_of(prepared.files / SPLIT_FILE.format("train")),
        "k": settings.top_k,
        "temperature": settings.temperature,
        "generations": settings.generations,
        "num_beams": settings.num_beams if settings.generations == "beam" else None,
        "rows_per_shard": settings.rows_per_shard,
    }


def _check_request(folder: StoragePath, wanted: dict) -> None:
    path = folder / REQUEST
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    differ = [key for key in wanted if stored.get(key) != wanted[key]]
    if differ:
        details = ", ".join(
            f"{key} ({stored.get(key)} -> {wanted[key]})"
            if key in ("k", "temperature", "generations", "num_beams", "rows_per_shard")
            else key
            for key in differ
        )
        raise UserError(
            f"{folder} holds soft targets made with a different {details}. Use another run.name, or remove "
            "that folder to recompute them"
        )


# ------------------------------------------------------------------------------------ the replicas


def topk_rows(
    model: torch.nn.Module,
    tokenizer: PairTokenizer,
    encoder_decoder: bool,
    sources: list[list[int]],
    targets: list[list[int]],
    k: int,
    temperature: float,
) -> list[tuple[int, Any, Any]]:
    """Per example: (positions, ids[positions x k], logprobs[positions x k]) at every target position,
    teacher-forced. Decoder-only models predict position t+1 at t, hence the shift."""
    import torch

    batch = family_collate(encoder_decoder, tokenizer, sources, targets)
    batch = {key: value.to(model.device) for key, value in batch.items()}
    with torch.no_grad():
        logits = model(**batch).logits
    labels = batch["labels"]
    if not encoder_decoder:
        logits, labels = logits[:, :-1], labels[:, 1:]
    logprobs = torch.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = logprobs.topk(min(k, logprobs.shape[-1]), dim=-1)
    rows = []
    for b in range(labels.shape[0]):
        keep = labels[b] != -100
        rows.append((int(keep.sum()), ids[b][keep].cpu().numpy(), values[b][keep].cpu().numpy()))
    return rows


class TeacherReplica:
    """A Ray Data actor: loads the teacher once, then computes and writes whole shards."""

    def __init__(self, job: dict) -> None:
        import torch

        self.job = job
        self.cfg = validate_config(job["config"])
        settings = self.cfg.soft_targets
        if settings.gpus_per_replica > 0:
            self.device = torch.device("cuda")
        else:
            self.device = torch.device("cpu")
            torch.set_num_threads(max(1, int(settings.cpus_per_replica)))
        data = PreparedData.open(job["data_path"])
        tokenizer = data.tokenizer()
        self.model, _ = build_model(ModelSpec(name_or_path=job["teacher_path"]), tokenizer)
        self.model.to(self.device).eval()
        self.tokenizer, self.encoder_decoder = tokenizer, is_encoder_decoder(self.model)
        train = Split(data, "train")
        self.source_ids, self.target_ids = train.source_ids, train.target_ids
        self.folder = location(job["folder"])

    def __call__(self, batch: dict) -> dict:
        results = [self.write_shard(int(index)) for index in batch["shard"]]
        return {key: [r[key] for r in results] for key in results[0]}

    def write_shard(self, index: int) -> dict:
        import numpy as np
        import pyarrow as pa

        started = time.perf_counter()
        settings = self.cfg.soft_targets
        first = index * settings.rows_per_shard
        last = min(first + settings.rows_per_shard, len(self.source_ids))
        id_type = id_type_for(self.tokenizer.vocab_size)
        example_ids, positions, topk_ids, topk_logprobs, generations = [], [], [], [], []
        for start in range(first, last, settings.batch_size):
            stop = min(start + settings.batch_size, last)
            sources, targets = self.source_ids[start:stop], self.target_ids[start:stop]
            for offset, (count, ids, logprobs) in enumerate(
                topk_rows(
                    self.model,
                    self.tokenizer,
                    self.encoder_decoder,
                    sources,
                    targets,
                    settings.top_k,
                    settings.temperature,
                )
            ):
                example_ids.append(start + offset)
                positions.append(count)
                topk_ids.append(ids.reshape(-1).astype(np.uint64))
                topk_logprobs.append(logprobs.reshape(-1).astype(np.float16))
            if settings.generations != "none":
                beams = settings.num_beams if settings.generations == "beam" else 1
                generations += generate_ids(
                    self.model,
                    self.tokenizer,
                    sources,
                    max_new_tokens=self.cfg.data.max_target_length,
                    num_beams=beams,
                    batch_size=settings.batch_size,
                )
        columns = {
            "example_id": pa.array(example_ids, pa.int64()),
            "positions": pa.array(positions, pa.int32()),
            "teacher_topk_ids": pa.array(topk_ids, pa.list_(id_type)),
            "teacher_topk_logprobs": pa.array(topk_logprobs, pa.list_(pa.float16())),
        }
        if settings.generations != "none":
            columns["teacher_generation"] = pa.array(generations, pa.list_(pa.int32()))
        seconds = time.perf_counter() - started
        device = torch_device_name(self.device)
        # what the ledger needs survives in the shard itself, also across a killed job's rerun
        ledger = {
            "seconds": seconds,
            "device": device,
            "source_tokens": int(sum(map(len, self.source_ids[first:last]))),
        }
        table = pa.table(columns).replace_schema_metadata({"ray_t2t": json.dumps(ledger)})
        write_parquet(table, self.folder / shard_name(index), compression="zstd")  # a reader sees all or none
        return {"shard": index, "rows": len(example_ids), "target_tokens": int(sum(positions)), "seconds": seconds}


def torch_device_name(device: torch.device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


# --------------------------------------------------------------------------------------- the driver


def _shard_stats(path: StoragePath) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open_input(path) as handle:  # one read: size, checksum and contents of the same bytes
        data = handle.read()
    parquet = pq.ParquetFile(pa.BufferReader(data))
    table = parquet.read(columns=["example_id", "positions"])
    metadata = parquet.schema_arrow.metadata or {}
    ids = table.column("example_id").to_pylist()
    ledger = json.loads(metadata.get(b"ray_t2t", b"{}"))
    return {
        "name": path.name,
        "rows": len(ids),
        "first_id": min(ids),
        "last_id": max(ids),
        "target_tokens": int(sum(table.column("positions").to_pylist())),
        "source_tokens": ledger.get("source_tokens"),
        "seconds": ledger.get("seconds"),
        "device": ledger.get("device"),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }


_reuse_announced: set[str] = set()


def produce_soft_targets(cfg: ExperimentConfig, log: Callable[[str], None] = print, teacher_index: int = 0) -> dict:
    """Compute (or reuse) one teacher's soft targets for the training split; returns the manifest.
    Raises ConfigError/UserError before any work when the teacher is missing or the folder holds
    soft targets of another identity."""
    teacher = resolve_teachers(cfg)[teacher_index]
    check_storage_writable(cfg)
    prepared = prepare_data(cfg, log=log)
    folder = child(cfg.experiment_dir, "soft_targets", teacher.label).resolve()  # a Path, or a storage.Remote
    wanted = identity(cfg, teacher, prepared)
    _check_request(folder, wanted)
    manifest_path = folder / MANIFEST
    if manifest_path.is_file():
        manifest = verify_manifest(folder)
        if str(folder) not in _reuse_announced:  # a sweep prepares each distillation method: say it once
            _reuse_announced.add(str(folder))
            log(f"soft targets: reusing {folder}")
        if read_record(folder) is None:
            write_record(folder, inference_record(cfg, teacher, manifest, wall_s=None, log=log))
        return manifest
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REQUEST).write_text(json.dumps(wanted, indent=1, sort_keys=True))
    rows = prepared.summary["splits"]["train"]["examples"]
    settings = cfg.soft_targets
    count = math.ceil(rows / settings.rows_per_shard)
    missing = [i for i in range(count) if not (folder / shard_name(i)).is_file()]
    started = time.perf_counter()
    for stale in folder.glob(".shard-*.tmp"):  # half-written by a job that was killed
        stale.unlink()
    if missing:
        log(
            f"soft targets: {len(missing)} of {count} shards to compute with {settings.replicas} teacher replica(s) "
            f"({teacher.path})"
        )
        _run_replicas(cfg, teacher, prepared, folder, missing, log)
        for stale in folder.glob(".shard-*.tmp"):  # left by a replica lost with its node; its shard was redone
            stale.unlink()
    seconds = time.perf_counter() - started
    shards = [_shard_stats(folder / shard_name(i)) for i in range(count)]
    covered = sum(s["rows"] for s in shards)
    if covered != rows:
        raise DataError(f"{folder}: shards hold {covered} rows, the training split {rows}")
    tokens = sum(s["target_tokens"] for s in shards)
    size = sum(s["bytes"] for s in shards)
    manifest = {
        "identity": wanted,
        "teacher": {"label": teacher.label, "path": teacher.path, "pre_existing": teacher.record is None},
        "rows": rows,
        "target_tokens": tokens,
        "bytes": size,
        "bytes_per_target_token": size / max(1, tokens),
        "inference_s": seconds,
        "shards": shards,
    }
    record = inference_record(cfg, teacher, manifest, wall_s=seconds if len(missing) == count else None, log=log)
    write_record(folder, record)
    write_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True))  # last: every shard is complete
    log(
        f"soft targets: {rows:,} examples, {tokens:,} target tokens, {size / 1e6:.2f} MB "
        f"({manifest['bytes_per_target_token']:.1f} B/token at k={settings.top_k}) in {folder}"
    )
    cost = record["cost"]["total"]
    log(
        f"soft targets: {record['device_seconds']:.1f} device-seconds of teacher inference"
        + (f", {cost:.4f} {cfg.cost.currency}" if cost is not None else "")
        + f", {record['tokens_per_s_per_replica']:,.0f} tokens/s per replica"
    )
    return manifest


def inference_record(
    cfg: ExperimentConfig, teacher: Teacher, manifest: dict, wall_s: float | None, log: Callable[[str], None] = print
) -> dict:
    """The ledger's record of a teacher inference, in the format of training run records.

    Device-seconds count the seconds replicas spent computing shards (kept in each shard, so a job
    killed and rerun is charged for every shard it kept, once) x devices per replica; a replica's idle
    time and the work on shards a kill lost are not counted. `wall_s` is the inference's wall time when
    one job computed every shard (else null)."""
    settings = cfg.soft_targets
    shards = manifest["shards"]
    devices = {s["device"] for s in shards if s.get("device")}
    device_type = (
        "cpu"
        if settings.gpus_per_replica == 0
        else (cfg.scaling.accelerator_type or short_gpu_name(sorted(devices)[0] if devices else None) or "gpu")
    )
    per_replica = settings.gpus_per_replica or settings.cpus_per_replica
    hardware = Hardware(settings.replicas, device_type, float(per_replica))
    busy_s = sum(s.get("seconds") or 0.0 for s in shards)
    device_s = busy_s * per_replica
    source_tokens = sum(s.get("source_tokens") or 0 for s in shards)
    tokens = source_tokens + manifest["target_tokens"]
    try:
        price = hardware.price_per_device_hour(cfg)
    except ConfigError as error:
        log(f"soft targets: no price, cost recorded as null: {error}")
        price = None
    teacher_record = teacher.record or {}
    return {
        "record_version": RECORD_VERSION,
        "kind": "teacher_inference",
        "experiment": cfg.run.name,
        "label": f"soft_targets:{teacher.label}",
        "method": "teacher_inference",
        "status": "finished",
        "teacher": {
            "label": teacher.label,
            "path": teacher.path,
            "pre_existing": teacher.record is None,
            # what training the teacher cost (zero for a pre-existing teacher), charged to its students
            "training_device_seconds": teacher_record.get("device_seconds", 0.0),
            "training_cost": (teacher_record.get("cost") or {}).get("total", 0.0),
        },
        "settings": {
            "top_k": settings.top_k,
            "temperature": settings.temperature,
            "generations": settings.generations,
            "batch_size": settings.batch_size,
        },
        "hardware": hardware.as_dict(),
        "times": {"busy_s": busy_s, "wall_s": wall_s},
        "device_seconds": device_s,
        "cost": {
            "currency": cfg.cost.currency,
            "price_per_device_hour": price,
            "total": device_s / 3600 * price if price is not None else None,
            "storage_per_month": manifest["bytes"] / 1e9 * cfg.cost.storage_gb_month,
        },
        "data": {
            "examples": manifest["rows"],
            "source_tokens": source_tokens,
            "target_tokens": manifest["target_tokens"],
            "tokens": tokens,
        },
        "tokens_per_s": tokens / wall_s if wall_s else None,
        "tokens_per_s_per_replica": tokens / busy_s if busy_s else None,
        "storage": {
            "bytes": manifest["bytes"],
            "bytes_per_target_token": manifest["bytes_per_target_token"],
            "shards": len(shards),
        },
    }


def _run_replicas(
    cfg: ExperimentConfig,
    teacher: Teacher,
    prepared: PreparedData,
    folder: StoragePath,
    missing: list[int],
    log: Callable[[str], None] = print,
) -> None:
    import ray

    settings = cfg.soft_targets
    ensure_ray(settings.gpus_per_replica > 0)
    check_cluster_fits(cfg, ("teacher",), log)
    job = {
        "config": cfg.model_dump(mode="json"),
        "data_path": str(prepared.path.resolve()),
        "teacher_path": absolute(teacher.path),
        "folder": str(folder),
    }
    dataset = ray.data.from_items([{"shard": index} for index in missing])
    results = dataset.map_batches(
        TeacherReplica,
        fn_constructor_kwargs={"job": job},
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=settings.replicas),
        num_cpus=settings.cpus_per_replica,
        num_gpus=settings.gpus_per_replica,
    ).take_all()
    if len(results) != len(missing):
        raise UserError(f"teacher inference returned {len(results)} of {len(missing)} shards; rerun to resume")

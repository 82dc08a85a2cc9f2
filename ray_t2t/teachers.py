"""The teachers and what they stored: which weights each teacher of models.teacher is, and the
soft-target shards that `ray-t2t teacher` (ray_t2t.soft_targets) writes and students read (layout
in ray_t2t.soft_targets). Below the methods, so a student reads its teacher without starting Ray."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_t2t.errors import ConfigError, DataError, UserError
from ray_t2t.ledger import read_record
from ray_t2t.storage import StoragePath, child, location, open_input, sha256_of

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig

MANIFEST = "manifest.json"
REQUEST = "request.json"
FORMAT_VERSION = 1


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.parquet"


def id_type_for(vocab_size: int) -> Any:
    """The smallest unsigned integer type that holds every token id."""
    import pyarrow as pa

    for bits, kind in ((8, pa.uint8()), (16, pa.uint16()), (32, pa.uint32())):
        if vocab_size <= 2**bits:
            return kind
    return pa.uint64()


@dataclass
class Teacher:
    label: str  # folder name under soft_targets/
    path: str  # name_or_path to load
    record: dict | None  # its training run record (None: a pre-existing teacher, cost zero)


def resolve_teacher(cfg: ExperimentConfig, index: int = 0) -> Teacher:
    """Teacher `index` of models.teacher. The first teacher is the output of the method entry that
    trains models.teacher when the config has one (from a preset, or fine-tuned from Hub weights);
    otherwise a teacher is the weights it names (a run's exported model folder brings its run record,
    so its training is charged; anything else is a pre-existing teacher, cost zero). Raises
    ConfigError/UserError saying what to do."""
    teachers = cfg.models.teachers
    if not teachers:
        raise ConfigError("no models.teacher in the config: set one (a preset trained by a method, or a name/path)")
    trainers = [m for m in cfg.methods if getattr(m, "model", None) == "teacher"]
    if index == 0 and trainers:
        label = trainers[0].label or trainers[0].name
        run_dir = child(cfg.experiment_dir, "runs", label)
        record = read_record(run_dir)
        if record is None or record.get("status") != "finished":
            raise UserError(f"the teacher is not trained yet: run `ray-t2t train CONFIG method={label}` first")
        return Teacher(label, str(run_dir / "model"), record)
    spec = teachers[index]
    if spec.name_or_path is not None and spec.pretrained:
        path = location(spec.name_or_path)
        if path.exists():
            record = read_record(path.parent) if path.name == "model" else None  # a ray_t2t run's export
            label = path.parent.name if record else path.name
        else:  # a Hub name
            record, label = None, spec.name_or_path.replace("/", "--")
        return Teacher(label, spec.name_or_path, record)
    if index > 0:
        raise ConfigError(
            f"models.teacher[{index}] has no weights: only the first teacher can be trained by a "
            "method entry; give the others a name_or_path"
        )
    raise ConfigError(
        "models.teacher has no trained weights (a preset). Add a method entry that trains it, e.g. "
        "{name: scratch, label: teacher, model: teacher}, or set models.teacher.name_or_path"
    )


def resolve_teachers(cfg: ExperimentConfig) -> list[Teacher]:
    """Every teacher of models.teacher, with distinct labels (their soft-target folder names)."""
    teachers = [resolve_teacher(cfg, i) for i in range(len(cfg.models.teachers))]
    labels = [t.label for t in teachers]
    for i, teacher in enumerate(teachers):
        if labels.count(teacher.label) > 1:
            teacher.label = f"{teacher.label}-{i}"
    return teachers


# --------------------------------------------------------------------------------- the stored shards


def verify_manifest(folder: StoragePath, checksums: bool = True) -> dict:
    """The manifest, after checking that every shard it lists is there (with its checksum, unless
    `checksums` is false: a reader that checks each shard as it reads it, read_shard) and that the
    example ids cover 0..rows-1 once. Raises DataError naming what is wrong."""
    folder = location(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise DataError(f"{folder}: no {MANIFEST}; the soft targets are incomplete (rerun `ray-t2t teacher`)")
    manifest = json.loads(path.read_text())
    expected_first = 0
    for shard in manifest["shards"]:
        file = folder / shard["name"]
        if not file.is_file():
            raise DataError(f"{file}: listed in the manifest but missing")
        if checksums and sha256_of(file) != shard["sha256"]:
            raise DataError(f"{file}: checksum does not match the manifest (changed or corrupt)")
        if shard["first_id"] != expected_first or shard["last_id"] - shard["first_id"] + 1 != shard["rows"]:
            raise DataError(
                f"{file}: holds example ids {shard['first_id']}..{shard['last_id']}, expected from {expected_first}"
            )
        expected_first += shard["rows"]
    if expected_first != manifest["rows"]:
        raise DataError(f"{folder}: shards hold {expected_first} rows, the manifest says {manifest['rows']}")
    return manifest


def read_shard(folder: StoragePath, shard: dict, columns: list[str]) -> Any:
    """The `columns` of a manifest's shard as a pyarrow Table, read once (one download from a bucket)
    and checked against the manifest's checksum before it is parsed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    file = folder / shard["name"]
    with open_input(file) as handle:
        data = handle.read()
    if hashlib.sha256(data).hexdigest() != shard["sha256"]:
        raise DataError(f"{file}: checksum does not match the manifest (changed or corrupt)")
    return pq.read_table(pa.BufferReader(data), columns=columns)


def load_soft_targets(folder: str | Path) -> dict[int, tuple]:
    """{example_id: (topk_ids [positions x k] int64, topk_logprobs [positions x k] float32)} of a
    verified soft-target folder (for training; the manifest is checked first, each shard's checksum
    as it is read)."""
    import numpy as np

    folder = location(folder)
    manifest = verify_manifest(folder, checksums=False)  # read_shard checks each shard as it reads it
    rows: dict[int, tuple] = {}
    for shard in manifest["shards"]:
        table = read_shard(folder, shard, ["example_id", "positions", "teacher_topk_ids", "teacher_topk_logprobs"])
        examples = table.column("example_id").to_numpy()
        positions = table.column("positions").to_numpy()
        ids = table.column("teacher_topk_ids").combine_chunks()
        logprobs = table.column("teacher_topk_logprobs").combine_chunks()
        flat_ids = ids.flatten().to_numpy().astype(np.int64)
        flat_logprobs = logprobs.flatten().to_numpy().astype(np.float32)
        offsets = ids.offsets.to_numpy()
        for j, example in enumerate(examples):
            span = slice(offsets[j], offsets[j + 1])
            rows[int(example)] = (
                flat_ids[span].reshape(positions[j], -1),
                flat_logprobs[span].reshape(positions[j], -1),
            )
    if len(rows) != manifest["rows"]:
        raise DataError(f"{folder}: {len(rows)} distinct examples, the manifest says {manifest['rows']}")
    return rows


def load_generations(folder: str | Path) -> dict[int, list[int]]:
    """{example_id: the teacher's generated target ids} of a verified soft-target folder."""
    folder = location(folder)
    manifest = verify_manifest(folder, checksums=False)  # read_shard checks each shard as it reads it
    if manifest["identity"]["generations"] == "none":
        raise DataError(f"{folder}: made without generations (soft_targets.generations: none)")
    rows: dict[int, list[int]] = {}
    for shard in manifest["shards"]:
        table = read_shard(folder, shard, ["example_id", "teacher_generation"])
        rows.update(zip(table.column("example_id").to_pylist(), table.column("teacher_generation").to_pylist()))
    return rows

"""Object-store storage paths (ray_t2t/storage.py) against a real S3 endpoint on loopback (moto's
server): every stage's files under s3://, read back by path, by hash and by parquet; no Ray here
(tests/test_storage_ray.py runs a whole comparison on s3://)."""

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from ray_t2t import storage
from ray_t2t.config.experiment import validate_config
from ray_t2t.data import PreparedData, prepare_data
from ray_t2t.errors import ConfigError
from ray_t2t.ledger import read_record, write_record
from ray_t2t.preflight import check_storage_writable
from ray_t2t.storage import Remote, local_copy, location, staged_folder

from conftest import minimal_config


def test_locations_parse_uris_with_their_options_and_join_like_paths():
    root = location("s3://bucket/runs/?endpoint_override=minio:9000&scheme=http")
    assert isinstance(root, Remote) and root.path == "bucket/runs"
    exp = root / "exp" / "runs/teacher/"
    assert str(exp) == "s3://bucket/runs/exp/runs/teacher?endpoint_override=minio:9000&scheme=http"
    assert exp.name == "teacher" and exp.parent.parent == root / "exp" and exp.resolve() is exp
    assert location(str(exp)) == exp  # what a worker gets in its payload is the same place
    assert exp.relative_to(root) == "exp/runs/teacher"
    assert isinstance(location("runs/x"), Path) and isinstance(location("gs://b/x"), Remote)
    with pytest.raises(ValueError, match="unknown storage scheme ftp://"):
        location("ftp://host/x")
    assert (
        storage.uri_problem("file:///data/runs")
        == "'file:///data/runs': give a file:// location as a plain path (e.g. /data/runs)"
    )


def test_remote_paths_read_write_list_and_remove(s3_bucket):
    root = location(s3_bucket) / "exp"
    assert not root.exists() and root.glob("runs/*/record.json") == [] and root.files() == []
    (root / "runs" / "a" / "record.json").write_text('{"a": 1}')
    storage.write_atomic(root / "runs" / "b" / "record.json", '{"b": 2}')
    (root / "runs" / "b" / "model" / "w.bin").write_bytes(b"\0" * 1000)
    (root / "sweep" / "t1" / "record.json").write_text("{}")
    assert root.is_dir() and (root / "runs").is_dir() and not (root / "runs").is_file()
    assert (root / "runs" / "a" / "record.json").is_file() and (
        root / "runs" / "a" / "record.json"
    ).read_text() == '{"a": 1}'
    assert [p.relative_to(root) for p in root.glob("runs/*/record.json")] == [
        "runs/a/record.json",
        "runs/b/record.json",
    ]
    assert [p.relative_to(root) for p in root.glob("*/t?/record.json")] == ["sweep/t1/record.json"]
    assert [name for name, _, _ in storage.files_under(root / "runs")] == [
        "a/record.json",
        "b/model/w.bin",
        "b/record.json",
    ]
    assert storage.folder_bytes(root / "runs" / "b" / "model") == 1000
    (root / "runs" / "a" / "record.json").unlink()
    (root / "runs" / "a" / "record.json").unlink(missing_ok=True)
    storage.remove_tree(root / "runs")
    assert [p.relative_to(root) for p in root.glob("*/*/*")] == ["sweep/t1/record.json"]
    write_record(root / "runs" / "c", {"status": "finished"})
    assert read_record(root / "runs" / "c") == {"status": "finished"} and read_record(root / "runs" / "d") is None


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_staged_folder_replaces_its_target_whole_or_not_at_all(tmp_path, s3_bucket, where):
    target = (tmp_path / "exp" / "model") if where == "local" else location(s3_bucket) / "exp" / "model"
    with staged_folder(target) as folder:
        (folder / "old.bin").write_bytes(b"old")
    with pytest.raises(RuntimeError, match="export failed"):
        with staged_folder(target) as folder:
            (folder / "new.bin").write_bytes(b"new")
            raise RuntimeError("export failed")
    assert [name for name, _, _ in storage.files_under(target)] == ["old.bin"]  # untouched, nothing half-written
    with staged_folder(target, last="summary.json") as folder:
        (folder / "summary.json").write_text("{}")
        (folder / "sub").mkdir()
        (folder / "sub" / "new.bin").write_bytes(b"new")
    assert [name for name, _, _ in storage.files_under(target)] == ["sub/new.bin", "summary.json"]
    assert not [p for p in Path(tmp_path).rglob("*staging*")]


def test_an_upload_puts_the_marker_file_last(tmp_path, s3_bucket, monkeypatch):
    local = tmp_path / "cache"
    (local / "tokenizer").mkdir(parents=True)
    for name in ("a.parquet", "summary.json", "z.parquet", "tokenizer/meta.json"):
        (local / name).write_text(name)
    order = []
    real_copy = shutil.copyfileobj
    monkeypatch.setattr(
        storage.shutil,
        "copyfileobj",
        lambda source, sink, size: (
            order.append(Path(source.name).relative_to(local).as_posix()),
            real_copy(source, sink, size),
        ),
    )
    storage.upload(local, location(s3_bucket) / "data", last="summary.json")
    assert order[-1] == "summary.json" and sorted(order) == [
        "a.parquet",
        "summary.json",
        "tokenizer/meta.json",
        "z.parquet",
    ]


def test_a_local_copy_is_downloaded_once_per_node_and_follows_changes(tmp_path, s3_bucket):
    folder = location(s3_bucket) / "exp" / "runs" / "teacher" / "model"
    (folder / "config.json").write_text('{"x": 1}')
    (folder / "tok" / "meta.json").write_text("{}")
    first = local_copy(folder)
    assert first.is_relative_to(tmp_path / "node_cache")  # RAY_T2T_CACHE_DIR, set by the fixture
    assert (first / "config.json").read_text() == '{"x": 1}' and (first / "tok" / "meta.json").is_file()
    stamp = (first / "config.json").stat().st_mtime_ns
    assert local_copy(folder) == first and (first / "config.json").stat().st_mtime_ns == stamp  # reused
    (folder / "config.json").write_text('{"x": 12}')  # rewritten (another size): a new copy
    assert (local_copy(folder) / "config.json").read_text() == '{"x": 12}'
    time.sleep(1.1)  # object times have a resolution of a second
    (folder / "config.json").write_text('{"x": 34}')  # retrained into the same folder: same size, new time
    assert (local_copy(folder) / "config.json").read_text() == '{"x": 34}'
    assert storage.local_model_path(str(folder)) == str(local_copy(folder))
    assert storage.local_model_path("t5-small") == "t5-small"
    with pytest.raises(FileNotFoundError, match="no files there"):
        local_copy(location(s3_bucket) / "nothing")


def test_parquet_and_hashes_read_the_same_from_s3_as_from_disk(tmp_path, s3_bucket):
    import pyarrow.parquet as pq

    table = pa.table({"example_id": pa.array(range(100), pa.int64()), "x": pa.array(np.arange(100) * 0.5)})
    local, remote = tmp_path / "shard.parquet", location(s3_bucket) / "shard.parquet"
    storage.write_parquet(table, local, compression="zstd")
    storage.write_parquet(table, remote, compression="zstd")
    assert not list(tmp_path.glob(".*tmp"))
    assert storage.sha256_of(remote) == storage.sha256_of(local)
    with storage.open_input(remote) as handle:
        assert pq.read_table(handle).equals(table)


def test_the_data_cache_is_written_to_s3_complete_and_reused(tmp_path, s3_bucket):
    raw = minimal_config(tmp_path)
    raw["run"]["storage_path"] = f"{s3_bucket}/runs"
    cfg = validate_config(raw)
    prepared = prepare_data(cfg)
    assert isinstance(prepared.path, Remote) and str(prepared.path).startswith(f"{s3_bucket}/runs/test/data/")
    names = [name for name, _, _ in prepared.path.files()]
    assert {"summary.json", "train.arrow", "validation.arrow", "test.arrow"} <= set(names)
    assert any(name.startswith("tokenizer/") for name in names)
    again = prepare_data(cfg)
    assert again.reused and again.path == prepared.path
    opened = PreparedData.open(str(prepared.path))  # as a worker on another node does
    assert opened.read_split("train").equals(prepared.read_split("train"))
    assert opened.tokenizer().meta == prepared.tokenizer().meta
    assert not (tmp_path / "runs").exists()  # nothing on this node's disk but the download cache


def test_an_s3_storage_path_is_checked_before_any_work(tmp_path, s3_bucket):
    raw = minimal_config(tmp_path)
    raw["run"]["storage_path"] = f"{s3_bucket}/runs"
    assert check_storage_writable(validate_config(raw)).files() == []  # the probe is gone
    missing = s3_bucket.replace("s3://", "s3://no-such-")
    raw["run"]["storage_path"] = f"{missing}/runs"
    with pytest.raises(ConfigError) as err:
        check_storage_writable(validate_config(raw))
    message = str(err.value)
    assert f"run.storage_path='{missing}/runs' is not writable" in message
    assert "Check the bucket exists" in message and "credentials" in message


def test_soft_targets_are_written_verified_and_read_on_s3(tmp_path, s3_bucket):
    """The teacher replica's shards, the manifest and the inference record go to the bucket; a
    training worker reads the same soft targets as from disk."""
    from ray_t2t.errors import DataError
    from ray_t2t.soft_targets import produce_soft_targets
    from ray_t2t.teachers import MANIFEST, load_soft_targets, shard_name, verify_manifest

    from test_soft_targets import experiment, write_all_shards_in_process

    cfg_local, _ = experiment(tmp_path / "local", "t5-tiny")
    write_all_shards_in_process(cfg_local, prepare_data(cfg_local))
    local_manifest = produce_soft_targets(cfg_local, log=lambda m: None)

    teacher = location(s3_bucket) / "teacher"
    storage.upload(Path(cfg_local.models.teachers[0].name_or_path), teacher)  # a teacher stored in the bucket
    raw = cfg_local.model_dump(mode="json")
    raw["run"]["storage_path"] = f"{s3_bucket}/runs"
    raw["models"]["teacher"] = {"name_or_path": str(teacher)}
    cfg = validate_config(raw)
    _, folder = write_all_shards_in_process(cfg, prepare_data(cfg))
    assert isinstance(folder, Remote)
    manifest = produce_soft_targets(cfg, log=lambda m: None)  # every shard there: no Ray needed
    same = ("name", "rows", "first_id", "last_id", "target_tokens")  # (the bytes hold each shard's timing)
    assert [[s[k] for k in same] for s in manifest["shards"]] == [
        [s[k] for k in same] for s in local_manifest["shards"]
    ]
    assert manifest["identity"]["teacher weights"] == local_manifest["identity"]["teacher weights"]
    assert (folder / MANIFEST).is_file() and read_record(folder)["kind"] == "teacher_inference"
    remote_rows, local_rows = (
        load_soft_targets(str(folder)),
        load_soft_targets(cfg_local.experiment_dir / "soft_targets" / "teacher"),
    )
    assert remote_rows.keys() == local_rows.keys()
    assert all(
        np.array_equal(remote_rows[i][0], local_rows[i][0]) and np.allclose(remote_rows[i][1], local_rows[i][1])
        for i in remote_rows
    )
    (folder / shard_name(1)).write_bytes(b"corrupt")
    with pytest.raises(DataError, match="shard-00001.parquet: checksum does not match"):
        verify_manifest(str(folder))
    with pytest.raises(DataError, match="shard-00001.parquet: checksum does not match"):
        load_soft_targets(str(folder))
    assert not (tmp_path / "runs").exists()


def test_a_report_of_an_experiment_on_s3_is_written_to_it(tmp_path, s3_bucket):
    from test_report import training_record

    from ray_t2t.reporting import build_report

    exp = location(s3_bucket) / "runs" / "exp"
    for i, (method, wer) in enumerate([("scratch", 0.4), ("kd_logits", 0.3)]):
        write_record(exp / "runs" / method, training_record(method, method, 0, 100.0 + i, 3, wer))
    report = build_report(str(exp), plots=True)
    assert {p.name for p in report.files} >= {"report.md", "report.html", "report.json"}
    assert all(isinstance(p, Remote) and p.parent == exp / "report" and p.is_file() for p in report.files)
    assert f"{exp}/report/report.md" in report.summary
    data = json.loads((exp / "report" / "report.json").read_text())
    assert {g["group"] for g in data["groups"]} == {"scratch", "kd_logits"}
    assert "![" in (exp / "report" / "report.md").read_text()  # the plots went up beside it

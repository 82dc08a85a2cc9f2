"""A writer SIGKILLed at any moment leaves the previous complete state or the new one, never half a
file or half a folder: run records, soft-target shards, the data cache and exported models (every
local folder goes through storage.staged_folder, every file through write_atomic or write_parquet)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, minimal_config

PADDING = 5_000_000  # bytes per version: a write takes long enough to be caught in the middle


def kill_while_looping(code: str, *args: str, after: float) -> None:
    """Run `code` (a loop that rewrites something forever, printing "ready" after its first
    complete version) in a new process and SIGKILL it `after` seconds past "ready"."""
    writer = subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO
    )
    line = writer.stdout.readline().strip()
    if line != "ready":
        writer.kill()
        pytest.fail(f"the writer did not start: {line} {writer.stderr.read()[-2000:]}")
    time.sleep(after)
    writer.send_signal(signal.SIGKILL)
    writer.wait(timeout=30)


@pytest.mark.parametrize("after", [0.1, 0.5])
def test_a_record_writer_killed_mid_write_leaves_a_complete_record(tmp_path, after):
    folder = tmp_path / "runs" / "x"
    code = (
        "import sys; from pathlib import Path; from ray_t2t.ledger import write_record\n"
        "folder = Path(sys.argv[1])\n"
        "for version in range(10**9):\n"
        f"    write_record(folder, {{'version': version, 'padding': 'x' * {PADDING}}})\n"
        "    if version == 0: print('ready', flush=True)\n"
    )
    kill_while_looping(code, str(folder), after=after)
    record = json.loads((folder / "record.json").read_text())
    assert record["version"] >= 0 and len(record["padding"]) == PADDING


@pytest.mark.parametrize("after", [0.1, 0.3, 0.7])
def test_a_folder_replaced_again_and_again_is_whole_after_a_kill(tmp_path, after):
    """What an export, a checkpoint and the data cache do: fill a staging folder, then swap it in."""
    target = tmp_path / "model"
    code = (
        "import sys; from pathlib import Path; from ray_t2t.storage import staged_folder\n"
        "target = Path(sys.argv[1])\n"
        "for version in range(10**9):\n"
        "    with staged_folder(target) as folder:\n"
        "        (folder / 'config.json').write_text(str(version))\n"
        f"        (folder / 'weights.bin').write_bytes(bytes([version % 256]) * {PADDING})\n"
        "        (folder / 'done.txt').write_text(str(version))\n"
        "    if version == 0: print('ready', flush=True)\n"
    )
    kill_while_looping(code, str(target), after=after)
    version = int((target / "config.json").read_text())
    assert (target / "done.txt").read_text() == str(version)
    assert (target / "weights.bin").read_bytes() == bytes([version % 256]) * PADDING
    # what a kill can leave is a hidden staging folder beside it, never inside it
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "done.txt", "weights.bin"]


def test_a_folder_is_replaced_whole_without_an_atomic_exchange(tmp_path, monkeypatch):
    """Where renameat2 is missing, the previous folder is moved aside, then removed."""
    from ray_t2t import storage

    monkeypatch.setattr(storage, "_exchange", lambda first, second: False)
    target = tmp_path / "model"
    for version in range(3):
        with storage.staged_folder(target) as folder:
            (folder / "v").write_text(str(version))
    assert (target / "v").read_text() == "2" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_failed_block_keeps_the_previous_folder(tmp_path):
    from ray_t2t.storage import staged_folder

    target = tmp_path / "model"
    with staged_folder(target) as folder:
        (folder / "v").write_text("1")
    with pytest.raises(RuntimeError), staged_folder(target) as folder:
        (folder / "v").write_text("2")
        raise RuntimeError("the export failed")
    assert (target / "v").read_text() == "1" and [p.name for p in tmp_path.iterdir()] == ["model"]


def test_a_soft_target_shard_killed_mid_write_is_whole(tmp_path):
    import pyarrow.parquet as pq

    shard = tmp_path / "shard-00000.parquet"
    code = (
        "import sys; from pathlib import Path; import pyarrow as pa; from ray_t2t.storage import write_parquet\n"
        "path = Path(sys.argv[1])\n"
        "for version in range(10**9):\n"
        "    table = pa.table({'example_id': pa.array(range(200_000)), 'version': pa.array([version] * 200_000)})\n"
        "    write_parquet(table, path)\n"
        "    if version == 0: print('ready', flush=True)\n"
    )
    kill_while_looping(code, str(shard), after=0.3)
    table = pq.read_table(shard)
    assert table.num_rows == 200_000 and len(set(table.column("version").to_pylist())) == 1


def test_the_data_cache_rebuilt_and_killed_is_whole_and_reused(tmp_path):
    """`ray-t2t data --rebuild` killed while it replaces the cache: the cache left is complete and
    equal to a fresh build, and the next `data` reuses it."""
    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import PreparedData, prepare_data

    config = tmp_path / "experiment.yaml"
    config.write_text(yaml.safe_dump(minimal_config(tmp_path)))
    code = (
        "import sys; from ray_t2t.config.experiment import load_config; from ray_t2t.data import prepare_data\n"
        "cfg = load_config(sys.argv[1])\n"
        "for version in range(10**9):\n"
        "    prepare_data(cfg, rebuild=True)\n"
        "    if version == 0: print('ready', flush=True)\n"
    )
    kill_while_looping(code, str(config), after=1.0)
    cfg = load_config(str(config))
    again = prepare_data(cfg)
    assert again.reused
    fresh = prepare_data(cfg.model_copy(update={"run": cfg.run.model_copy(update={"name": "fresh"})}))
    left = PreparedData.open(str(again.path))
    for split in ("train", "validation", "test"):
        assert left.read_split(split).equals(fresh.read_split(split))
    assert left.summary["splits"] == fresh.summary["splits"]
    assert sorted(p.name for p in Path(again.path).iterdir()) == sorted(p.name for p in Path(fresh.path).iterdir())

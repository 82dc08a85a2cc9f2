"""Hostile and malformed input ends quickly in exit 2 with a short message naming the file, key or
line, and writes nothing: regression tests for each case found, and fuzz tests of the config reader
and the override parser (hypothesis, with a time budget that keeps CI fast)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ray_t2t.cli import main
from ray_t2t.config.experiment import load_config
from ray_t2t.config.overrides import apply_override
from ray_t2t.config.reading import MAX_DEPTH, MAX_VALUES
from ray_t2t.errors import ConfigError, UserError
from ray_t2t.storage import child

from conftest import REPO, minimal_config

QUICKSTART = str(REPO / "configs/quickstart.yaml")
MAX_MESSAGE = 2000  # characters of an error message, whatever the input


def refused(capsys, argv: list[str], *expected: str, seconds: float = 10.0) -> str:
    """Run the CLI in process: exit 2 within `seconds`, a bounded message holding every `expected`."""
    started = time.perf_counter()
    assert main(argv) == 2
    assert time.perf_counter() - started < seconds
    err = capsys.readouterr().err
    assert len(err) < MAX_MESSAGE, f"a message of {len(err):,} characters"
    for text in expected:
        assert text in err, err
    return err


def write(folder: Path, text: str | bytes, name: str = "experiment.yaml") -> str:
    path = folder / name
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return str(path)


def valid_raw(tmp_path: Path) -> dict:
    return minimal_config(tmp_path, methods=[{"name": "scratch"}])


# --------------------------------------------------------------------------- names that are names


@pytest.mark.parametrize("label", ["/some/other/folder", "../escape", "a/b", "..", "a\x00b", "<script>", "x" * 65, ""])
def test_a_label_that_is_not_a_folder_name_is_refused(tmp_path, capsys, label):
    raw = valid_raw(tmp_path)
    raw["methods"][0]["label"] = label
    refused(capsys, ["validate", write(tmp_path, yaml.safe_dump(raw))], "methods.0.scratch.label")
    assert not (tmp_path / "runs").exists()


def test_the_override_that_escaped_is_refused(capsys):
    refused(capsys, ["validate", QUICKSTART, "methods.2.label=/some/other/folder"], "methods.2.scratch.label")


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a\\b", "", "a\x00", "tab\there", "x" * 256])
def test_child_keeps_every_path_inside_its_root(tmp_path, name):
    with pytest.raises(UserError, match="cannot name a folder under"):
        child(tmp_path, "runs", name)
    assert child(tmp_path, "runs", "ok-name.1") == tmp_path / "runs" / "ok-name.1"


def test_a_teacher_folder_named_dot_dot_cannot_escape(tmp_path):
    """A teacher given as name_or_path '..' has the folder name '..': refused, not used as soft_targets/.."""
    from ray_t2t.soft_targets import produce_soft_targets

    raw = minimal_config(tmp_path, models={"student": {"preset": "t5-tiny"}, "teacher": {"name_or_path": ".."}})
    cfg = load_config(write(tmp_path, yaml.safe_dump(raw)))
    with pytest.raises(UserError, match="'..' cannot name a folder"):
        produce_soft_targets(cfg, log=lambda message: None)
    assert not (tmp_path / "soft_targets").exists()


# --------------------------------------------------------------------------------- resource bombs


def alias_bomb(depth: int = 9) -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    previous = "a"
    for name in "bcdefghijk"[: depth - 1]:
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 9) + "]")
        previous = name
    return "\n".join(lines)


@pytest.mark.parametrize("where", ["top", "tune.space"])
def test_an_alias_bomb_is_refused_at_once(tmp_path, capsys, where):
    bomb = alias_bomb()
    if where == "top":
        text = bomb + "\nrun: {name: x}\n"
    else:
        text = "run: {name: x}\nmodels: {student: {preset: t5-tiny}}\ntune:\n  space:\n    x:\n" + "\n".join(
            "      " + line for line in bomb.splitlines()
        )
    refused(capsys, ["validate", write(tmp_path, text)], f"expands to more than {MAX_VALUES:,} values", seconds=5)


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path, capsys):
    refused(capsys, ["validate", write(tmp_path, "a: &a [*a]\n")], "expands to more than")


def test_anchors_within_bounds_still_work(tmp_path):
    text = f"run: {{name: x, storage_path: '{tmp_path}'}}\nmodels: {{student: &s {{preset: t5-tiny}}, base: *s}}\n"
    cfg = load_config(write(tmp_path, text))
    assert cfg.models.base == cfg.models.student and cfg.models.base.preset == "t5-tiny"


def test_deep_nesting_is_refused(tmp_path, capsys):
    refused(capsys, ["validate", write(tmp_path, "run: " + "[" * 1200 + "]" * 1200 + "\n")], "nested more than")
    refused(capsys, ["validate", write(tmp_path, "run: " + "{a: " * 200 + "1" + "}" * 200 + "\n")], "nested more than")
    assert MAX_DEPTH >= 8  # a real config nests 4 deep


def test_a_large_file_and_a_device_are_refused_after_reading_the_limit(tmp_path, capsys):
    big = write(tmp_path, "run: {name: " + "x" * 5_000_000 + "}\n")
    refused(capsys, ["validate", big], "larger than 1,048,576 bytes", "RAY_T2T_MAX_CONFIG_BYTES")
    refused(capsys, ["validate", "/dev/zero"], "/dev/zero: larger than")


def test_the_size_limit_can_be_raised(tmp_path, monkeypatch):
    raw = valid_raw(tmp_path)
    path = write(tmp_path, yaml.safe_dump(raw) + "#" + "x" * 2_000_000 + "\n")
    with pytest.raises(ConfigError, match="larger than"):
        load_config(path)
    monkeypatch.setenv("RAY_T2T_MAX_CONFIG_BYTES", str(4 << 20))
    assert load_config(path).run.name == "test"


def test_a_huge_value_is_not_echoed_in_full(tmp_path, capsys):
    raw = valid_raw(tmp_path)
    raw["training"] = {"learning_rate": "x" * 500_000}
    err = refused(
        capsys, ["validate", write(tmp_path, yaml.safe_dump(raw))], "training.learning_rate", "more characters"
    )
    assert len(err) < MAX_MESSAGE


def test_a_map_with_many_keys_is_refused_quickly(tmp_path, capsys):
    text = "run: {name: x}\ndata:\n" + "".join(f"  k{i}: {i}\n" for i in range(60_000))
    refused(capsys, ["validate", write(tmp_path, text)], "expands to more than", seconds=15)


def test_many_unknown_keys_are_listed_briefly(tmp_path, capsys):
    raw = valid_raw(tmp_path)
    raw["data"] = {f"key{i}": i for i in range(5000)}
    refused(capsys, ["validate", write(tmp_path, yaml.safe_dump(raw))], "unknown key", "and 4,990 more")


def test_a_long_override_is_refused(capsys):
    refused(capsys, ["validate", QUICKSTART, "run.name=" + "y" * 100_000], "longer than 65,536 characters")


# ------------------------------------------------------------------------- tracebacks that were


def test_a_config_that_is_not_utf8_names_its_line(tmp_path, capsys):
    refused(capsys, ["validate", write(tmp_path, b"run:\n  name: caf\xe9\n")], "line 2, column 12: not UTF-8")


def test_a_storage_path_with_control_characters_is_refused(tmp_path, capsys):
    refused(capsys, ["validate", QUICKSTART, f"run.storage_path={tmp_path}/a\x00b"], "run.storage_path")
    refused(capsys, ["validate", QUICKSTART, f"run.storage_path={tmp_path}/a\x01b"], "control characters")


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("s3://bucket/x?no_such_option=1", "unknown option 'no_such_option' for s3://"),
        ("s3://bucket/x?connect_timeout=.nan", "option connect_timeout='.nan': must be seconds"),
        ("s3://bucket/x?max_attempts=1000", "option max_attempts='1000': must be a whole number from 1 to 20"),
        ("s3://bucket/x?region=a&region=b", "option 'region' is given twice"),
        ("s3://bucket/x?region", "not a query of name=value options"),
        ("gs://bucket/x?region=eu", "unknown option 'region' for gs://"),
        ("abfs://container@account/x", "unknown storage scheme abfs://"),
        ("hdfs://namenode:8020/x", "unknown storage scheme hdfs://"),
    ],
)
def test_object_store_uris_are_checked_by_validate(tmp_path, capsys, monkeypatch, uri, expected):
    monkeypatch.chdir(tmp_path)
    refused(capsys, ["validate", QUICKSTART, f"run.storage_path={uri}"], "run.storage_path", expected)
    refused(capsys, ["data", QUICKSTART, f"run.storage_path={uri}"], "run.storage_path", expected)
    assert list(tmp_path.iterdir()) == []


def test_credentials_in_a_uri_are_refused_and_not_echoed(capsys):
    err = refused(capsys, ["validate", QUICKSTART, "run.storage_path=s3://AKIAKEY:s3cr3t@bucket/x"], "no credentials")
    assert "s3cr3t" not in err and "AKIAKEY" not in err


# -------------------------------------------------------------------------- accepted although wrong


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("training.learning_rate=.inf", "training.learning_rate"),
        ("training.learning_rate=.nan", "training.learning_rate"),
        ("cost.cpu_hour=.inf", "cost.cpu_hour"),
        ("deepspeed.gradient_clipping=.nan", "deepspeed.gradient_clipping"),
        ("eval.target={metric: wer, op: '<=', value: .nan}", "eval.target.value"),
        ("training.max_steps=1000000000000", "training.max_steps"),
        ("training.max_steps=1.0e+30", "training.max_steps"),
        ("training.max_steps=1e30", "training.max_steps"),
        ("seed=18446744073709551617", "seed"),
        ("tune.seeds=[0, 4294967296]", "tune.seeds.1"),
    ],
)
def test_numbers_must_be_finite_and_sane(capsys, override, field):
    refused(capsys, ["validate", QUICKSTART, override], field)


def test_duplicate_keys_are_refused(tmp_path, capsys):
    text = "run: {name: x}\nmodels: {student: {preset: t5-tiny}}\nrun: {name: y}\n"
    refused(capsys, ["validate", write(tmp_path, text)], "line 3: key 'run' is given twice", "first on line 1")


# --------------------------------------------------------------------------------------- fuzzing

FUZZ = settings(  # the same examples on every run (CI stays deterministic), no database left behind
    max_examples=150,
    deadline=2000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@FUZZ
@given(st.binary(max_size=400))
def test_any_bytes_as_a_config_end_in_a_config_or_a_config_error(tmp_path, data):
    path = tmp_path / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except ConfigError as err:
        assert len(str(err)) < MAX_MESSAGE


yaml_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(
    section=st.sampled_from(["run", "data", "models", "methods", "training", "eval", "tune", "cost", "scaling"]),
    value=yaml_like,
)
def test_any_value_in_any_section_ends_in_a_config_or_a_config_error(tmp_path, section, value):
    raw = valid_raw(tmp_path)
    raw[section] = value
    path = tmp_path / "fuzz.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        load_config(path)
    except ConfigError as err:
        assert len(str(err)) < MAX_MESSAGE


@FUZZ
@given(st.text(max_size=200))
def test_any_override_ends_in_a_change_or_a_config_error(tmp_path, override):
    raw = valid_raw(tmp_path)
    try:
        apply_override(raw, override)
    except ConfigError as err:
        assert len(str(err)) < MAX_MESSAGE


# ---------------------------------------------------------------------------- validate means valid


def test_validate_checks_the_sweep_space(capsys):
    refused(capsys, ["validate", QUICKSTART, "tune.space={nope: {alpha: [0.1]}}"], "tune.space.nope: not a method")
    refused(capsys, ["validate", QUICKSTART, "tune.space={kd_logits: {alpah: [0.1]}}"], "'alpah' is not a parameter")
    refused(capsys, ["validate", QUICKSTART, "tune.space={kd_logits: {alpha: [0.1, 7]}}"], "kd_logits.alpha")
    refused(
        capsys,
        ["validate", QUICKSTART, "tune.search=random", "tune.space={kd_logits: {alpha: {uniform: [a, 1]}}}"],
        "uniform takes [low, high], two finite numbers",
    )
    assert main(["validate", QUICKSTART, "tune.space={kd_logits: {alpha: [0.1, 0.9]}}"]) == 0


def test_validate_checks_local_model_folders(tmp_path, capsys):
    refused(
        capsys,
        ["validate", QUICKSTART, f"models.base={{name_or_path: {tmp_path}/missing}}"],
        "models.base.name_or_path: no folder",
    )
    assert main(["validate", QUICKSTART, "models.base={name_or_path: google-t5/t5-small}"]) == 0  # a Hub name


# --------------------------------------------------------------------------------- nothing written


def test_a_refused_data_command_leaves_no_folder(tmp_path, capsys):
    raw = minimal_config(tmp_path / "store", data={"task": "files", "files": {"train": str(tmp_path / "none.jsonl")}})
    refused(capsys, ["data", write(tmp_path, yaml.safe_dump(raw))], "file not found")
    assert not (tmp_path / "store").exists()


def test_a_refused_run_leaves_no_folder_and_no_log(tmp_path):
    """`train` captures its output in a log in the run folder; refused before any work, it removes both."""
    import subprocess
    import sys

    raw = minimal_config(tmp_path / "store", methods=[{"name": "scratch"}])
    done = subprocess.run(
        [sys.executable, "-m", "ray_t2t.cli", "train", write(tmp_path, yaml.safe_dump(raw)), "method=nope"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert done.returncode == 2 and "ray-t2t train: error:" in done.stderr and "nope" in done.stderr, done.stderr
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        (
            "bad.jsonl",
            b'{"source": "a", "target": "b"}\n{"source": "caf\xe9", "target": "b"}\n',
            "bad.jsonl line 2: not UTF-8 (byte 0xe9 at column 16)",
        ),
        ("deep.jsonl", b'{"source": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", "deep.jsonl line 1:"),
        ("wide.csv", b"source,target\n" + b"x" * 200_000 + b",y\n", "wide.csv line"),
        ("broken.parquet", None, "not a readable parquet file"),
    ],
)
def test_malformed_data_files_end_in_a_message_naming_the_file(tmp_path, capsys, name, content, expected):
    path = tmp_path / name
    if content is None:  # a real parquet file with its data pages overwritten
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"source": ["a"] * 1000, "target": ["b"] * 1000}), path)
        data = bytearray(path.read_bytes())
        data[100:600] = b"\xff" * 500
        path.write_bytes(bytes(data))
    else:
        path.write_bytes(content)
    raw = minimal_config(tmp_path / "store", data={"task": "files", "files": {"train": str(path)}})
    refused(capsys, ["data", write(tmp_path, yaml.safe_dump(raw))], expected)


def test_num2words_pool_is_bounded(capsys):
    refused(
        capsys,
        ["validate", QUICKSTART, "data.task=num2words", "data.num2words.max_number=100000000"],
        "data.num2words.max_number",
    )


# --------------------------------------------------------------------------------- run records


def _paths(value, prefix=()):
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*prefix, key)
            yield from _paths(item, (*prefix, key))
    elif isinstance(value, list) and value:
        yield (*prefix, 0)
        yield from _paths(value[0], (*prefix, 0))


def _base_record():
    from test_report import training_record

    return training_record("scratch", "scratch", 0, 500.0, 300, 0.4)


JSON_VALUES = [None, True, "x", -1, 0, 1.5, [], {}, [1, "a"], {"a": 1}, "1e999", 10**30]


@FUZZ
@given(where=st.sampled_from(list(_paths(_base_record()))), value=st.sampled_from(JSON_VALUES))
def test_a_run_record_with_any_field_changed_reports_or_names_the_record(tmp_path_factory, where, value):
    """A record with any one field of any JSON type ends in a report or in UserError naming it."""
    import copy

    from ray_t2t.ledger import write_record
    from ray_t2t.reporting import build_report

    record = _base_record()
    node = record
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    folder = tmp_path_factory.mktemp("records")
    write_record(folder / "runs" / "scratch", record)
    write_record(folder / "runs" / "other", dict(copy.deepcopy(_base_record()), seed=1))
    try:
        build_report(folder, plots=False)
    except UserError as err:
        assert "record.json" in str(err) and len(str(err)) < MAX_MESSAGE


# ------------------------------------------------------------------------- object stores fail fast


@pytest.mark.parametrize("command", ["data", "report"])
def test_an_unreachable_bucket_fails_within_seconds(tmp_path, command):
    """gs:// without credentials: the client's retries end after storage.DEFAULTS' retry limit (they
    ran for minutes), and the message says what to check."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "GCE_", "CLOUDSDK_"))}
    env["GCE_METADATA_HOST"] = "127.0.0.1:9"  # no metadata server to ask for a token
    argv = (
        [command, QUICKSTART, "run.storage_path=gs://ray-t2t-no-such-bucket/x"]
        if command == "data"
        else [command, "gs://ray-t2t-no-such-bucket/x/quickstart"]
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "ray_t2t.cli", *argv], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    assert time.perf_counter() - started < 30
    assert done.returncode == 2, done.stderr[-2000:]
    assert "cannot reach gs://ray-t2t-no-such-bucket/x/quickstart" in done.stderr and "credentials" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def silent_endpoint():
    """host:port of a server that accepts connections and never answers: an object store that hangs."""
    import socket
    import threading

    server = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()) for _ in iter(int, 1)], daemon=True).start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for connection, _ in accepted:
        connection.close()


def test_an_s3_endpoint_that_never_answers_fails_within_15_seconds(tmp_path, capsys, monkeypatch, silent_endpoint):
    """The S3 client's default limits (storage.DEFAULTS: 3 attempts, none of them longer than 3 s
    without a byte) end the check before any work; the URI can lower them."""
    from ray_t2t import storage

    monkeypatch.setattr(storage, "_filesystems", {})
    monkeypatch.chdir(tmp_path)
    for key, value in (("AWS_ACCESS_KEY_ID", "x"), ("AWS_SECRET_ACCESS_KEY", "x"), ("AWS_EC2_METADATA_DISABLED", "1")):
        monkeypatch.setenv(key, value)
    uri = f"s3://bucket/x?endpoint_override={silent_endpoint}&scheme=http&region=us-east-1"
    refused(
        capsys, ["data", QUICKSTART, f"run.storage_path={uri}"], "cannot reach s3://bucket/x", "credentials", seconds=15
    )
    started = time.perf_counter()
    refused(capsys, ["data", QUICKSTART, f"run.storage_path={uri}&request_timeout=1&max_attempts=1"], "Timeout")
    assert time.perf_counter() - started < 3
    assert list(tmp_path.iterdir()) == []


def test_the_s3_client_carries_the_limits(monkeypatch):
    from ray_t2t import storage

    monkeypatch.setattr(storage, "_filesystems", {})
    settings = storage.location("s3://bucket/x?region=us-east-1").fs.__reduce__()[1][0]
    assert (settings["connect_timeout"], settings["request_timeout"]) == (2.0, 3.0)
    settings = storage.location("s3://bucket/x?region=us-east-1&connect_timeout=7&request_timeout=9").fs.__reduce__()
    assert (settings[1][0]["connect_timeout"], settings[1][0]["request_timeout"]) == (7.0, 9.0)


@FUZZ
@given(fmt=st.sampled_from(["jsonl", "csv", "parquet"]), content=st.binary(max_size=600))
def test_any_bytes_as_a_data_file_end_in_examples_or_a_data_error(tmp_path, fmt, content):
    from ray_t2t.config.sections import DataSection
    from ray_t2t.data import _read_file
    from ray_t2t.errors import DataError

    path = tmp_path / f"fuzz.{fmt}"
    path.write_bytes(content)
    data = DataSection.model_validate({"task": "files", "files": {"train": str(path)}})
    try:
        examples = _read_file(str(path), "train", data)
    except DataError as err:
        assert str(path) in str(err) and len(str(err)) < MAX_MESSAGE
    else:
        assert all(isinstance(e.source, str) and isinstance(e.target, str) for e in examples)


@FUZZ
@given(rows=st.lists(st.dictionaries(st.sampled_from(["source", "target", "x"]), yaml_like, max_size=3), max_size=5))
def test_any_json_lines_end_in_examples_or_a_data_error(tmp_path, rows):
    import json

    from ray_t2t.config.sections import DataSection
    from ray_t2t.data import _read_file
    from ray_t2t.errors import DataError

    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    data = DataSection.model_validate({"task": "files", "files": {"train": str(path)}})
    try:
        _read_file(str(path), "train", data)
    except DataError as err:
        assert str(path) in str(err) and len(str(err)) < MAX_MESSAGE


# ------------------------------------------------------------------------- nothing half-written


def _experiment_records() -> dict[str, dict]:
    from test_report import inference_record, training_record

    return {
        "sweep/kd_logits_seed0": training_record(
            "kd_logits",
            "kd_logits",
            0,
            800.0,
            400,
            0.40,
            group="kd_logits",
            params={"teacher_source": "offline", "alpha": 0.5},
        ),
        "sweep/kd_logits_seed1": training_record(
            "kd_logits",
            "kd_logits",
            1,
            900.0,
            450,
            0.41,
            group="kd_logits",
            params={"teacher_source": "offline", "alpha": 0.5},
        ),
        "sweep/scratch_seed0": training_record("scratch", "scratch", 0, 1000.0, 600, 0.45, group="scratch"),
        "sweep/scratch_seed1": training_record("scratch", "scratch", 1, 1100.0, 650, 0.46, group="scratch"),
        "runs/teacher": training_record(
            "teacher", "scratch", 0, 3000.0, 300, 0.30, model="teacher", total_params=2_160_000, trainable=2_160_000
        ),
        "soft_targets/teacher": inference_record(),
        "inference/student-arch.json": {
            "kind": "inference_speed",
            "status": "finished",
            "architecture_key": "student-arch",
            "settings": {"examples": 8, "output_tokens": 4, "repeats": 3},
            "device": {"description": "1 CPU thread(s) on cores 0"},
            "results": [
                {"batch_size": 1, "examples_per_s": {"median": 50.0}, "tokens_per_s": {"median": 900.0}},
                {"batch_size": 8, "examples_per_s": {"median": 300.0}, "tokens_per_s": {"median": 5400.0}},
            ],
        },
    }


_EXPERIMENT = _experiment_records()
_EXPERIMENT_PATHS = [(name, where) for name, record in _EXPERIMENT.items() for where in _paths(record)]


def _holds(node: object, key: str | int) -> bool:
    return (isinstance(node, dict) and key in node) or (
        isinstance(node, list) and isinstance(key, int) and key < len(node)
    )


def _report_with_changes(folder: Path, changes: list) -> None:
    """Write _EXPERIMENT with each (record and field, value) change applied (a change inside a field an
    earlier one replaced is skipped); the report builds, or a UserError names a record."""
    import copy
    import json

    from ray_t2t.ledger import write_record
    from ray_t2t.reporting import build_report

    records = copy.deepcopy(_EXPERIMENT)
    for (name, where), value in changes:
        node = records[name]
        for key in where[:-1]:
            node = node[key] if _holds(node, key) else None
        if _holds(node, where[-1]):
            node[where[-1]] = value
    for path, record in records.items():
        if path.endswith(".json"):
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(json.dumps(record))
        else:
            write_record(folder / path, record)
    try:
        build_report(folder, plots=False)
    except UserError as err:
        assert "record" in str(err) and len(str(err)) < MAX_MESSAGE


@FUZZ
@given(target=st.sampled_from(_EXPERIMENT_PATHS), value=st.sampled_from(JSON_VALUES))
def test_an_experiment_with_any_field_of_any_record_changed_reports_or_names_a_record(tmp_path_factory, target, value):
    """Any one field of a student's, the teacher's, the soft-target inference or the inference-speed
    record set to any JSON type: the report (charges, verdict, break-even) builds, or a UserError names
    a record. (Every one of these cases was run once: 603 fields x 12 values.)"""
    _report_with_changes(tmp_path_factory.mktemp("experiment"), [(target, value)])


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(_EXPERIMENT_PATHS), st.sampled_from(JSON_VALUES)), min_size=2, max_size=5))
def test_an_experiment_with_several_fields_changed_reports_or_names_a_record(tmp_path_factory, changes):
    _report_with_changes(tmp_path_factory.mktemp("experiment"), changes)

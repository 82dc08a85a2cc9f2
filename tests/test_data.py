"""Tasks, seeded splits, the tokenized cache, and bad input that must fail cleanly."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ray_t2t.config.experiment import validate_config
from ray_t2t.config.sections import DataSection
from ray_t2t.data import TASKS, load_g2p_cmudict, make_splits, prepare_data
from ray_t2t.errors import DataError

from conftest import minimal_config


@pytest.fixture(scope="module")
def cmudict_examples():
    return load_g2p_cmudict(DataSection())["train"]


def sizes(train=300, validation=20, test=20, seed=0, **extra):
    return DataSection(split_sizes={"train": train, "validation": validation, "test": test}, split_seed=seed, **extra)


def words(splits):
    return {name: [e.source for e in examples] for name, examples in splits.items()}


def test_task_registry_matches_the_config_choices():
    from ray_t2t.config.sections import BUILTIN_TASKS

    assert set(TASKS) == set(BUILTIN_TASKS)  # no plug-in is installed in the test environment


def test_cmudict_examples(cmudict_examples):
    assert len(cmudict_examples) > 120_000
    by_word = {e.source: e for e in cmudict_examples}
    assert by_word["hello"].references == ("HH AH L OW", "HH EH L OW")  # stress stripped, both listed
    assert by_word["hello"].target == "HH AH L OW"
    assert "a.m." not in by_word and "ad-hoc" not in by_word and "o'brien" in by_word
    with_stress = {e.source: e for e in load_g2p_cmudict(DataSection(cmudict={"strip_stress": False}))["train"]}
    assert with_stress["hello"].target == "HH AH0 L OW1"
    assert sum(len(e.references) > 1 for e in cmudict_examples) > 5000


def test_split_is_seeded_disjoint_and_stable_under_train_size(cmudict_examples):
    loaded = {"train": cmudict_examples}
    first, again = words(make_splits(loaded, sizes())), words(make_splits(loaded, sizes()))
    assert first == again
    assert [len(first[s]) for s in ("train", "validation", "test")] == [300, 20, 20]
    assert not set(first["train"]) & set(first["test"]) and not set(first["train"]) & set(first["validation"])
    bigger_train = words(make_splits(loaded, sizes(train=5000)))
    assert bigger_train["test"] == first["test"] and bigger_train["validation"] == first["validation"]
    assert words(make_splits(loaded, sizes(seed=1)))["test"] != first["test"]
    everything = words(make_splits(loaded, sizes(train=None)))
    assert len(everything["train"]) == len(cmudict_examples) - 40


def test_split_sizes_larger_than_the_data_are_refused(cmudict_examples):
    loaded = {"train": cmudict_examples[:100]}
    with pytest.raises(DataError, match=r"data.split_sizes.train=300 but only 60 examples are left"):
        make_splits(loaded, sizes())
    with pytest.raises(DataError, match=r"data.split_sizes.test=200 but only 100 training examples"):
        make_splits(loaded, sizes(test=200))


def test_prepare_is_deterministic_and_reuses_the_cache(tmp_path):
    cfg = validate_config(minimal_config(tmp_path))
    built = prepare_data(cfg)
    assert not built.reused
    reused = prepare_data(cfg)
    assert reused.reused and reused.path == built.path and reused.summary == built.summary
    train = built.read_split("train")
    assert train.num_rows == 300 and train.column_names[:5] == [
        "source",
        "target",
        "references",
        "source_ids",
        "target_ids",
    ]
    rebuilt = prepare_data(cfg, rebuild=True)
    assert not rebuilt.reused and rebuilt.read_split("train").equals(train)
    tok = built.tokenizer()
    row = train.slice(0, 1).to_pylist()[0]
    assert tok.decode_targets([row["target_ids"]]) == [row["target"]]
    assert [p.name for p in (tmp_path / "runs/test/data").iterdir()] == [built.path.name]  # no staging left
    changed = prepare_data(
        validate_config(minimal_config(tmp_path, data={"split_sizes": {"train": 100, "validation": 20, "test": 20}}))
    )
    assert changed.path != built.path


def write_rows(path, rows, fmt):
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    elif fmt == "csv":
        cols = list(rows[0])
        path.write_text(",".join(cols) + "\n" + "".join(",".join(str(r[c]) for c in cols) + "\n" for r in rows))
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


NUMBERS = [{"number": str(i), "words": f"w{i} x{i % 7}"} for i in range(60)]


def files_config(tmp_path, train, **files):
    data = {
        "task": "files",
        "files": {"train": str(train), **{k: str(v) for k, v in files.items()}},
        "source_column": "number",
        "target_column": "words",
        "split_sizes": {"validation": 5, "test": 5},
    }
    return validate_config(minimal_config(tmp_path, data=data))


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_local_files_with_carved_and_given_splits(tmp_path, fmt):
    train = write_rows(tmp_path / f"train.{fmt}", NUMBERS, fmt)
    carved = prepare_data(files_config(tmp_path, train))
    assert {s: carved.summary["splits"][s]["examples"] for s in ("train", "validation", "test")} == {
        "train": 50,
        "validation": 5,
        "test": 5,
    }
    test = write_rows(tmp_path / f"test.{fmt}", NUMBERS[:3], fmt)
    given = prepare_data(files_config(tmp_path, train, test=test))
    assert given.read_split("test").column("source").to_pylist() == ["0", "1", "2"]
    assert given.summary["splits"]["train"]["examples"] == 55


def test_huggingface_dataset_from_local_data_files(tmp_path):
    folder = tmp_path / "my_dataset"
    folder.mkdir()
    write_rows(folder / "train.jsonl", NUMBERS, "jsonl")
    write_rows(folder / "test.jsonl", NUMBERS[:4], "jsonl")
    data = {
        "task": "huggingface",
        "huggingface": {"path": str(folder)},
        "source_column": "number",
        "target_column": "words",
        "split_sizes": {"validation": 6, "test": 10},
    }
    prepared = prepare_data(validate_config(minimal_config(tmp_path, data=data)))
    counts = {s: prepared.summary["splits"][s]["examples"] for s in ("train", "validation", "test")}
    assert counts == {"train": 54, "validation": 6, "test": 4}  # test given, validation carved


def test_huggingface_dataset_saved_to_disk_with_renamed_splits(tmp_path):
    import datasets

    dd = datasets.DatasetDict(
        {
            "training": datasets.Dataset.from_list(NUMBERS),
            "dev": datasets.Dataset.from_list(NUMBERS[:5]),
        }
    )
    dd.save_to_disk(str(tmp_path / "saved"))
    data = {
        "task": "huggingface",
        "huggingface": {
            "path": str(tmp_path / "saved"),
            "train_split": "training",
            "validation_split": "dev",
            "test_split": None,
        },
        "source_column": "number",
        "target_column": "words",
        "split_sizes": {"test": 10},
    }
    prepared = prepare_data(validate_config(minimal_config(tmp_path, data=data)))
    assert prepared.read_split("validation").column("source").to_pylist() == ["0", "1", "2", "3", "4"]
    assert prepared.summary["splits"]["train"]["examples"] == 50
    bad = dict(data, huggingface=dict(data["huggingface"], train_split="train"))
    with pytest.raises(DataError, match="no split 'train' in .*saved. Splits: training, dev"):
        prepare_data(validate_config(minimal_config(tmp_path, data=bad)))


def test_unreachable_huggingface_dataset_is_a_clear_error(tmp_path):
    data = {"task": "huggingface", "huggingface": {"path": str(tmp_path / "does_not_exist")}}
    with pytest.raises(DataError, match=r"data.huggingface.path=.*does_not_exist.*: cannot load the dataset"):
        prepare_data(validate_config(minimal_config(tmp_path, data=data)))
    assert not (tmp_path / "runs").exists()


def _bad_input_cases(tmp_path):
    ok = NUMBERS[:20]
    return {
        "missing file": (tmp_path / "nope.jsonl", r"data.files.train: file not found: .*nope.jsonl"),
        "missing column": (
            write_rows(tmp_path / "cols.jsonl", [{"number": "1", "text": "one"}] * 20, "jsonl"),
            r"cols.jsonl line 1: no column 'words' \(data.target_column\). Columns found: number, text",
        ),
        "missing csv column": (
            write_rows(tmp_path / "cols.csv", [{"number": "1", "text": "one"}] * 20, "csv"),
            r"cols.csv: no column 'words' \(data.target_column\). Columns found: number, text",
        ),
        "empty file": (
            write_rows(tmp_path / "empty.jsonl", [], "jsonl"),
            r"data.files.train: .*empty.jsonl has no rows",
        ),
        "number value": (
            write_rows(tmp_path / "num.jsonl", ok[:6] + [{"number": 7, "words": "seven"}] + ok, "jsonl"),
            r"num.jsonl line 7: column 'number' is a int \(7\), expected text",
        ),
        "null value": (
            write_rows(tmp_path / "null.parquet", ok[:2] + [{"number": "3", "words": None}] + ok, "parquet"),
            r"null.parquet row 3: column 'words' is missing \(null\), expected text",
        ),
        "blank value": (
            write_rows(tmp_path / "blank.jsonl", ok[:1] + [{"number": " ", "words": "x"}] + ok, "jsonl"),
            r"blank.jsonl line 2: column 'number' is empty",
        ),
        "bad json": (tmp_path / "bad.jsonl", r"bad.jsonl line 2: not valid JSON"),
        "unknown extension": (write_rows(tmp_path / "data.txt", ok, "jsonl"), r"cannot tell the format of .*data.txt"),
        "not parquet": (tmp_path / "fake.parquet", r"fake.parquet: not a readable parquet file"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "missing column",
        "missing csv column",
        "empty file",
        "number value",
        "null value",
        "blank value",
        "bad json",
        "unknown extension",
        "not parquet",
    ],
)
def test_bad_input_names_file_column_or_row_and_writes_nothing(tmp_path, case):
    (tmp_path / "bad.jsonl").write_text(json.dumps(NUMBERS[0]) + "\n{not json\n")
    (tmp_path / "fake.parquet").write_text("plain text")
    path, message = _bad_input_cases(tmp_path)[case]
    with pytest.raises(DataError, match=message):
        prepare_data(files_config(tmp_path, path))
    assert not (tmp_path / "runs").exists()


def test_overlength_is_refused_with_the_row_or_truncated_and_counted(tmp_path):
    rows = NUMBERS[:30] + [{"number": "1" * 40, "words": "long"}]
    train = write_rows(tmp_path / "train.jsonl", rows, "jsonl")
    cfg = files_config(tmp_path, train)
    cfg.data.max_source_length = 16
    cfg.data.split_sizes.test = 1  # the long row may land in any split; keep the others small
    with pytest.raises(
        DataError, match=r"longer than data.max_source_length=16; first: .*train.jsonl line 31, 41 tokens"
    ):
        prepare_data(cfg)
    assert not (tmp_path / "runs").exists()
    cfg.data.overlength = "truncate"
    prepared = prepare_data(cfg)
    splits = prepared.summary["splits"]
    assert sum(s["truncated"]["source"] for s in splits.values()) == 1
    assert max(s["max_source_tokens"] for s in splits.values()) == 16
    tok = prepared.tokenizer()
    for split in ("train", "validation", "test"):
        for ids in prepared.read_split(split).column("source_ids").to_pylist():
            assert len(ids) <= 16 and ids[-1] == tok.eos_id

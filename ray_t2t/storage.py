"""Where a run's files live: a local folder, or an object store (s3://, gs://, ...) through pyarrow.

run.storage_path is either. `location(text)` returns a pathlib.Path for a folder and a `Remote` for
a URI; a Remote offers the path operations ray_t2t uses (/, name, parent, exists, is_file, is_dir,
read_text, write_text, read_bytes, write_bytes, mkdir, unlink, glob), so every stage is written once
and a local run behaves exactly as it did. What needs real local files goes through helpers:

    with staged_folder(target) as folder: ...   write into a local `folder`; on success it replaces
                                                `target` whole (renamed into place, or uploaded with a
                                                chosen file last: readers test that one)
    local_copy(path) -> Path                    a local folder with the files under `path`: the path
                                                itself, or a per-node download cache
    open_input(path)                            a seekable binary file (hashing, parquet)
    write_parquet(table, path)                  a whole shard or none, for readers on any node
    ray_storage(path)                           RunConfig/Tuner storage_path and storage_filesystem

A URI may carry filesystem options as a query (OPTIONS lists them), e.g. s3://bucket/runs?region=us-west-2
or ?endpoint_override=minio:9000&scheme=http; credentials come from the environment (AWS_*,
GOOGLE_APPLICATION_CREDENTIALS, instance roles), never from the config. Every client gives up on a store
out of reach within seconds (connect/request timeouts and a retry limit, DEFAULTS; the URI may raise them).
An object is visible only once whole (S3 and GCS complete an upload atomically), so writes to a
Remote need no temporary name.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ray_t2t.errors import UserError, shorten

SCHEMES = ("s3", "gs", "gcs")
CACHE_ENV = "RAY_T2T_CACHE_DIR"  # where local_copy keeps downloads (default ~/.cache/ray_t2t/storage)
_filesystems: dict[tuple, object] = {}


def _flag(text: str) -> bool:
    if text.lower() not in ("true", "false", "1", "0"):
        raise ValueError("must be true or false")
    return text.lower() in ("true", "1")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value <= 3600:  # also refuses nan
        raise ValueError("must be seconds, more than 0 and at most 3600")
    return value


def _attempts(text: str) -> int:
    value = int(text) if text.isdigit() else 0
    if not 1 <= value <= 20:
        raise ValueError("must be a whole number from 1 to 20")
    return value


def _http(text: str) -> str:
    if text not in ("http", "https"):
        raise ValueError("must be http or https")
    return text


def _text(text: str) -> str:
    if not text or any(ord(c) < 33 for c in text):
        raise ValueError("must be a value without spaces or control characters")
    return text


# The query options a URI may carry, per scheme: pyarrow's own (passed to FileSystem.from_uri) and the
# client limits ray_t2t sets itself. Anything else is refused when the config is validated.
_GCS = {"location": _text, "scheme": _http, "endpoint_override": _text, "project_id": _text}
OPTIONS: dict[str, dict] = {
    "s3": {
        "region": _text,
        "scheme": _http,
        "endpoint_override": _text,
        "allow_bucket_creation": _flag,
        "allow_bucket_deletion": _flag,
        "tls_ca_file_path": _text,
        "connect_timeout": _seconds,
        "request_timeout": _seconds,
        "max_attempts": _attempts,
    },
    "gs": {**_GCS, "retry_limit_seconds": _seconds},
    "gcs": {**_GCS, "retry_limit_seconds": _seconds},
}
# Without limits, a gs:// bucket this machine cannot reach (no credentials) retries for minutes; with
# these, a store out of reach fails in about 10 s (S3: 3 attempts of at most 3 s without a byte).
DEFAULTS: dict[str, dict[str, float]] = {
    "s3": {"connect_timeout": 2.0, "request_timeout": 3.0, "max_attempts": 3},
    "gs": {"retry_limit_seconds": 5.0},
    "gcs": {"retry_limit_seconds": 5.0},
}
_OWN = ("connect_timeout", "request_timeout", "max_attempts")  # S3 options pyarrow's URI parser lacks


def parse_options(scheme: str, query: str) -> dict[str, Any]:
    """The options of a URI's query, each parsed; ValueError names an unknown, repeated or bad one."""
    from urllib.parse import parse_qsl

    known = OPTIONS[scheme]
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError:
        raise ValueError(f"{shorten(query)!r} is not a query of name=value options joined by '&'") from None
    options: dict[str, Any] = {}
    for key, value in pairs:
        if key not in known:
            raise ValueError(f"unknown option {shorten(key)!r} for {scheme}:// (known: {', '.join(sorted(known))})")
        if key in options:
            raise ValueError(f"option {key!r} is given twice")
        try:
            options[key] = known[key](value)
        except ValueError as err:
            raise ValueError(f"option {key}={shorten(value)!r}: {err}") from None
    return options


def scheme_of(text: str) -> str | None:
    head, sep, _ = str(text).partition("://")
    return head.lower() if sep and head.replace("+", "").replace("-", "").replace(".", "").isalnum() else None


def is_uri(text: str | os.PathLike) -> bool:
    return scheme_of(str(text)) is not None


def uri_problem(text: str) -> str | None:
    """Why `text` cannot be a storage location (an unknown scheme), or None."""
    scheme = scheme_of(text)
    if scheme is None or scheme in SCHEMES:
        return None
    if scheme == "file":
        return f"{text!r}: give a file:// location as a plain path (e.g. {text[7:] or '/'})"
    return (
        f"{text!r}: unknown storage scheme {scheme}://. Give a folder path, or an object store URI "
        f"({', '.join(s + '://' for s in SCHEMES)})"
    )


class Remote:
    """A path in an object store: `scheme://bucket/key...?options`, with the pathlib operations
    ray_t2t needs. The filesystem is built once per process from the URI (pyarrow.fs.FileSystem.from_uri)."""

    __slots__ = ("scheme", "path", "query")

    def __init__(self, scheme: str, path: str, query: str = "") -> None:
        self.scheme, self.path, self.query = scheme, path.strip("/"), query

    @classmethod
    def parse(cls, text: str) -> Remote:
        """The Remote a URI names; ValueError for an unknown scheme, no bucket, credentials in the URI
        or an unknown or bad option."""
        scheme = scheme_of(text)
        if scheme is None or scheme not in SCHEMES:
            raise ValueError(uri_problem(text) or f"{text!r} is not a storage URI")
        rest = str(text).split("://", 1)[1]
        path, _, query = rest.partition("?")
        bucket = path.strip("/").split("/", 1)[0]
        if not bucket:
            raise ValueError(f"{shorten(text)!r}: no bucket")
        if "@" in bucket or ":" in bucket:
            raise ValueError(
                f"a {scheme}:// URI holds no credentials or port (not echoed here); credentials come from "
                "the environment (AWS_* / GOOGLE_APPLICATION_CREDENTIALS, or the node's role), an endpoint from "
                "?endpoint_override=host:port"
            )
        try:
            parse_options(scheme, query)
        except ValueError as err:
            raise ValueError(f"{shorten(str(text))!r}: {err}") from None
        return cls(scheme, path, query)

    # --- pathlib-like
    def __truediv__(self, part: str | os.PathLike) -> Remote:
        part = str(part).strip("/")
        return Remote(self.scheme, f"{self.path}/{part}" if part else self.path, self.query)

    def __str__(self) -> str:
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    def __repr__(self) -> str:
        return f"Remote({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Remote) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __lt__(self, other: Remote) -> bool:
        return str(self) < str(other)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Remote:
        head = self.path.rsplit("/", 1)[0] if "/" in self.path else self.path
        return Remote(self.scheme, head, self.query)

    def with_name(self, name: str) -> Remote:
        return self.parent / name

    def resolve(self) -> Remote:
        return self

    def relative_to(self, other: Remote) -> str:
        if not (self.path + "/").startswith(other.path + "/"):
            raise ValueError(f"{self} is not under {other}")
        return self.path[len(other.path) :].strip("/")

    @property
    def fs(self) -> Any:
        key = (self.scheme, self.path.split("/", 1)[0], self.query)
        if key not in _filesystems:
            from urllib.parse import parse_qsl, urlencode

            import pyarrow
            import pyarrow.fs

            defaults, given = DEFAULTS[self.scheme], parse_options(self.scheme, self.query)
            # pyarrow's own options go through its URI parser as given; the client limits are set below
            passed = {name: str(value) for name, value in defaults.items() if name not in _OWN}
            passed.update((name, value) for name, value in parse_qsl(self.query) if name not in _OWN)
            limits = {name: value for name, value in {**defaults, **given}.items() if name in _OWN}
            uri = f"{self.scheme}://{key[1]}" + (f"?{urlencode(passed)}" if passed else "")
            try:
                fs = pyarrow.fs.FileSystem.from_uri(uri)[0]
                if limits:  # pyarrow's URI parser takes no client limits: rebuild with them, as unpickling does
                    settings = fs.__reduce__()[1][0]
                    attempts = limits.pop("max_attempts", None)
                    if attempts:
                        settings["retry_strategy"] = pyarrow.fs.AwsStandardS3RetryStrategy(max_attempts=attempts)
                    fs = pyarrow.fs.S3FileSystem(**{**settings, **limits})
                _filesystems[key] = fs
            except (pyarrow.ArrowException, ValueError, OSError) as err:
                raise UserError(
                    f"cannot open the object store {shorten(uri)}: {shorten(str(err), 400)}. Check the bucket name "
                    "and, without ?region=..., that this machine can reach the store to find the bucket's region"
                ) from None
        return _filesystems[key]

    def _info(self) -> Any:
        try:
            return self.fs.get_file_info(self.path)
        except OSError as err:
            raise UserError(
                f"cannot reach {shorten(str(self))}: {shorten(str(err), 300)}. Check that the bucket exists and that "
                "this machine's credentials (AWS_* / GOOGLE_APPLICATION_CREDENTIALS, or the node's role) may read it"
            ) from None

    def exists(self) -> bool:
        import pyarrow.fs

        return self._info().type != pyarrow.fs.FileType.NotFound

    def is_file(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.File

    def is_dir(self) -> bool:
        import pyarrow.fs

        return self._info().type == pyarrow.fs.FileType.Directory

    def size(self) -> int:
        return int(self._info().size or 0)

    def read_bytes(self) -> bytes:
        with self.fs.open_input_stream(self.path) as handle:
            return handle.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        with self.fs.open_output_stream(self.path) as handle:
            handle.write(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def mkdir(self, parents: bool = True, exist_ok: bool = True) -> None:
        self.fs.create_dir(self.path, recursive=True)

    def unlink(self, missing_ok: bool = False) -> None:
        if missing_ok and not self.exists():
            return
        self.fs.delete_file(self.path)

    def iterdir(self) -> list[Remote]:
        import pyarrow.fs

        found = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, allow_not_found=True))
        return [Remote(self.scheme, info.path, self.query) for info in found]

    def glob(self, pattern: str) -> list[Remote]:
        """Matches of a relative pattern whose parts may hold * ? [] (no **), like Path.glob."""
        matches = [self]
        for part in pattern.strip("/").split("/"):
            if any(c in part for c in "*?["):
                matches = [child for m in matches for child in m.iterdir() if fnmatch.fnmatchcase(child.name, part)]
            else:
                matches = [m / part for m in matches]
                matches = [m for m in matches if m.exists()]
        return sorted(matches, key=str)

    def files(self) -> list[tuple[str, Remote, int]]:
        """(relative name, path, size) of every file under this folder, sorted by name."""
        return [(name, path, size) for name, path, size, _ in self._listing()]

    def _listing(self) -> list[tuple[str, Remote, int, int | None]]:
        """(relative name, path, size, modification time in ns) of every file under this folder."""
        import pyarrow.fs

        found = self.fs.get_file_info(pyarrow.fs.FileSelector(self.path, recursive=True, allow_not_found=True))
        out = [
            (
                info.path[len(self.path) :].strip("/"),
                Remote(self.scheme, info.path, self.query),
                int(info.size or 0),
                info.mtime_ns,
            )
            for info in found
            if info.type == pyarrow.fs.FileType.File
        ]
        return sorted(out, key=lambda item: item[0])


StoragePath = Path | Remote


def location(text: str | os.PathLike | Remote) -> StoragePath:
    """A Path for a folder path, a Remote for an object-store URI. Raises ValueError for an unknown
    scheme."""
    if isinstance(text, (Path, Remote)):
        return text
    return Remote.parse(str(text)) if is_uri(text) else Path(text)


def child(root: StoragePath, *names: str) -> StoragePath:
    """root / names..., where each name (a run name, a method label, a teacher's folder) is one plain
    folder name: the result stays inside `root`. Raises UserError naming the offending name."""
    path = root
    for name in names:
        name = str(name)
        if (
            not name
            or name in (".", "..")
            or any(c in name for c in "/\\\0")
            or any(ord(c) < 32 for c in name)
            or len(name) > 255
        ):
            raise UserError(
                f"{shorten(repr(name))} cannot name a folder under {shorten(str(root))}: a name must be one "
                "folder name (no '/', '\\', '..' or control characters)"
            )
        path = path / name
    return path


def is_remote(path: Any) -> bool:
    return isinstance(path, Remote)


def absolute(text: str) -> str:
    """A model/teacher path as every node should see it: a URI as is, an existing local path
    resolved, anything else (a hub name) as is."""
    if is_uri(text):
        return text
    return str(Path(text).resolve()) if Path(text).exists() else text


# ------------------------------------------------------------------------------ whole files, folders


def write_atomic(path: StoragePath, data: str | bytes) -> None:
    """Write a file a reader sees whole or not at all (local: a temporary name, then rename)."""
    payload = data.encode() if isinstance(data, str) else data
    if isinstance(path, Remote):
        path.write_bytes(payload)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}")
    try:
        staging.write_bytes(payload)
        staging.replace(path)
    finally:
        staging.unlink(missing_ok=True)


def remove_tree(path: StoragePath) -> None:
    if isinstance(path, Remote):
        if path.is_dir():
            path.fs.delete_dir(path.path)
        elif path.is_file():
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def files_under(path: StoragePath) -> list[tuple[str, StoragePath, int]]:
    """(relative name, path, size) of every file under a folder, sorted by name."""
    if isinstance(path, Remote):
        return path.files()
    found = [(p.relative_to(path).as_posix(), p) for p in path.rglob("*") if p.is_file()]
    return [(name, p, p.stat().st_size) for name, p in sorted(found)]


def folder_bytes(path: StoragePath) -> int:
    return sum(size for _, _, size in files_under(path))


def open_input(path: StoragePath) -> Any:
    """A seekable binary file: for hashing, or pyarrow.parquet (read_table, read_schema)."""
    if isinstance(path, Remote):
        return path.fs.open_input_file(path.path)
    return open(path, "rb")


def sha256_of(path: StoragePath) -> str:
    digest = hashlib.sha256()
    with open_input(path) as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet(table: Any, path: StoragePath, **options: Any) -> None:
    """A parquet file that readers on any node see whole or not at all."""
    import pyarrow.parquet as pq

    if isinstance(path, Remote):
        pq.write_table(table, path.path, filesystem=path.fs, **options)
        return
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        pq.write_table(table, staging, **options)
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)


def upload(local: Path, target: Remote, last: str | None = None) -> None:
    """Copy every file under `local` to `target` (the file named `last`, if any, after all others)."""
    names = sorted(p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file())
    if last in names:
        names = [n for n in names if n != last] + [last]
    for name in names:
        with open(local / name, "rb") as source, target.fs.open_output_stream((target / name).path) as sink:
            shutil.copyfileobj(source, sink, 1 << 22)


@contextmanager
def staged_folder(target: StoragePath, last: str | None = None) -> Iterator[Path]:
    """Yield a new local folder to fill; when the block succeeds, it replaces `target` whole: swapped
    into place in one step (local: a reader or a kill sees the previous folder or the new one), or
    uploaded after removing the old `target` (object store; the file named `last` goes up after all
    others, so a reader that tests it sees a complete folder). On failure nothing of it is kept."""
    if isinstance(target, Remote):
        staging = Path(tempfile.mkdtemp(prefix="ray_t2t_staging_"))
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.parent / f".{target.name}-staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        staging.mkdir()
    try:
        yield staging
        if isinstance(target, Remote):
            remove_tree(target)
            upload(staging, target, last)
        else:
            _put_in_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _put_in_place(staging: Path, target: Path) -> None:
    """Move the folder `staging` to `target`, so that a process killed at any moment leaves `target`
    either the previous whole folder or the new one (afterwards `staging` holds what was replaced)."""
    if not os.path.lexists(target):
        staging.rename(target)
    elif not _exchange(staging, target):  # not Linux, or a filesystem without RENAME_EXCHANGE
        previous = target.with_name(f".{target.name}-previous-{uuid.uuid4().hex[:8]}")
        target.rename(previous)  # the moment between these two renames has no target
        staging.rename(target)
        previous.rename(staging)


def _exchange(first: Path, second: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2 with RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), rename_exchange) == 0


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "ray_t2t" / "storage")


def local_copy(path: StoragePath) -> Path:
    """A local folder holding the files under `path`: the folder itself when local; for an object
    store, a download into this node's cache (cache_root()), keyed by the URI and its files' names,
    sizes and modification times, and reused while they are unchanged (a model retrained into the
    same folder has the same sizes, not the same times). Raises FileNotFoundError when there are no
    files."""
    if not isinstance(path, Remote):
        return path
    files = path._listing()
    if not files:
        raise FileNotFoundError(f"{path}: no files there")
    listing = json.dumps([str(path)] + [[name, size, mtime] for name, _, size, mtime in files])
    folder = cache_root() / hashlib.sha256(listing.encode()).hexdigest()[:24]
    if (folder / ".complete").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.parent / f".{folder.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        for name, remote, _, _ in files:
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            with path.fs.open_input_stream(remote.path) as source, open(staging / name, "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 22)
        (staging / ".complete").write_text(str(path))
        try:
            staging.rename(folder)
        except OSError:  # another process of this node finished the same download first
            if not (folder / ".complete").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def local_model_path(name_or_path: str) -> str:
    """What transformers' from_pretrained can read: a URI's files downloaded (local_copy), anything
    else (a folder, a hub name) as given."""
    return str(local_copy(Remote.parse(name_or_path))) if is_uri(name_or_path) else name_or_path


def ray_storage(path: StoragePath) -> dict:
    """RunConfig/Tuner keyword arguments for storing under `path`."""
    if isinstance(path, Remote):
        return {"storage_path": path.path, "storage_filesystem": path.fs}
    return {"storage_path": str(path)}

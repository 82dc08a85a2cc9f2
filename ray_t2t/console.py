"""What `ray-t2t` shows. Its own lines (a line per stage, a progress bar with ETA for long stages, the
verdict, errors in full) go to the terminal; everything else the process and its children write, Ray's,
Ray Data's, Tune's, transformers' and DeepSpeed's output and every worker's lines included, goes to a
log file in the run folder once capture() is called. `ray-t2t -v` does not capture: all of it shows.

Capture works on file descriptors 1 and 2, not on sys.stdout: libraries' handlers hold their own
references to the streams, and Ray's C++ core writes to the descriptors directly.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, TextIO

from ray_t2t.errors import UserError

_terminal: dict[str, TextIO] = {}  # "out"/"err": the terminal's streams while 1 and 2 go to the log
_log_path: list[Path] = []
_upload: list[Any] = []  # where the log goes when output is released (a run folder in an object store)
_created: list[Path] = []  # folders capture() made for the log, deepest first

# Quiet the libraries' own progress bars (model loading and saving) in this process and the processes
# it starts (Ray's workers inherit the environment of the Ray it starts).
QUIET_ENV = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TRANSFORMERS_VERBOSITY": "error", "TQDM_DISABLE": "1"}


def capture(log_path: Path, upload_to: Any = None) -> None:
    """From now on this process's (and its children's) standard output and error append to `log_path`;
    say(), error() and progress bars still reach the terminal. With `upload_to` (a storage.Remote), the
    log is copied there by release() and the local file removed."""
    if _terminal:
        return
    _created[:] = [p for p in [log_path.parent, *log_path.parent.parents] if not p.exists()]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    _terminal["out"] = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8", errors="replace")
    _terminal["err"] = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    _log_path.append(log_path)
    if upload_to is not None:
        _upload.append(upload_to)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)


def release(discard: bool = False) -> None:
    """Undo capture(): standard output and error are the terminal's again. `discard`: the command was
    refused before any work (its message is on the terminal), so the log and the folders capture()
    made for it are removed: a refusal leaves nothing behind."""
    if not _terminal:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, key in ((1, "out"), (2, "err")):
        stream = _terminal.pop(key)
        stream.flush()
        os.dup2(stream.fileno(), fd)
        stream.close()
    path = _log_path.pop()
    target = _upload.pop() if _upload else None
    created, _created[:] = list(_created), []
    keep = False
    if not discard and target is not None:
        try:
            target.write_bytes(path.read_bytes())
        except (OSError, UserError) as err:  # the run's result does not depend on its log
            print(f"ray-t2t: could not copy the log to {target} ({err}); it is in {path}", file=sys.stderr)
            keep = True
    if (discard or target is not None) and not keep:  # refused, or copied to the object store
        path.unlink(missing_ok=True)
        _remove_empty(created)
    for key, value in QUIET_ENV.items():
        if os.environ.get(key) == value:
            del os.environ[key]


def discards_on_refusal() -> bool:
    """Whether a refusal now removes the log: capture() made its folders (the run folder is new), or
    the log was to be copied to an object store (a refusal writes nothing there)."""
    return bool(_created) or bool(_upload)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:  # deepest first
        try:
            folder.rmdir()
        except OSError:  # something else was written there: keep it
            break


def log_path() -> Any:
    """Where the log of the captured output is (a storage.Remote once copied to an object store; None:
    not captured)."""
    return (_upload[0] if _upload else _log_path[0]) if _log_path else None


def say(message: str) -> None:
    """A line for the user: on the terminal, and in the log when output is captured."""
    print(message, flush=True)
    if "out" in _terminal:
        _write(_terminal["out"], message)


def error(message: str) -> None:
    """An error, in full: on the terminal's standard error, and in the log when output is captured."""
    print(message, file=sys.stderr, flush=True)
    if "err" in _terminal:
        _write(_terminal["err"], message)


def _write(stream: TextIO, message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message, file=stream)  # above a progress bar that is showing


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, unit: str = "step", initial: int = 0) -> Any:
    """A progress bar with ETA on the terminal while output is captured and the terminal is one (a
    file or a pipe gets the stage lines only); otherwise an object whose update() and close() do
    nothing."""
    stream = _terminal.get("err")
    if stream is None or not stream.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total, initial=initial, desc=desc, unit=unit, file=stream, leave=False, dynamic_ncols=True, disable=False
    )

"""Errors the user can fix. The CLI prints their message (no traceback) and exits non-zero.

Anything else that escapes is a bug in ray_t2t and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input: config, data, paths. The message says what and where."""


class ConfigError(UserError):
    """The experiment config is invalid (unknown key, wrong type, out of range, bad override)."""


class DataError(UserError):
    """The task's data is unusable: missing file or column, empty split, non-text value, too long."""


MAX_SHOWN = 200  # characters of a user's value quoted in a message


def shorten(text: str, limit: int = MAX_SHOWN) -> str:
    """`text` cut to `limit` characters, saying how much was left out: a message quotes a user's value,
    which may be megabytes long."""
    text = str(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"

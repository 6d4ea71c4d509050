"""Errors that report bad user input, and the one place that reports them.

Entry points run their work inside ``exit_on_user_error()``: a ``UserError`` is printed as
``error: <message>`` without a traceback and the process exits with status 2. The message
itself must say what was wrong, what is allowed and how to fix it. Anything else that
escapes is a bug in resnet_lab and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Bad input from the user: a config value, a path, a data file or a checkpoint."""


class ConfigError(UserError, ValueError):
    """A config value (or combination of values) that cannot work."""


class DataError(UserError):
    """Missing, partial or corrupt data files."""


class CheckpointError(UserError):
    """A checkpoint or weights file that is missing, unreadable, unsafe or incompatible."""


def user_error_in(error: BaseException) -> UserError | None:
    """The ``UserError`` that ``error`` is or wraps (Hydra's ``InstantiationException`` wraps
    what a constructor raised), if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def report(error: UserError) -> None:
    print(f"error: {error}", file=sys.stderr, flush=True)


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Print a ``UserError`` (also one wrapped by Hydra) and exit with status 2."""
    try:
        yield
    except Exception as error:
        user_error = user_error_in(error)
        if user_error is None:
            raise
        report(user_error)
        raise SystemExit(EXIT_USER_ERROR) from None

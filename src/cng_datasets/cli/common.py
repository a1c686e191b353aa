"""What every command shares: error mapping, logging / warning display and parameter types."""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click

from cng_datasets.errors import EXIT_FAILURE, CngError, first_line

F = TypeVar("F", bound=Callable[..., Any])

LOGGER_NAME = "cng_datasets"


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at the time of the record, not at set-up time
    (a command invoked twice in one process, e.g. under click's test runner, gets both)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break a command
            self.handleError(record)


def setup_logging(quiet: bool = False) -> None:
    """Send the package logger and our warnings to stderr as plain lines."""
    logger = logging.getLogger(LOGGER_NAME)
    if not any(isinstance(h, _StderrHandler) for h in logger.handlers):
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)
    logger.propagate = False

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        sys.stderr.write(f"warning: {message}\n")

    warnings.showwarning = show


def handle_errors(func: F) -> F:
    """Turn our errors into one line on stderr and an exit code; never show a traceback.

    Set ``CNG_DATASETS_DEBUG=1`` to see the traceback of an unexpected error.
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        setup_logging(quiet=bool(kwargs.get("quiet")))
        try:
            return func(*args, **kwargs)
        except CngError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(err.exit_code)
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            sys.exit(130)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except Exception as err:  # noqa: BLE001 - last line of defence: one line, not a traceback
            if os.environ.get("CNG_DATASETS_DEBUG"):
                traceback.print_exc()
            first = first_line(err, "")
            click.echo(
                f"error: unexpected {type(err).__name__}: {first} (set CNG_DATASETS_DEBUG=1 for details)", err=True
            )
            sys.exit(EXIT_FAILURE)

    return cast(F, wrapper)  # functools.wraps keeps the signature


class IntListType(click.ParamType[tuple[int, ...]]):
    """A comma-separated list of integers, e.g. ``"9,8,0"`` → ``(9, 8, 0)``."""

    name = "INTS"

    def convert(self, value: Any, param: Any, ctx: Any) -> tuple[int, ...]:
        if isinstance(value, tuple):
            return value
        text = str(value).strip()
        if not text:
            return ()
        try:
            return tuple(int(part) for part in text.split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers", param, ctx)


INT_LIST = IntListType()

"""What every command shares: library errors as one line and an exit status, the library's log
lines shown as the command's own, and the machine profile read where a command's defaults need it.

SamfastError or an OSError of the file system (read-only, exists, full, too long) -> exit 2;
Ctrl-C -> exit 130; anything else is a bug: one line, exit 1.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from samfast.errors import SamfastError

F = TypeVar("F", bound=Callable)


def fail(message: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(command: F) -> F:
    """Wrap a command so no traceback reaches the user (SAMFAST_DEBUG=1 shows it)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except SamfastError as error:
            raise fail(str(error).splitlines()[0] if str(error) else type(error).__name__) from None
        except OSError as error:
            if error.errno is None:
                raise _bug(error) from None
            where = f"{error.filename}: " if error.filename else ""
            raise fail(f"{where}{os.strerror(error.errno)}") from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None
        except Exception as error:
            raise _bug(error) from None

    return wrapper  # type: ignore[return-value]


def _bug(error: Exception) -> typer.Exit:
    if os.environ.get("SAMFAST_DEBUG"):
        raise error
    message = " ".join(str(error).split())[:300]
    print(
        f"error: internal error {type(error).__name__}: {message} "
        "(rerun with SAMFAST_DEBUG=1 for the traceback)",
        file=sys.stderr,
    )
    return typer.Exit(1)


class _EchoHandler(logging.Handler):
    def __init__(self, echo: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self.echo = echo

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.echo(self.format(record))
        except Exception:
            self.handleError(record)


def show_library_log(echo: Callable[[str], None]) -> None:
    """Print the library's INFO lines (the ``samfast`` logger: building a set, the profile's pick)
    through ``echo``, the command's own printer. One such handler at a time, however many commands
    a process runs (tests run many)."""
    logger = logging.getLogger("samfast")
    for old in [h for h in logger.handlers if isinstance(h, _EchoHandler)]:
        logger.removeHandler(old)
    logger.addHandler(_EchoHandler(echo))
    logger.setLevel(logging.INFO)


def machine_profile(backend: str | None, precision: str | None) -> dict | None:
    """The machine profile `samfast tune` wrote, read only where it decides something: for
    --precision auto, or when neither --backend nor --precision is given."""
    if precision == "auto" or (backend is None and precision is None):
        from samfast.runtime.profile import load_profile

        return load_profile()
    return None


def open_predictor(
    model: str,
    backend: str | None,
    device: str,
    precision: str | None,
    echo: Callable[[str], None],
    **options,
):
    """The Predictor a command runs: the library's log lines shown through ``echo``, the machine
    profile read where it decides something; ``options`` are Predictor's own (checkpoint, cache...)."""
    from samfast.runtime.predictor import Predictor

    show_library_log(echo)
    profile = machine_profile(backend, precision)
    return Predictor(model, backend=backend, device=device, precision=precision, profile=profile, **options)

"""What every command shares: turning library errors into one line and an exit status.

SamfastError or an OSError of the file system (read-only, exists, full, too long) -> exit 2;
Ctrl-C -> exit 130; anything else is a bug: one line, exit 1.
"""

from __future__ import annotations

import functools
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

"""The `samfast` command line: a thin Typer layer over the library, one module per command.

Bad input ends with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

from typing import Annotated

import typer

from samfast import __version__
from samfast.cli import bench, evaluate, export, info, predict, tune
from samfast.cli import segment as segment_command
from samfast.cli import serve as serve_command

app = typer.Typer(
    name="samfast",
    help="Fast, verifiable Segment Anything for medical imaging.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("info")(info.info)
app.command("predict")(predict.predict)
app.command("export")(export.export)
app.add_typer(bench.app, name="bench")
app.command("segment")(segment_command.segment)
app.command("serve")(serve_command.serve)
app.command("eval")(evaluate.evaluate)
app.command("tune")(tune.tune)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"samfast {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Fast, verifiable Segment Anything for medical imaging."""


def main() -> None:
    app()

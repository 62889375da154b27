"""The Typer app: global options, error handling at the edge, command registration."""

from __future__ import annotations

import logging
import os

# OpenCV's own log lines (e.g. FFmpeg's "can't be used to capture by name") would break the
# one-line error contract; mslseg reports what failed itself
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
from typing import Annotated

import typer
from typer.core import TyperGroup

from mslseg import __version__
from mslseg.runtime.errors import MslsegError


class _Group(TyperGroup):
    """Turns MslsegError into one line on stderr and exit code 1; usage errors stay exit 2."""

    def invoke(self, ctx):  # ctx: click.Context (typer may vendor click)
        try:
            return super().invoke(ctx)
        except MslsegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


app = typer.Typer(
    cls=_Group,
    name="mslseg",
    help="Adapt a segmentation model to a new camera with the Maximum Squares Loss, export it, "
    "and run it on video.",
    pretty_exceptions_show_locals=False,
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mslseg {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details (INFO level).")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        force=True,
    )


def _register() -> None:
    from mslseg.cli import bench, convert, demo, evaluate, export, infer, synth, train

    app.command("demo")(demo.demo)
    app.command("synth")(synth.synth)
    app.command("train")(train.train)
    app.command("adapt")(train.adapt)
    app.command("evaluate")(evaluate.evaluate)
    app.command("export")(export.export)
    app.command("infer")(infer.infer)
    app.command("bench")(bench.bench)
    app.command("convert")(convert.convert)


_register()


def main() -> None:
    app()

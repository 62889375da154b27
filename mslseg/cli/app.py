"""The Typer app: global options, error handling at the edge, command registration."""

from __future__ import annotations

import errno
import functools
import logging
import os
import re
import signal
import sys

# OpenCV's own log lines (e.g. FFmpeg's "can't be used to capture by name") would break the
# one-line error contract; mslseg reports what failed itself
os.environ.setdefault("OPENCV_LOG_LEVEL", "ERROR")
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup, TyperOption, _TyperParameter

from mslseg import __version__
from mslseg.runtime.errors import MslsegError, require


def _os_error_line(exc: OSError) -> str | None:
    """One line for an OSError that the user must fix (a full disk, a file-size limit, a read-only
    or forbidden path) that reached the edge without an OutputError; None for any other (a bug)."""
    from mslseg.runtime.io.atomic import OUTPUT_ERRNOS, describe_write_failure

    if exc.errno not in OUTPUT_ERRNOS:
        return None
    name = exc.filename
    if exc.errno in (errno.EACCES, errno.EPERM):  # reading can be refused too
        where = f" on {os.fsdecode(name)}" if name else ""
        return f"permission denied{where} ({exc.strerror}); check who may read and write it, or choose another path"
    if name is None:
        return describe_write_failure(exc, Path("the output folder"), "an output")
    path = Path(os.fsdecode(name))
    return describe_write_failure(exc, path.parent, path.name)


class _Group(TyperGroup):
    """Turns MslsegError into one line on stderr and exit code 1; usage errors stay exit 2. A full
    or read-only disk that library code did not name (see runtime/io/atomic.py) is one line too."""

    def invoke(self, ctx):  # ctx: click.Context (typer may vendor click)
        try:
            return super().invoke(ctx)
        except MslsegError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
        except OSError as exc:
            line = _os_error_line(exc)
            if line is None:
                raise
            typer.echo(f"error: {line}", err=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None


def _no_flag_type(display_type_rich: Callable[..., str | None]) -> Callable[..., str | None]:
    """Typer (0.2x) prints `<bool>` in the type column of every flag, --help included, which reads
    as if `--overlay` took a value; a flag takes none, so its type column stays empty."""

    @functools.wraps(display_type_rich)
    def shown(self: Any, ctx: Any) -> str | None:
        if getattr(self, "is_flag", False) and self.metavar is None:
            return None
        return display_type_rich(self, ctx)

    return shown


# Typer names some types as Python spells them: `<list[Path]>` for a repeatable option, `<int range>`
# beside its own `[x>=1]`. A user reads the value one flag takes: `<path>`, `<int>` (the range stays).
_TYPE_NAMES = ((re.compile(r"<list\[str\]>"), "<text>"), (re.compile(r"<list\[Path\]>"), "<path>"),
               (re.compile(r"<list\[(\w+)\]>"), r"<\1>"), (re.compile(r"<(int|float) range>"), r"<\1>"))


def _plain_type_names(display_type: Callable[..., str]) -> Callable[..., str]:
    @functools.wraps(display_type)
    def shown(self: Any, ctx: Any) -> str:
        text = display_type(self, ctx)
        for pattern, plain in _TYPE_NAMES:
            text = pattern.sub(plain, text)
        return text

    return shown


TyperOption.display_type_rich = _no_flag_type(TyperOption.display_type_rich)  # type: ignore[method-assign]
_TyperParameter.display_type = _plain_type_names(_TyperParameter.display_type)  # type: ignore[method-assign]

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


def _is_pt(path: Path) -> bool:
    return path.suffix.lower() == ".pt"


# The commands that need torch, and when (from their parsed arguments). Checked before the
# command body runs, so an install without the [train] extra (mslseg[cpu] on a robot) gets one
# line naming the extra, not an import traceback from deep inside the command.
NEEDS_TORCH: dict[str, tuple[str, Callable[[dict[str, Any]], bool]]] = {
    "demo": ("The demo", lambda args: True),
    "train": ("Training", lambda args: True),
    "adapt": ("Adaptation", lambda args: True),
    "evaluate": ("Evaluating a checkpoint", lambda args: True),
    "rank": ("Ranking checkpoints", lambda args: True),
    "convert": ("Converting foreign weights", lambda args: True),
    "export": ("Exporting a checkpoint", lambda args: args["src"].suffix.lower() != ".onnx"),
    "infer": ("Running a .pt checkpoint", lambda args: _is_pt(args["model"])),
    "bench": ("Benchmarking a .pt checkpoint", lambda args: any(_is_pt(m) for m in args["models"])),
}


def _guarded(name: str, command: Callable[..., None]) -> Callable[..., None]:
    if name not in NEEDS_TORCH:
        return command
    purpose, needs_torch = NEEDS_TORCH[name]

    @functools.wraps(command)  # Typer reads the options from the wrapped signature
    def run(**kwargs: Any) -> None:
        if needs_torch(kwargs):
            require("torch", "train", purpose)
        command(**kwargs)

    return run


def _register() -> None:
    from mslseg.cli import bench, convert, demo, evaluate, export, infer, rank, synth, train

    commands = {"demo": demo.demo, "synth": synth.synth, "train": train.train, "adapt": train.adapt,
                "evaluate": evaluate.evaluate, "rank": rank.rank, "export": export.export, "infer": infer.infer,
                "bench": bench.bench, "convert": convert.convert}
    for name, command in commands.items():
        app.command(name)(_guarded(name, command))


_register()


def main() -> None:
    # a write past the file-size limit (ulimit -f) then fails with EFBIG, which the commands report,
    # instead of killing the process (CPython ignores SIGXFSZ already; embedding code may not)
    if hasattr(signal, "SIGXFSZ"):
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _wide_help_when_piped()
    app()


HELP_WIDTH_PIPED = 120  # wide enough that no option name or default of any command is cut


def _wide_help_when_piped() -> None:
    """Rich lays help out at 80 columns when stdout is no terminal (`mslseg export --help | tee`), and
    cuts option names there (`--version-compa…`); a file or a pipe has no width, so give it one.
    A width the user set (COLUMNS, or Typer's TERMINAL_WIDTH) wins."""
    import typer.rich_utils

    if sys.stdout.isatty() or os.environ.get("COLUMNS") or os.environ.get("TERMINAL_WIDTH"):
        return
    if typer.rich_utils.MAX_WIDTH is None:  # Typer reads TERMINAL_WIDTH once, at import
        typer.rich_utils.MAX_WIDTH = HELP_WIDTH_PIPED

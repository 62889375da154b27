"""What the commands share at the edge: Typer choices built from the library's own tuples (so that a
value added there shows in --help), and the console their tables print to."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any


def choice_enum(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum with one member per value, named as the value ('ampere+' too: `E["ampere+"]`)."""
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]


def table_console() -> Any:
    """A rich Console for a command's result table: a pipe or a file gets the whole table (160
    columns), not an 80-column cut."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=160)

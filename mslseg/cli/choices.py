"""Typer choices built from the library's own tuples, so that a value added there shows in --help."""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum


def choice_enum(name: str, values: Iterable[str]) -> type[Enum]:
    """A str Enum with one member per value, named as the value ('ampere+' too: `E["ampere+"]`)."""
    return Enum(name, [(v, v) for v in values], type=str)  # type: ignore[return-value]

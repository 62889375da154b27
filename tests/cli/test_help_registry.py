"""`--help` lists every entry of the registries: each architecture (mslseg/architectures.py) under
--model of train and adapt, each method (mslseg/methods.py) under --method of adapt.

The listed items are parsed out of the option's help and compared whole, so a dropped "msl" is not
hidden by "iw-msl", nor "segformer-b1" by the word "segformer" elsewhere on the page.
"""

import functools
import re

import pytest
from typer.testing import CliRunner

from mslseg.architectures import CHOOSABLE, FACTORY_HELP
from mslseg.cli.app import app
from mslseg.methods import METHODS

# wide enough that each option's help is one line of the table
WIDE = {"COLUMNS": "400", "TERMINAL_WIDTH": "400"}


@functools.cache  # one --help per command and option, not one per name
def _option_help(command: str, option: str) -> str:
    r = CliRunner().invoke(app, [command, "--help"], env=WIDE)
    assert r.exit_code == 0, r.output
    lines = [line for line in r.output.splitlines() if re.match(rf"\W*{re.escape(option)}\s", line)]
    assert len(lines) == 1, r.output
    return lines[0].strip(" │")


def _listed(command: str, option: str, lead: str, sep: str, end: str) -> list[str]:
    text = _option_help(command, option)
    assert lead in text and end in text, text
    return text.split(lead, 1)[1].split(end, 1)[0].strip().split(sep)


@pytest.mark.parametrize("command", ["train", "adapt"])
@pytest.mark.parametrize("name", CHOOSABLE)
def test_model_help_lists_each_architecture(command, name):
    listed = _listed(command, "--model", "Architecture:", ", ", f", or {FACTORY_HELP}")
    assert name in listed, listed


@pytest.mark.parametrize("name", list(METHODS))
def test_method_help_lists_each_method(name):
    listed = _listed("adapt", "--method", "Target loss:", " | ", " (")
    assert name in listed, listed

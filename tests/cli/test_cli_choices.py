"""The CLI's choices are the library's own tuples, and no --help shows a flag as taking a value."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from mslseg.cli import convert, export, infer
from mslseg.cli.app import app
from mslseg.export.int8 import AUTO, CALIBRATION_METHODS, INT8_LAYOUTS
from mslseg.export.trt_profile import HARDWARE_LEVELS
from mslseg.runtime.infer_job import AREA_FORMATS, LABEL_FORMATS
from mslseg.runtime.io.video_writer import CODECS
from mslseg.runtime.metadata import INPUT_KINDS, OUTPUT_KINDS, PRECISIONS

COMMANDS = ("demo", "synth", "train", "adapt", "evaluate", "export", "infer", "bench", "convert")


def _values(enum) -> tuple[str, ...]:
    return tuple(m.value for m in enum)


@pytest.mark.parametrize(("enum", "owner"), [
    (export.InputKind, INPUT_KINDS), (export.OutputKind, OUTPUT_KINDS), (export.Precision, PRECISIONS),
    (export.CalibMethod, CALIBRATION_METHODS), (export.Int8Layout, (AUTO, *INT8_LAYOUTS)),
    (export.HardwareLevel, tuple(HARDWARE_LEVELS)), (infer.LabelFormat, LABEL_FORMATS),
    (infer.AreaFormat, AREA_FORMATS), (infer.Codec, CODECS),
])
def test_cli_choices_are_the_library_tuples(enum, owner):
    assert _values(enum) == tuple(owner)


def test_foreign_formats_are_the_key_mappers():
    pytest.importorskip("torch")
    from mslseg.foreign import KEY_MAPPERS

    assert _values(convert.ForeignFormat) == tuple(KEY_MAPPERS)


def test_a_value_added_to_the_library_shows_in_help():
    from mslseg.cli.choices import choice_enum

    enum = choice_enum("Demo", (*PRECISIONS, "fp8"))
    assert _values(enum)[-1] == "fp8" and enum["fp8"] == "fp8"


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_no_help_shows_bool_metavars(command):
    args = [command, "--help"] if command else ["--help"]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "--help" in result.output and "<bool>" not in result.output


def test_model_takes_the_full_name_the_start_line_prints():
    from mslseg.cli.train import _split_full_name
    from mslseg.runtime.errors import ConfigError

    assert _split_full_name("deeplabv2-resnet18", None) == ("deeplabv2", "resnet18")
    assert _split_full_name("deeplabv2-resnet18", "resnet18") == ("deeplabv2", "resnet18")
    assert _split_full_name("segformer-b0", None) == ("segformer-b0", None)  # an entry of its own
    assert _split_full_name("deeplabv2", "resnet50") == ("deeplabv2", "resnet50")
    assert _split_full_name("nonsense-x", None) == ("nonsense-x", None)  # refused where the config is read
    with pytest.raises(ConfigError, match="names backbone resnet18, --backbone resnet50: drop one"):
        _split_full_name("deeplabv2-resnet18", "resnet50")

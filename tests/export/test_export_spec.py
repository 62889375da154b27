"""ExportSpec: export options checked once, on creation, whoever builds it (the CLI or the Python API)."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from mslseg.export.export_job import export_checkpoint
from mslseg.export.spec import ExportSpec
from mslseg.export.trt_profile import EngineOptions
from mslseg.runtime.errors import InputError
from mslseg.runtime.sizes import Size


def test_checked_and_normalised_on_creation(tmp_path):
    spec = ExportSpec(precision="int8", calib=[str(tmp_path)], static="64x48", batch=2)
    assert spec.static == Size(64, 48) and spec.calib == (tmp_path,)
    assert (spec.layout, spec.layout_reason) == ("cpu", spec.layout_reason) and spec.layout_reason
    assert ExportSpec(precision="int8", calib=[tmp_path], engine=EngineOptions()).layout == "tensorrt"
    assert ExportSpec().layout is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.precision = "fp16"  # type: ignore[misc]
    assert spec.with_(precision="fp16", calib=None).precision == "fp16"


@pytest.mark.parametrize(("options", "needle"), [
    ({"precision": "fp8"}, "unknown precision 'fp8'"),
    ({"input_kind": "rgb"}, "unknown input kind"),
    ({"opset": 13}, "opset 13"),
    ({"batch": 2}, "needs a static size"),
    ({"gate": 1.5}, "parity gate"),
    ({"precision": "int8"}, "calibration frames"),
    ({"calib": ["x"]}, "--calib is for int8"),
    ({"precision": "int8", "calib": ["x"], "calib_method": "mean"}, "unknown calibration method"),
    ({"precision": "fp32", "engine": EngineOptions(dla_core=0)}, "DLA runs fp16 or int8 only"),
])
def test_bad_options_are_refused_on_creation(options, needle):
    with pytest.raises(InputError, match=needle):
        ExportSpec(**options)


def test_export_checkpoint_builds_the_spec_from_keywords(tmp_path):
    ckpt = tmp_path / "best.pt"  # never read: the options are refused first
    with pytest.raises(InputError, match="unknown precision 'fp8'"):
        export_checkpoint(ckpt, tmp_path / "m.onnx", precision="fp8")
    with pytest.raises(InputError, match="not both"):
        export_checkpoint(ckpt, tmp_path / "m.onnx", ExportSpec(), precision="fp16")
    assert list(tmp_path.iterdir()) == []


def test_the_cli_defaults_are_the_specs():
    """`mslseg export` with no options makes ExportSpec(): its defaults are not re-listed elsewhere."""
    from mslseg.cli.export import export

    cli = {name: p.default for name, p in inspect.signature(export).parameters.items()}
    spec = ExportSpec.defaults()
    for option, field in [("input_kind", "input_kind"), ("output_kind", "output_kind"), ("precision", "precision"),
                          ("calib_frames", "calib_frames"), ("calib_method", "calib_method"),
                          ("int8_layout", "int8_layout"), ("opset", "opset"), ("confidence", "confidence")]:
        value = getattr(cli[option], "value", cli[option])
        assert value == spec[field], option

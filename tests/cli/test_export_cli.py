"""`mslseg export`: the summary line, the files it leaves, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys
import types

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.checkpoint import save_checkpoint
from mslseg.cli.app import app
from mslseg.export import load_meta, synthetic_frames
from tests.export.conftest import make_model

runner = CliRunner()


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    model, meta = make_model()
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    return save_checkpoint(path, model, meta)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """A short target-domain video and a folder of stills."""
    root = tmp_path_factory.mktemp("footage")
    frames = synthetic_frames(16, "104x72", seed=11)
    writer = cv2.VideoWriter(str(root / "footage.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (104, 72))
    for f in frames:
        writer.write(f)
    writer.release()
    (root / "stills").mkdir()
    for i, f in enumerate(frames[:4]):
        cv2.imwrite(str(root / "stills" / f"{i}.png"), f)
    return root


def test_help_lists_export():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "export" in result.output


@pytest.mark.slow
def test_int8_uint8_labels_from_footage(ckpt, footage, tmp_path):
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, [
        "export", str(ckpt), "-o", str(out), "--input", "uint8", "--output", "labels", "--confidence",
        "--precision", "int8", "--calib", str(footage / "footage.avi"), "--calib", str(footage / "stills"),
        "--calib-frames", "6"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    # --int8-layout auto without --trt: the CPU layout, and why, in the summary line
    assert lines[-1].startswith(f"wrote {out} (int8, cpu layout: --int8-layout auto without --trt")
    assert "; parity: labels agree" in lines[-1]
    # TensorRT's parser rejects a CPU-layout file by design: the summary says "not for TensorRT", no warnings
    assert len(lines) == 1 and "not for TensorRT" in lines[0]
    meta = load_meta(out)
    got = (meta.precision, meta.input_kind, meta.output_kind, meta.confidence, meta.extra["int8_layout"])
    assert got == ("int8", "uint8", "labels", True, "cpu")
    assert len(meta.source_sha256) == 64
    report = json.loads((tmp_path / "model.parity.json").read_text())
    assert report["passed"] and report["gate"] == 0.97
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.parity.json"]


@pytest.mark.slow
def test_static_width_by_height_with_a_batch_samples_and_default_output(ckpt, footage, tmp_path):
    import onnx

    src = tmp_path / "ck.pt"
    src.write_bytes(ckpt.read_bytes())
    result = runner.invoke(app, ["export", str(src), "--static", "64x48", "--static-batch", "2", "--output",
                                 "probs", "--rgb", "--input", "uint8", "--sample", str(footage / "stills" / "0.png")])
    assert result.exit_code == 0, result.output
    assert "on 1 sample," in result.output
    assert (tmp_path / "ck.onnx").exists() and load_meta(tmp_path / "ck.onnx").input_order == "rgb"
    dims = onnx.load(str(tmp_path / "ck.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [2, 48, 64, 3]  # batch 2, 64 wide, 48 high, NHWC


def _one_line_error(result, needle, code=1):
    """Exit 1: one line, `error: ...`; exit 2: a usage error, formatted by Typer."""
    assert result.exit_code == code, result.output
    assert needle in result.output, result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.fixture
def fake_tensorrt(monkeypatch):
    """A tensorrt module that imports; options are refused before any of it is used."""
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.9.0"))


BAD_OPTIONS = [  # (arguments after the checkpoint, exit code, what the line says)
    (["--gate", "0"], 1, "--gate is the share of pixels in percent"),
    (["--gate", "101"], 2, "--gate"),
    (["--precision", "fp8"], 2, "fp8"),
    (["--precision", "int8"], 1, "calibration frames"),
    (["--precision", "int8", "--calib", "{empty}"], 1, "no images or videos"),
    (["--calib", "{empty}"], 1, "int8"),
    (["--precision", "int8", "--calib", "{video}", "--trt", "--int8-layout", "cpu"], 1, "TensorRT cannot build"),
    (["--static", "48", "64"], 2, "64"),
    (["--static", "0x0"], 1, "--static '0x0' is not WIDTHxHEIGHT"),
    (["--static", "4x4"], 1, "--static 4x4 is too small"),
    (["--static", "1x64x48"], 1, "WIDTHxHEIGHT"),
    (["--static-batch", "2"], 1, "needs a static size"),
    (["--opset", "13"], 1, "opset 13"),
    (["--opt", "96x64"], 1, "--opt: for a TensorRT engine build; add --trt, or drop it"),
    (["--max-batch", "4", "--dla-core", "0"], 1, "--max-batch, --dla-core: for a TensorRT engine build"),
    (["--trt", "--opt", "1x64x96"], 1, "--opt '1x64x96' is not WIDTHxHEIGHT"),
    (["--trt", "--max-batch", "0"], 2, "--max-batch"),
    (["--trt", "--dla-core", "0"], 1, "DLA runs fp16 or int8 only"),
    (["--trt", "--static", "64x48", "--opt", "96x64"], 1, "fixed input 64x48 at batch 1; --opt 96x64"),
    (["--trt", "--min", "200x200"], 1, "min <= opt"),
    (["--trt", "--min-batch", "2"], 1, "min <= opt"),
    (["--sample", "{missing}"], 1, "missing.png"),
    (["-o", "{out}.txt"], 1, "must end in .onnx"),
    (["-o", "{tmp}/nowhere/m.onnx"], 1, "does not exist"),
    (["-o", "{tmp}/empty"], 1, "is a folder"),
]


@pytest.mark.parametrize("args, code, needle", BAD_OPTIONS, ids=[" ".join(a) for a, _, _ in BAD_OPTIONS])
def test_each_bad_option_writes_nothing(ckpt, footage, tmp_path, fake_tensorrt, args, code, needle):
    (tmp_path / "empty").mkdir()
    values = {"empty": tmp_path / "empty", "video": footage / "footage.avi", "missing": tmp_path / "missing.png",
              "out": tmp_path / "m.onnx", "tmp": tmp_path}
    args = [a.format(**values) for a in args]
    out = [] if "-o" in args else ["-o", str(tmp_path / "m.onnx")]
    before = sorted(tmp_path.rglob("*"))
    result = runner.invoke(app, ["export", str(ckpt), *out, *args])
    _one_line_error(result, needle, code)
    assert sorted(tmp_path.rglob("*")) == before


def test_bad_inputs(ckpt, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    out = tmp_path / "m.onnx"
    _one_line_error(runner.invoke(app, ["export", str(junk), "-o", str(out)]), "not a")
    _one_line_error(runner.invoke(app, ["export", str(tmp_path / "m.onnx")]), "already ONNX")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["junk.pt"]


def test_onnx_source_refuses_export_options(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    onnx_path = tmp_path / "m.onnx"
    onnx_path.write_bytes(b"not read: the options are refused first")
    result = runner.invoke(app, ["export", str(onnx_path), "--trt", "--precision", "fp16", "--static", "64x48"])
    _one_line_error(result, "--precision, --static: for exporting a checkpoint")
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


@pytest.mark.slow
def test_existing_outputs_need_overwrite(ckpt, tmp_path, monkeypatch):
    out = tmp_path / "m.onnx"
    assert runner.invoke(app, ["export", str(ckpt), "-o", str(out)]).exit_code == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()}
    assert sorted(before) == ["m.onnx", "m.parity.json"]
    again = runner.invoke(app, ["export", str(ckpt), "-o", str(out)])
    _one_line_error(again, f"{out} already exists; pass --overwrite to replace it")
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in tmp_path.iterdir()} == before

    # an earlier failed export of this name counts too; --overwrite replaces it all
    (tmp_path / "m.onnx").rename(tmp_path / "m.failed.onnx")
    (tmp_path / "m.parity.json").rename(tmp_path / "m.failed.parity.json")
    _one_line_error(runner.invoke(app, ["export", str(ckpt), "-o", str(out)]), "m.failed.onnx already exists")
    forced = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--overwrite"])
    assert forced.exit_code == 0, forced.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.parity.json"]

    # the engine and its sidecar, from a checkpoint or from an .onnx, checked before TensorRT is needed
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    (tmp_path / "m.json").write_text("{}")
    _one_line_error(runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--trt", "--overwrite"]),
                    "TensorRT is not installed")
    (tmp_path / "n.json").write_text("{}")
    _one_line_error(runner.invoke(app, ["export", str(ckpt), "-o", str(tmp_path / "n.onnx"), "--trt"]),
                    "n.json already exists; pass --overwrite")
    _one_line_error(runner.invoke(app, ["export", str(out), "--trt"]), "m.json already exists; pass --overwrite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.onnx", "m.parity.json", "n.json"]


def test_trt_without_tensorrt_says_what_to_install(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--trt"])
    _one_line_error(result, "pip install 'mslseg[gpu,tensorrt]'")
    assert "NVIDIA GPU" in result.output
    assert list(tmp_path.iterdir()) == []  # checked before any export


def test_trt_from_onnx_checks_before_importing_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    bad = tmp_path / "x.onnx"
    bad.write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    _one_line_error(runner.invoke(app, ["export", str(bad), "--trt"]), "not an ONNX model")


@pytest.mark.slow
def test_checkpoint_to_engine_against_a_tensorrt_stand_in(ckpt, footage, tmp_path, monkeypatch):
    from tests.export.test_trt_build import _Recorder

    rec = _Recorder("10.9.0")
    monkeypatch.setitem(sys.modules, "tensorrt", rec.module)
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--input", "uint8", "--output", "labels",
                                 "--precision", "int8", "--calib", str(footage / "stills"), "--calib-frames", "4",
                                 "--trt", "--opt", "96x64", "--max", "192x128", "--max-batch", "4"])
    assert result.exit_code == 0, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith(f"wrote {out} (int8, tensorrt layout: --int8-layout auto with --trt; parity:")
    assert line.endswith(f"; engine {tmp_path / 'm.engine'}")
    assert load_meta(out).extra["int8_layout"] == "tensorrt"
    # sizes typed WIDTHxHEIGHT reach TensorRT as NHWC tensor shapes
    assert ("profile", ("input", [1, 32, 48, 3], [1, 64, 96, 3], [4, 128, 192, 3])) in rec.calls
    trt = json.loads((tmp_path / "m.json").read_text())["extra"]["tensorrt"]
    assert trt["profile_sizes"] == {"min": "48x32", "opt": "96x64", "max": "192x128"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.engine", "m.json", "m.onnx", "m.parity.json",
                                                          "m.trt10.timing.cache"]

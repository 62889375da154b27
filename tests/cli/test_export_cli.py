"""`mslseg export`: the summary line, the files it leaves, and one-line errors for bad input."""

from __future__ import annotations

import json
import sys

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


def test_int8_uint8_labels_from_footage(ckpt, footage, tmp_path):
    out = tmp_path / "model.onnx"
    result = runner.invoke(app, [
        "export", str(ckpt), "-o", str(out), "--input", "uint8", "--output", "labels", "--confidence",
        "--precision", "int8", "--calib", str(footage / "footage.avi"), "--calib", str(footage / "stills"),
        "--calib-frames", "6"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"wrote {out} (int8, parity: labels agree")
    meta = load_meta(out)
    got = (meta.precision, meta.input_kind, meta.output_kind, meta.confidence)
    assert got == ("int8", "uint8", "labels", True)
    assert len(meta.source_sha256) == 64
    report = json.loads((tmp_path / "model.parity.json").read_text())
    assert report["passed"] and report["gate"] == 0.97
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.parity.json"]


def test_static_with_samples_and_default_output(ckpt, footage, tmp_path):
    src = tmp_path / "ck.pt"
    src.write_bytes(ckpt.read_bytes())
    result = runner.invoke(app, ["export", str(src), "--static", "48", "64", "--output", "probs", "--rgb",
                                 "--input", "uint8", "--sample", str(footage / "stills" / "0.png")])
    assert result.exit_code == 0, result.output
    assert "on 1 sample," in result.output
    assert (tmp_path / "ck.onnx").exists() and load_meta(tmp_path / "ck.onnx").input_order == "rgb"


def _one_line_error(result, needle):
    assert result.exit_code == 1, result.output
    assert needle in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_bad_inputs(ckpt, tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "m.onnx"
    cases = [
        ([str(junk)], "not a"),
        ([str(ckpt), "--precision", "int8"], "calibration frames"),
        ([str(ckpt), "--precision", "int8", "--calib", str(empty)], "no images or videos"),
        ([str(ckpt), "--calib", str(empty)], "int8"),
    ]
    for args, needle in cases:
        _one_line_error(runner.invoke(app, ["export", *args, "-o", str(out)]), needle)
        assert not out.exists()
    missing = tmp_path / "nowhere" / "m.onnx"
    _one_line_error(runner.invoke(app, ["export", str(ckpt), "-o", str(missing)]), "does not exist")
    _one_line_error(runner.invoke(app, ["export", str(tmp_path / "m.onnx")]), "already ONNX")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "junk.pt"]


def test_unknown_precision_is_a_usage_error(ckpt):
    result = runner.invoke(app, ["export", str(ckpt), "--precision", "fp8"])
    assert result.exit_code == 2


def test_trt_without_tensorrt_says_what_to_install(ckpt, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    out = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(ckpt), "-o", str(out), "--trt"])
    _one_line_error(result, "pip install 'mslseg[gpu]'")
    assert "NVIDIA GPU" in result.output
    assert list(tmp_path.iterdir()) == []  # checked before any export


def test_trt_from_onnx_checks_before_importing_tensorrt(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    bad = tmp_path / "x.onnx"
    bad.write_bytes(np.arange(10, dtype=np.uint8).tobytes())
    _one_line_error(runner.invoke(app, ["export", str(bad), "--trt"]), "not an ONNX model")

"""`mslseg bench` smoke test: a table, the pipeline ratio and JSON, on tiny models."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from tests.runtime import models

runner = CliRunner()


@pytest.mark.slow
def test_bench_torch_and_onnx(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(models.checkpoint()), str(models.onnx_model("float_logits")),
                                 str(models.onnx_model("uint8_labels")), "--batch", "1,2", "--size", "48x32",
                                 "--warmup", "1", "--repeats", "2", "--threads", "1", "--no-torch-fast",
                                 "--pipeline-frames", "6", "--out", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    rows = report["rows"]
    ort = [("onnxruntime", 1), ("onnxruntime", 2)]
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 2), *ort, *ort]
    assert all(r["fps"] > 0 and r["agree"] > 0.99 for r in rows)
    # GFLOPs per frame: PyTorch's count of the .pt and the graph count of its exports agree
    assert rows[0]["gflops"] > 0 and all(r["gflops"] == pytest.approx(rows[0]["gflops"], rel=0.02) for r in rows)
    assert "GFLOPs" in result.output
    assert len(report["pipeline"]) == 2 and report["pipeline"][0]["frames"] == 6
    assert "pipeline float_logits.onnx" in result.output and "wrote" in result.output


def test_bench_bad_arguments(tmp_path):
    result = runner.invoke(app, ["bench", str(models.onnx_model("float_logits")), "--batch", "0,x"])
    assert result.exit_code == 1 and "--batch" in result.output
    result = runner.invoke(app, ["bench", str(tmp_path / "m.xyz")])
    assert result.exit_code == 1 and "unknown model kind" in result.output

"""`mslseg bench` smoke test: a table, the pipeline ratio and JSON, on tiny models."""

from __future__ import annotations

import importlib.util
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


@pytest.mark.slow
def test_bench_bad_arguments(tmp_path):
    result = runner.invoke(app, ["bench", str(models.onnx_model("float_logits")), "--batch", "0,x"])
    assert result.exit_code == 1 and "--batch" in result.output
    result = runner.invoke(app, ["bench", str(tmp_path / "m.xyz")])
    assert result.exit_code == 1 and "unknown model kind" in result.output


def _no_cuda() -> bool:
    import onnxruntime as ort
    import torch

    return not torch.cuda.is_available() and "CUDAExecutionProvider" not in ort.get_available_providers()


@pytest.mark.skipif(not _no_cuda(), reason="needs a machine where neither torch nor ONNX Runtime has CUDA")
def test_bench_cuda_without_cuda_skips_each_row_writes_the_json_and_fails_in_one_line(tmp_path):
    # what scripts/gpu_check.sh's bench stage runs, on a machine whose ONNX Runtime is CPU-only
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(models.checkpoint()), str(models.onnx_model("float_logits")),
                                 str(models.onnx_model("fp16_uint8_labels")), "--device", "cuda", "--size", "48x32",
                                 "--warmup", "0", "--repeats", "1", "--pipeline-frames", "0", "--out", str(out)])
    assert result.exit_code == 1, result.output
    skipped = [ln for ln in result.output.splitlines() if ln.startswith("SKIPPED ")]
    assert [ln.split(":")[0] for ln in skipped] == [
        "SKIPPED tiny.pt (eager)", "SKIPPED tiny.pt (bf16+cl)", "SKIPPED tiny.pt (fp16+cl+graphs)",
        "SKIPPED float_logits.onnx", "SKIPPED fp16_uint8_labels.onnx"]
    assert "CUDAExecutionProvider" in skipped[-1] and "CUDA" in skipped[0]
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no model could run with --device cuda" in errors[0], result.output
    assert result.output.rstrip().endswith(errors[0]) and "Traceback" not in result.output
    report = json.loads(out.read_text())
    assert report["rows"] == [] and [s["row"] for s in report["skipped"]][-1] == "fp16_uint8_labels.onnx"
    assert len(report["skipped"]) == 5 and report["notes"] == skipped


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="needs a machine without TensorRT")
def test_bench_skips_a_row_whose_runtime_is_missing_and_runs_the_rest(tmp_path):
    engine = tmp_path / "model.engine"  # never opened: without TensorRT its row cannot start
    engine.write_bytes(b"not an engine")
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(engine), str(models.onnx_model("float_logits")), "--device", "cpu",
                                 "--size", "48x32", "--warmup", "0", "--repeats", "1", "--threads", "1",
                                 "--pipeline-frames", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert any(ln.startswith("SKIPPED model.engine: ") and "tensorrt" in ln for ln in result.output.splitlines())
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["rows"]] == ["float_logits.onnx"] and report["rows"][0]["fps"] > 0
    assert [s["row"] for s in report["skipped"]] == ["model.engine"]
    assert any(n.startswith("SKIPPED model.engine: ") for n in report["notes"])

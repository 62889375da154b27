"""`mslseg bench` on a CPU: bf16 only where the CPU has it, the CPU's flags, the pipeline ratio's noise."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.runtime.bench import harness as benchmark
from mslseg.runtime.bench.harness import NO_BF16, PipelineRow, cpu_flags, native_bf16, variants_of
from mslseg.runtime.sizes import Size
from tests.runtime import models

runner = CliRunner()

X86_NO_BF16 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx avx2 fma\n"
X86_BF16 = "processor\t: 0\nflags\t\t: avx2 avx512f avx512_vnni avx512_bf16\n"
ARM_BF16 = "processor\t: 0\nFeatures\t: fp asimd asimddp bf16 i8mm\n"


def test_native_bf16_comes_from_the_cpu_flags():
    assert not native_bf16(cpu_flags(X86_NO_BF16))
    assert native_bf16(cpu_flags(X86_BF16)) and native_bf16(cpu_flags(ARM_BF16))
    assert cpu_flags("nothing here") is None and not native_bf16(None)


@pytest.mark.parametrize(("flags", "timed"), [(set(), False), ({"avx2", "amx_bf16"}, True)])
def test_bf16_is_timed_only_on_a_cpu_with_native_bf16(monkeypatch, flags, timed):
    monkeypatch.setattr(benchmark, "cpu_flags", lambda: flags)
    notes: list[str] = []
    names = [name for name, _ in variants_of(models.checkpoint(), True, "cpu", notes)]
    assert ("bf16+cl" in names) is timed and "eager" in names
    assert notes == ([] if timed else [NO_BF16])


def _row(pipeline, lo, hi):
    return PipelineRow("m.onnx", 1, Size(48, 32), 6, pipeline, (lo + hi) / 2, (lo, hi))


def test_a_pipeline_ratio_whose_spread_includes_one_is_noise():
    assert _row((9.0, 10.0, 10.5), 9.5, 10.2).within_noise
    assert "within noise" in _row((9.0, 10.0, 10.5), 9.5, 10.2).verdict()
    slower = _row((7.0, 7.5, 8.0), 9.8, 10.2)
    assert not slower.within_noise and "costs 25%" in slower.verdict()
    faster = _row((12.0, 12.5), 9.8, 10.2)
    assert "noise" in faster.verdict()
    d = slower.to_dict()
    assert d["size"] == "48x32" and d["within_noise"] is False and d["ratio_range"] == [0.686, 0.816]


@pytest.mark.slow
def test_bench_prints_the_cpu_and_skips_bf16_without_it(tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "cpu_flags", lambda: {"avx2", "fma"})
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(models.checkpoint()), str(models.onnx_model("float_logits")),
                                 "--size", "48x32", "--warmup", "0", "--repeats", "2", "--threads", "1",
                                 "--pipeline-frames", "4", "--pipeline-repeats", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "CPU:" in result.output and "native bf16: no" in result.output and NO_BF16 in result.output
    assert "over 2 runs of 4 frames" in result.output
    report = json.loads(out.read_text())
    assert report["notes"] == [NO_BF16] and report["machine"]["native_bf16"] is False
    assert report["machine"]["cpu_flags"] == ["avx2", "fma"] and report["machine"]["torch_cpu_capability"]
    assert [r["variant"] for r in report["rows"]] == ["eager", "fp32"]
    assert all(r["size"] == "48x32" and r["ms_range"][0] <= r["ms"] <= r["ms_range"][1] for r in report["rows"])
    (p,) = report["pipeline"]
    assert len(p["pipeline_fps"]) == 2 and isinstance(p["within_noise"], bool)


@pytest.mark.slow
def test_bench_size_is_width_by_height(tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["bench", str(models.onnx_model("uint8_labels")), "--size", "40x24",
                                 "--warmup", "0", "--repeats", "1", "--threads", "1", "--pipeline-frames", "0",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["rows"][0]["size"] == "40x24"
    result = runner.invoke(app, ["bench", str(models.onnx_model("uint8_labels")), "--size", "40"])
    assert result.exit_code == 1 and "WIDTHxHEIGHT" in result.output

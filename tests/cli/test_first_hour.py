"""What a new user meets in the first hour (issue 20): the docs' own-network example, a factory that
does not import, help read through a pipe, exported models where a checkpoint belongs, export's
progress lines and the curves picture."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.models.factory import FactoryModel
from mslseg.runtime.errors import ModelFormatError

ROOT = Path(__file__).resolve().parents[2]
COMMANDS = ("demo", "synth", "train", "adapt", "evaluate", "export", "infer", "bench", "convert")
runner = CliRunner()


def _one_line_error(r, *needles: str) -> str:
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for needle in needles:
        assert needle in r.output, r.output
    return r.output.strip()


def _docs_nets(folder: Path) -> Path:
    """docs/models.md's mynets.py, written where a user would save it."""
    text = (ROOT / "docs" / "models.md").read_text()
    block = re.search(r"```python\n# mynets.py\n(.*?)```", text, re.S)
    assert block, "docs/models.md lost its mynets.py example"
    path = folder / "mynets.py"
    path.write_text(block.group(1))
    return path


def test_docs_own_network_example_builds_with_plain_torch(tmp_path):
    nets = _docs_nets(tmp_path)
    assert not re.search(r"^\s*(import|from)\s+(torchvision|segmentation_models_pytorch|timm)\b",
                         nets.read_text(), re.M), "the example must need nothing beyond mslseg[train]"
    with_aux = FactoryModel(f"python:{nets}:small_segnet", 5)
    single = FactoryModel(f"python:{nets}:small_segnet_single", 5)
    assert with_aux.has_aux and not single.has_aux
    import torch

    main, aux = with_aux.eval()(torch.zeros(1, 3, 64, 96), with_aux=True)
    assert main.shape == aux.shape == (1, 5, 64, 96)
    # every command of the docs and README names the example's own functions
    docs = (ROOT / "docs" / "models.md").read_text() + (ROOT / "README.md").read_text()
    named = set(re.findall(r"python:mynets\.py:(\w+)", docs)) - {"build"}
    assert named == {"small_segnet", "small_segnet_single"}, named


def test_factory_that_fails_to_import_is_one_line(tmp_path, monkeypatch, adapt_cmd):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynets.py").write_text("from torch import nn\nimport torchvision_not_installed_xyz\n\n\n"
                                        "def build(num_classes):\n    return nn.Conv2d(3, num_classes, 1)\n")
    name = "python:mynets.py:build"
    with pytest.raises(ModelFormatError) as exc:
        FactoryModel(name, 3)
    assert str(exc.value) == (f"{name} could not be loaded: No module named 'torchvision_not_installed_xyz' "
                              "(raised in mynets.py line 2); install what it imports or fix the module")
    r = runner.invoke(app, [*adapt_cmd(tmp_path / "run"), "--model", name])
    _one_line_error(r, "could not be loaded", "No module named 'torchvision_not_installed_xyz'", "mynets.py line 2")


def test_factory_that_fails_when_called_is_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nets2.py").write_text("def build(num_classes):\n    return {}[num_classes]\n")
    with pytest.raises(ModelFormatError, match=r"could not be loaded: KeyError: 3 \(raised in nets2.py line 2\)"):
        FactoryModel("python:nets2.py:build", 3)
    # a module that is not there at all keeps its own advice
    with pytest.raises(ModelFormatError, match="cannot import no_such_nets_xyz"):
        FactoryModel("python:no_such_nets_xyz:build", 3)


def test_help_through_a_pipe_is_not_cut():
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "TERMINAL_WIDTH", "LINES")}
    done = subprocess.run([sys.executable, "-c", "from mslseg.cli.app import main; main()", "export", "--help"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    for name in ("--version-compatible", "--no-version-compatible", "--hardware-compat", "--calib-method",
                 "--timing-cache", "no-version-compatible]"):
        assert name in done.stdout, (name, done.stdout)
    assert "…" not in done.stdout, done.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_help_names_no_python_types(command):
    r = runner.invoke(app, [command, "--help"], env={"TERMINAL_WIDTH": "200"})
    assert r.exit_code == 0, r.output
    for leak in ("<list", "range>", "<bool>"):
        assert leak not in r.output, (leak, r.output)


def test_set_and_bench_size_have_metavars():
    assert "KEY=VALUE" in runner.invoke(app, ["adapt", "--help"], env={"TERMINAL_WIDTH": "200"}).output
    assert re.search(r"--size\s+WIDTHxHEIGHT", runner.invoke(app, ["bench", "--help"],
                                                             env={"TERMINAL_WIDTH": "200"}).output)


def test_export_of_a_checkpoint_named_onnx_says_so_with_and_without_trt(cli_ckpt, tmp_path):
    fake = tmp_path / "fake.onnx"
    fake.write_bytes(cli_ckpt.read_bytes())
    said = f"{fake} is not an ONNX file (it looks like a PyTorch checkpoint: rename it to .pt"
    _one_line_error(runner.invoke(app, ["export", str(fake), "-o", str(tmp_path / "x.onnx")]), said)
    _one_line_error(runner.invoke(app, ["export", str(fake), "--trt"]), said)
    assert not (tmp_path / "x.onnx").exists()


def test_evaluate_an_onnx_model_names_the_checkpoint(cli_onnx, synth_data, tmp_path):
    r = runner.invoke(app, ["evaluate", str(cli_onnx), "--data", str(synth_data / "cityscapes"),
                            "--out", str(tmp_path / "eval")])
    _one_line_error(r, f"{cli_onnx} is an ONNX model; mslseg evaluate scores a .pt checkpoint "
                    "(evaluate the checkpoint it was exported from)")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00\x01engine bytes")
    r = runner.invoke(app, ["evaluate", str(engine), "--data", str(synth_data / "cityscapes"),
                            "--out", str(tmp_path / "eval")])
    _one_line_error(r, f"{engine} is a TensorRT engine; mslseg evaluate scores a .pt checkpoint")


@pytest.mark.slow
def test_export_says_each_long_step_on_stderr(cli_ckpt, tmp_path, monkeypatch):
    import mslseg.cli.export as export_cli

    out = tmp_path / "m.onnx"
    captured = runner.invoke(app, ["export", str(cli_ckpt), "-o", str(out)])
    assert captured.exit_code == 0 and captured.stderr == "", captured.stderr  # captured: no progress lines
    # a person watching (stderr is a terminal, which CliRunner's stream is not): a line per step
    monkeypatch.setattr(export_cli, "_stderr_is_terminal", lambda: True)
    out = tmp_path / "m2.onnx"
    r = runner.invoke(app, ["export", str(cli_ckpt), "-o", str(out)])
    assert r.exit_code == 0, r.output + r.stderr
    steps = r.stderr.strip().splitlines()
    assert [s.split()[1] for s in steps] == ["loading", "tracing", "checking"], steps
    assert steps[0] == f"export: loading {cli_ckpt}"
    assert r.stdout.startswith(f"wrote {out}"), r.stdout


def test_curves_are_titled_with_the_run_and_count_whole_iterations(tmp_path):
    from mslseg.training.plots import curves_figure

    run = tmp_path / "runs" / "short"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model:\n  arch: deeplabv2-resnet18\nmethod:\n  target_loss: iw-msl\n"
                                     "  lambda_target: 0.09\n  multi_level: true\ntarget:\n  root: t\n")
    records = [{"iteration": i, "loss_source": 3.0 - 0.2 * i, "loss_target": -0.01} for i in range(1, 6)]
    records += [{"iteration": i, "eval": {"miou": 0.04}} for i in (2, 4, 5)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    fig = curves_figure(run / "metrics.jsonl")
    assert fig._suptitle.get_text() == "runs/short: iw-msl + multi-level, lambda_T 0.09, deeplabv2-resnet18"
    fig.canvas.draw()
    for ax in fig.axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks
    low, high = fig.axes[1].get_ylim()
    assert high - low >= 2  # a flat mIoU is not magnified to 3.80..4.20

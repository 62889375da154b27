"""Set-ups the CLI tests share, made once per session under tmp_path_factory.

- `synth_data` (tests/conftest.py): the synthetic GTA5-layout source and Cityscapes-layout target.
- `cli_ckpt`: a 5-class ResNet-18 DeepLab-v2 checkpoint (main + aux heads, training size 64x32).
- `cli_onnx`: that checkpoint exported as `mslseg infer` users export it (uint8 frames in, labels out).
- `adapt_cmd(out)`: the `mslseg adapt` arguments of a 4-iteration run on `synth_data`.
- `adapted_run`: the run directory of that command, run once without interruption (a trained checkpoint).

Module fixtures of the same name in a test file take precedence over these, so a file adopts them
by deleting its own copy.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

ADAPT_ITERATIONS = 4


@pytest.fixture(scope="session")
def cli_ckpt(tmp_path_factory) -> Path:
    from mslseg.checkpoint import save_checkpoint
    from mslseg.runtime.sizes import Size
    from tests.helpers import tiny_model

    model, meta = tiny_model(5, multi_level=True, train_size=Size(64, 32))
    return save_checkpoint(tmp_path_factory.mktemp("cli_ckpt") / "five.pt", model, meta)


@pytest.fixture(scope="session")
def cli_onnx(cli_ckpt, tmp_path_factory) -> Path:
    from mslseg.checkpoint import load_model
    from tests.helpers import export_labels_onnx

    model, meta = load_model(cli_ckpt)
    return export_labels_onnx(model, meta, tmp_path_factory.mktemp("cli_onnx") / "five.onnx")


@pytest.fixture(scope="session")
def adapt_cmd(synth_data) -> Callable[[Path], list[str]]:
    """`adapt_cmd(out)`: iw-msl + multi-level, batch 2 at 64x32, a checkpoint every 2 iterations, no
    target_val (best.pt is then the final weights), loaders in-process (bitwise repeatable on the CPU)."""

    def cmd(out: Path) -> list[str]:
        return ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"),
                "--target", str(synth_data / "cityscapes"), "--method", "iw-msl", "--multi-level",
                "--size", "64x32", "--batch", "2", "--iterations", str(ADAPT_ITERATIONS), "--out", str(out),
                "--device", "cpu", "--set", "target_val=null", "--set", "train.workers=0",
                "--set", "train.log_every=1", "--set", "train.checkpoint_every=2"]

    return cmd


@pytest.fixture(scope="session")
def adapted_run(adapt_cmd, tmp_path_factory) -> Path:
    from typer.testing import CliRunner

    from mslseg.cli.app import app

    out = tmp_path_factory.mktemp("adapted") / "run"
    result = CliRunner().invoke(app, adapt_cmd(out))
    assert result.exit_code == 0, result.output
    return out

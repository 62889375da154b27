"""One overwrite policy for every command: an earlier output is refused, before anything is written,
with one sentence naming the path and the flag; `--overwrite` replaces it (export, evaluate, infer,
synth). train/adapt never replace a run: they point at `--resume`.
"""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.checkpoint import save_checkpoint
from mslseg.cli.app import app
from mslseg.runtime.sizes import Size
from tests.helpers import tiny_model
from tests.runtime import models

runner = CliRunner()
SYNTH = ["--source", "1", "--target-train", "1", "--target-val", "0", "--size", "64x32", "--no-video"]


@pytest.fixture(scope="module")
def ckpt19(tmp_path_factory):
    model, meta = tiny_model(19, train_size=Size(64, 32))
    return save_checkpoint(tmp_path_factory.mktemp("c19") / "best.pt", model, meta)


@pytest.fixture(scope="module")
def ckpt5(tmp_path_factory):
    model, meta = tiny_model(5, train_size=Size(64, 32))
    return save_checkpoint(tmp_path_factory.mktemp("c5") / "five.pt", model, meta)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "a.png"
    cv2.imwrite(str(path), np.full((32, 64, 3), 90, np.uint8))
    return path


def _snapshot(folder):
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def _refused(result, path, flag="--overwrite"):
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(path) in lines[0] and flag in lines[0], result.output


def _commands(tmp_path, ckpt19, ckpt5, image, synth_data):
    """name -> (arguments, the output they write), each writing under tmp_path/out*."""
    onnx = tmp_path / "in" / "m.onnx"
    onnx.parent.mkdir()
    shutil.copy(models.onnx_model("uint8_labels"), onnx)
    return {
        "export": (["export", str(ckpt5), "-o", str(tmp_path / "out.onnx")], tmp_path / "out.onnx"),
        "evaluate": (["evaluate", str(ckpt19), "--data", str(synth_data / "cityscapes"), "--out",
                      str(tmp_path / "out_eval")], tmp_path / "out_eval"),
        "infer": (["infer", str(image), "--model", str(onnx), "--out", str(tmp_path / "out_infer"),
                   "--threads", "1"], tmp_path / "out_infer"),
        "synth": (["synth", str(tmp_path / "out_synth"), *SYNTH], tmp_path / "out_synth"),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["export", "evaluate", "infer", "synth"])
def test_an_earlier_output_needs_overwrite(name, tmp_path, ckpt19, ckpt5, image, synth_data):
    args, output = _commands(tmp_path, ckpt19, ckpt5, image, synth_data)[name]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    before = _snapshot(tmp_path)
    _refused(runner.invoke(app, args), output)
    assert _snapshot(tmp_path) == before  # refused before anything was written
    again = runner.invoke(app, [*args, "--overwrite"])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("name", ["evaluate", "infer", "synth"])
def test_a_file_where_an_output_folder_goes_is_refused_even_with_overwrite(name, tmp_path, ckpt19, ckpt5,
                                                                           image, synth_data):
    args, output = _commands(tmp_path, ckpt19, ckpt5, image, synth_data)[name]
    output.write_text("mine")
    for extra in ([], ["--overwrite"]):
        r = runner.invoke(app, [*args, *extra])
        assert r.exit_code == 1 and "is a file; give a folder" in r.output, r.output
    assert output.read_text() == "mine"


def test_an_empty_output_folder_is_fine(tmp_path, ckpt19, ckpt5, image, synth_data):
    args, output = _commands(tmp_path, ckpt19, ckpt5, image, synth_data)["infer"]
    output.mkdir()
    assert runner.invoke(app, args).exit_code == 0


@pytest.mark.slow
def test_evaluate_writes_beside_the_checkpoint_by_default(tmp_path, ckpt19, synth_data):
    ckpt = tmp_path / "run" / "best.pt"
    ckpt.parent.mkdir()
    shutil.copy(ckpt19, ckpt)
    args = ["evaluate", str(ckpt), "--data", str(synth_data / "cityscapes")]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    out = tmp_path / "run" / "eval-best-cityscapes-val"
    assert (out / "scores.json").is_file() and f"wrote {out}/scores.json" in r.output
    _refused(runner.invoke(app, args), out)  # the earlier scores are not replaced silently


def test_train_never_replaces_a_run(tmp_path, synth_data):
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes(b"an earlier run")
    r = runner.invoke(app, ["train", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--iterations", "1",
                            "--out", str(run), "--set", "target_val=null"])
    _refused(r, run, "--resume")
    assert (run / "last.pt").read_bytes() == b"an earlier run" and sorted(p.name for p in run.iterdir()) == ["last.pt"]

"""Bad input through the CLI: exit 1 (2 for usage), one line naming the problem and the file, no
traceback, nothing half-written; inputs are never modified. The table: docs/bad-inputs.md.

Cases covered elsewhere: dataset layouts, labels of another size, label ids outside the mapping,
unreadable dataset files (tests/mslseg/test_data_errors.py); configs with unknown or mistyped keys
(tests/cli/test_train_cli.py); frames of wrong dtype/channels/NaN (tests/runtime/test_input_checks.py);
export options (tests/cli/test_export_cli.py); code-running pickles as own checkpoints
(tests/mslseg/test_checkpoint.py)."""

import hashlib
import pickle

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mslseg.checkpoint import save_checkpoint
from mslseg.classes import default_class_names, palette_for
from mslseg.cli.app import app
from mslseg.data.synthetic import write_target_video
from mslseg.models import deeplabv2
from mslseg.runtime.metadata import ModelMeta

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=5, multi_level=True).eval()
    names = default_class_names(5)
    meta = ModelMeta(num_classes=5, class_names=names, palette=palette_for(names), train_size=(32, 64))
    ckpt = save_checkpoint(root / "five.pt", model, meta)
    from mslseg.export import export_onnx

    onnx_path = export_onnx(model, meta, root / "five.onnx", input_kind="uint8", output_kind="labels", slim=False)
    video = write_target_video(root / "clip.mp4", 6, (64, 32), 5, seed=1)
    (root / "zero.mp4").write_bytes(b"")
    (root / "corrupt.mp4").write_bytes(b"\0" * 4096)
    (root / "empty").mkdir()
    images = root / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((32, 64, 3), 80, np.uint8))
    (images / "b.png").write_bytes(b"\x89PNG not really")
    cv2.imwrite(str(root / "gray.png"), np.full((32, 64), 90, np.uint8))
    cv2.imwrite(str(root / "deep.png"), np.full((32, 64, 3), 40000, np.uint16))
    return {"root": root, "ckpt": ckpt, "onnx": onnx_path, "video": video}


def _one_line_error(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1, result.output


@pytest.mark.parametrize("name, needle", [("zero.mp4", "cannot decode"),
                                          ("corrupt.mp4", "cannot decode"),
                                          ("empty", "holds no images or videos"),
                                          ("missing.mp4", "missing.mp4")])
def test_infer_bad_sources(files, tmp_path, name, needle):
    r = runner.invoke(app, ["infer", str(files["root"] / name), "--model", str(files["onnx"]),
                            "--out", str(tmp_path / "o")])
    _one_line_error(r)
    assert needle in r.output and name in r.output
    assert not any(p.suffix in (".mp4", ".png") for p in (tmp_path / "o").rglob("*"))


def test_infer_skips_an_unreadable_image_and_keeps_the_rest(files, tmp_path):
    r = runner.invoke(app, ["infer", str(files["root"] / "images"), "--model", str(files["onnx"]),
                            "--out", str(tmp_path / "o")])
    _one_line_error(r)
    assert "b.png" in r.output and "skipped" in r.output
    assert (tmp_path / "o" / "summary.json").is_file()
    assert list((tmp_path / "o").rglob("a*.png")) or list((tmp_path / "o").rglob("a*.jpg"))


@pytest.mark.parametrize("name", ["gray.png", "deep.png"])
def test_infer_converts_grayscale_and_16_bit_images(files, tmp_path, name):
    r = runner.invoke(app, ["infer", str(files["root"] / name), "--model", str(files["onnx"]),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output


def test_onnx_without_mslseg_metadata(files, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.UINT8, [1, 2, 2, 3])],
                              [helper.make_tensor_value_info("output", TensorProto.UINT8, [1, 2, 2, 3])])
    plain = tmp_path / "plain.onnx"
    onnx.save_model(helper.make_model(graph), str(plain))
    for args in (["infer", str(files["video"]), "--model", str(plain), "--out", str(tmp_path / "o")],
                 ["export", str(plain), "--trt"]):
        r = runner.invoke(app, args)
        _one_line_error(r)
        assert "no mslseg metadata" in r.output and "plain.onnx" in r.output


def test_checkpoint_for_another_number_of_classes(files, synth_data, tmp_path):
    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--init", str(files["ckpt"]), "--source",
                            str(synth_data / "gta5"), "--target", str(synth_data / "cityscapes"),
                            "--size", "64x32", "--iterations", "1", "--out", str(tmp_path / "run"),
                            "--set", "target_val=null"])
    _one_line_error(r)
    assert "5 classes" in r.output and "19" in r.output
    assert not (tmp_path / "run" / "last.pt").exists()
    r = runner.invoke(app, ["evaluate", str(files["ckpt"]), "--data", str(synth_data / "cityscapes"),
                            "--out", str(tmp_path / "ev")])
    _one_line_error(r)
    assert "5 classes" in r.output


@pytest.mark.parametrize("args", [["infer", "x.mp4", "--model", "m.onnx", "--batch", "0"],
                                  ["infer", "x.mp4", "--model", "m.onnx", "--stride", "0"],
                                  ["train", "--iterations", "0"],
                                  ["export", "m.pt", "--calib-frames", "0"],
                                  ["synth", "out", "--size", "4x2"]])
def test_out_of_range_numbers_are_usage_errors(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("protocol", [2, 4])
def test_foreign_weights_that_would_run_code_run_nothing(tmp_path, synth_data, protocol):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "GTA5_msl.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"conv1.weight": Evil()}}, f, protocol=protocol)
    for args in (["convert", str(evil), str(tmp_path / "o.pt"), "--from", "msl"],
                 ["adapt", "-c", "synthetic", "--init", str(evil), "--init-format", "msl", "--source",
                  str(synth_data / "gta5"), "--target", str(synth_data / "cityscapes"), "--iterations", "1",
                  "--out", str(tmp_path / "run")]):
        r = runner.invoke(app, args)
        _one_line_error(r)
        assert "GTA5_msl.pth" in r.output
    assert not marker.exists()
    assert not (tmp_path / "o.pt").exists()


def _digest(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_inputs_are_never_modified(files, synth_data, tmp_path):
    inputs = [files["root"], synth_data]
    before = [_digest(f) for f in inputs]
    runs = [
        ["infer", str(files["video"]), str(files["root"] / "gray.png"), "--model", str(files["onnx"]),
         "--out", str(tmp_path / "inf")],
        ["export", str(files["ckpt"]), "-o", str(tmp_path / "e.onnx"), "--precision", "int8",
         "--calib", str(files["video"]), "--gate", "0.5"],
        ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target", str(synth_data / "cityscapes"),
         "--size", "64x32", "--iterations", "1", "--out", str(tmp_path / "run"), "--set", "target_val=null"],
    ]
    for args in runs:
        r = runner.invoke(app, args)
        assert r.exit_code == 0, (args, r.output)
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run" / "best.pt"), "--data", str(synth_data / "cityscapes"),
                            "--size", "64x32", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert [_digest(f) for f in inputs] == before

"""Bad input through the CLI: exit 1 (2 for usage), one line naming the problem and the file, no
traceback, nothing half-written; inputs are never modified. The table: docs/bad-inputs.md.

Cases covered elsewhere: every DataError of the dataset readers, one by one
(tests/mslseg/test_data_errors.py; here a few of them through the CLI, with and without loader
workers); unknown config keys given with --set (tests/cli/test_train_cli.py); frames of wrong
dtype/channels/NaN handed to the Segmenter (tests/runtime/test_input_checks.py); export options
(tests/cli/test_export_cli.py); code-running pickles as own checkpoints (tests/mslseg/test_checkpoint.py)."""

import hashlib
import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.checkpoint import save_checkpoint
from mslseg.cli.app import app
from mslseg.data.synthetic import write_target_video
from mslseg.runtime.sizes import Size
from tests.helpers import export_labels_onnx, tiny_model, write_code_pickle

runner = CliRunner()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    model, meta = tiny_model(5, multi_level=True, train_size=Size(64, 32))
    ckpt = save_checkpoint(root / "five.pt", model, meta)
    onnx_path = export_labels_onnx(model, meta, root / "five.onnx")
    video = write_target_video(root / "clip.mp4", 6, "64x32", 5, seed=1)
    (root / "zero.mp4").write_bytes(b"")
    (root / "corrupt.mp4").write_bytes(b"\0" * 4096)
    (root / "empty").mkdir()
    images = root / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), np.full((32, 64, 3), 80, np.uint8))
    (images / "b.png").write_bytes(b"\x89PNG not really")
    cv2.imwrite(str(root / "gray.png"), np.full((32, 64), 90, np.uint8))
    cv2.imwrite(str(root / "deep.png"), np.full((32, 64, 3), 40000, np.uint16))
    cv2.imwrite(str(root / "rgba.png"), np.full((32, 64, 4), 70, np.uint8))
    cv2.imwrite(str(root / "nan.tiff"), np.full((32, 64, 3), np.nan, np.float32))
    return {"root": root, "ckpt": ckpt, "onnx": onnx_path, "video": video}


@pytest.fixture(scope="module")
def ckpt19(tmp_path_factory):
    model, meta = tiny_model(19)
    return save_checkpoint(tmp_path_factory.mktemp("c19") / "c19.pt", model, meta)


def _one_line_error(result, code=1):
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    if code == 1:
        assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1, result.output


@pytest.mark.parametrize("name, needle", [("zero.mp4", "cannot decode"),
                                          ("corrupt.mp4", "cannot decode"),
                                          ("empty", "holds no images, videos or bags"),
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


@pytest.mark.parametrize("name", ["gray.png", "deep.png", "rgba.png"])
def test_infer_converts_grayscale_16_bit_and_rgba_images(files, tmp_path, name):
    r = runner.invoke(app, ["infer", str(files["root"] / name), "--model", str(files["onnx"]),
                            "--out", str(tmp_path / "o")])
    assert r.exit_code == 0, r.output
    labels = cv2.imread(str(tmp_path / "o" / "labels" / name.split(".")[0] / f"{name.split('.')[0]}.png"),
                        cv2.IMREAD_UNCHANGED)
    assert labels.shape == (32, 64) and labels.dtype == np.uint8


def test_infer_refuses_a_float_image_and_writes_nothing(files, tmp_path):
    r = runner.invoke(app, ["infer", str(files["root"] / "nan.tiff"), "--model", str(files["onnx"]),
                            "--out", str(tmp_path / "o")])
    _one_line_error(r)
    assert "nan.tiff" in r.output and "not a readable image" in r.output
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["areas.csv", "summary.json"]  # no empty outputs


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
                                  ["infer", "x.mp4", "--model", "m.onnx", "--alpha", "2"],
                                  ["infer", "x.mp4", "--model", "m.onnx", "--threads", "0"],
                                  ["train", "--iterations", "0"],
                                  ["adapt", "--lambda-target", "-1"],
                                  ["evaluate", "m.pt", "--data", "d", "--limit", "0"],
                                  ["export", "m.pt", "--calib-frames", "0"],
                                  ["export", "m.pt", "--gate", "101"],
                                  ["bench", "m.onnx", "--repeats", "0"],
                                  ["convert", "a.pth", "b.pt", "--from", "msl", "--num-classes", "0"],
                                  ["synth", "out", "--source", "0"]])
def test_out_of_range_numbers_are_usage_errors(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("extra, needle", [
    (["--size", "0x4"], "--size '0x4' is not WIDTHxHEIGHT"),
    (["--start", "abc"], "cannot read position 'abc'"),
    (["--start", "100"], "clip.mp4 has 6 frames; the range starts past its end"),
    (["--start", "4", "--end", "2"], "the range 4..2 of"),
    (["--model", "zero.onnx"], "zero.onnx does not exist or is empty"),
])
def test_values_mslseg_parses_are_one_line_errors(files, tmp_path, extra, needle):
    (files["root"] / "zero.onnx").touch()
    model = [] if "--model" in extra else ["--model", str(files["onnx"])]
    extra = [str(files["root"] / v) if v == "zero.onnx" else v for v in extra]
    r = runner.invoke(app, ["infer", str(files["video"]), *model, *extra, "--out", str(tmp_path / "o")])
    _one_line_error(r)
    assert needle in r.output, r.output
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("protocol", [2, 4])
def test_foreign_weights_that_would_run_code_run_nothing(tmp_path, synth_data, protocol):
    marker = tmp_path / "pwned"

    evil = write_code_pickle(tmp_path / "GTA5_msl.pth", marker, lambda obj: {"state_dict": {"conv1.weight": obj}},
                             protocol)
    adapt = ["adapt", "-c", "synthetic", "--init", str(evil), "--source", str(synth_data / "gta5"), "--target",
             str(synth_data / "cityscapes"), "--iterations", "1", "--out", str(tmp_path / "run")]
    for args in (["convert", str(evil), str(tmp_path / "o.pt"), "--from", "msl"],
                 adapt + ["--init-format", "msl"],  # foreign weights
                 adapt,  # read as an own checkpoint
                 ["evaluate", str(evil), "--data", str(synth_data / "cityscapes")],
                 ["export", str(evil), "-o", str(tmp_path / "o.onnx")]):
        r = runner.invoke(app, args)
        _one_line_error(r)
        assert "GTA5_msl.pth" in r.output
    assert not marker.exists()
    assert not (tmp_path / "o.pt").exists() and not (tmp_path / "o.onnx").exists()
    assert not (tmp_path / "run" / "last.pt").exists()


def _first(folder, pattern):
    return sorted(folder.rglob(pattern))[0]


def _breaks(case):
    """(mutation of a copied dataset root, what the message says) for `case`."""
    def label(value, shape=(32, 64)):
        return lambda root: cv2.imwrite(str(_first(root / "gtFine" / "val", "*labelIds.png")), np.full(shape, value, np.uint8))

    def image(data):
        return lambda root: _first(root / "leftImg8bit" / "val", "*.png").write_bytes(data)

    def colour_label(root):
        target = _first(root / "gtFine" / "val", "*labelIds.png")
        cv2.imwrite(str(target), np.dstack([np.full((32, 64), v, np.uint8) for v in (7, 8, 11)]))

    return {
        "label of another size": (label(7, (10, 10)), "is 10x10 but its image", "labelIds.png"),
        "label id outside the mapping": (label(250), "outside the Cityscapes label ids", "labelIds.png"),
        "colour label": (colour_label, "is a colour image", "labelIds.png"),
        "zero-byte image": (image(b""), "is empty", "leftImg8bit.png"),
        "truncated image": (image(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0"), "corrupt or not an image", "leftImg8bit.png"),
        "empty folder": (lambda root: shutil.rmtree(root / "leftImg8bit" / "val"), "leftImg8bit/val", "leftImg8bit/val"),
        "wrong layout": (lambda root: shutil.rmtree(root / "gtFine"), "gtFine", "gtFine"),
    }[case]


@pytest.mark.parametrize("case", ["label of another size", "label id outside the mapping", "colour label",
                                  "zero-byte image", "truncated image", "empty folder", "wrong layout"])
def test_bad_datasets_through_evaluate(ckpt19, synth_data, tmp_path, case):
    root = tmp_path / "cityscapes"
    shutil.copytree(synth_data / "cityscapes", root)
    mutate, needle, file_part = _breaks(case)
    mutate(root)
    r = runner.invoke(app, ["evaluate", str(ckpt19), "--data", str(root), "--out", str(tmp_path / "ev")])
    _one_line_error(r)
    assert needle in r.output and file_part in r.output, r.output
    assert not (tmp_path / "ev" / "scores.json").exists()


@pytest.mark.slow
def test_a_data_error_in_a_loader_worker_is_still_one_line(synth_data, tmp_path):
    source = tmp_path / "gta5"
    shutil.copytree(synth_data / "gta5", source)
    for png in (source / "images").glob("*.png"):
        png.write_bytes(b"")
    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--source", str(source), "--target",
                            str(synth_data / "cityscapes"), "--size", "64x32", "--iterations", "2", "--out",
                            str(tmp_path / "run"), "--set", "target_val=null", "--set", "train.workers=1"])
    _one_line_error(r)
    assert "is empty" in r.output and "gta5/images/" in r.output and "Original Traceback" not in r.output
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.parametrize("config, override, needle", [
    ("train:\n  iterations: [1, 2\n", None, "is not valid YAML at line 3"),
    ("train:\n  iteratons: 3\n", None, "unknown config key 'train.iteratons'; did you mean 'iterations'?"),
    ("optim:\n  lr: fast\n", None, "optim.lr: 'fast' is not a valid float"),
    (None, "train.checkpoint_every=0", "train.checkpoint_every must be >= 1"),
    (None, "train.workers=-1", "train.workers must be >= 0"),
    (None, "optim.momentum=1.5", "optim.momentum must be in [0, 1)"),
])
def test_bad_configs(synth_data, tmp_path, config, override, needle):
    args = ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target", str(synth_data / "cityscapes"),
            "--iterations", "1", "--out", str(tmp_path / "run")]
    if config is not None:
        (tmp_path / "bad.yaml").write_text(config)
        args[2] = str(tmp_path / "bad.yaml")
    r = runner.invoke(app, args + (["--set", override] if override else []))
    _one_line_error(r)
    assert needle in r.output, r.output
    assert (config is None or "bad.yaml" in r.output) and not (tmp_path / "run").exists()


def test_export_static_shape_out_of_range(files, tmp_path):
    r = runner.invoke(app, ["export", str(files["ckpt"]), "-o", str(tmp_path / "s.onnx"), "--static", "0x0"])
    _one_line_error(r)
    assert "--static '0x0' is not WIDTHxHEIGHT" in r.output and not list(tmp_path.iterdir())


def _digest(folder):
    """Content and modification time of every file: a rewrite with the same bytes counts too."""
    return {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.slow
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
    trained = _digest(tmp_path / "run")
    r = runner.invoke(app, ["evaluate", str(tmp_path / "run" / "best.pt"), "--data", str(synth_data / "cityscapes"),
                            "--size", "64x32", "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert _digest(tmp_path / "run") == trained  # the evaluated checkpoint
    assert [_digest(f) for f in inputs] == before

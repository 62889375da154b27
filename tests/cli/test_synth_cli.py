import json

import cv2
from typer.testing import CliRunner

from mslseg.cli.app import app

runner = CliRunner()
SMALL = ["--source", "2", "--target-train", "2", "--target-val", "1", "--size", "64x32"]


def test_synth_writes_layouts_video_and_one_line_summary(tmp_path):
    out = tmp_path / "data"
    result = runner.invoke(app, ["synth", str(out), *SMALL, "--video-frames", "5", "--seed", "3"])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1
    assert str(out / "gta5") in lines[0] and str(out / "cityscapes") in lines[0] and "target.mp4" in lines[0]
    assert len(list((out / "gta5" / "images").glob("*.png"))) == 2
    assert len(list((out / "cityscapes" / "gtFine" / "val" / "synthcity").glob("*_labelIds.png"))) == 1
    image = cv2.imread(str(out / "gta5" / "images" / "00001.png"))
    assert image.shape == (32, 64, 3)
    cap = cv2.VideoCapture(str(out / "target.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    cap.release()
    assert json.loads((out / "synth.json").read_text())["seed"] == 3


def test_synth_refuses_non_empty_out_unless_overwrite(tmp_path):
    out = tmp_path / "data"
    assert runner.invoke(app, ["synth", str(out), *SMALL, "--no-video"]).exit_code == 0
    again = runner.invoke(app, ["synth", str(out), *SMALL, "--no-video"])
    assert again.exit_code == 1
    assert "not empty" in again.output and "--overwrite" in again.output
    assert len(again.output.strip().splitlines()) == 1 and "Traceback" not in again.output
    forced = runner.invoke(app, ["synth", str(out), *SMALL, "--no-video", "--overwrite"])
    assert forced.exit_code == 0 and "target.mp4" not in forced.output


def test_synth_bad_options_are_one_line_errors(tmp_path):
    """Typer's ranges are usage errors (2); a size, parsed by the one size parser, is exit 1."""
    for bad, code in ((["--size", "64"], 1), (["--size", "4x2"], 1), (["--source", "0"], 2),
                      (["--target-val", "-1"], 2)):
        result = runner.invoke(app, ["synth", str(tmp_path / "x"), *bad])
        assert result.exit_code == code, (bad, result.output)
    assert not (tmp_path / "x").exists()

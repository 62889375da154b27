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


def test_synth_drift_writes_a_drifting_drive_with_a_label_map_per_frame(tmp_path):
    """Light falls in the dusk segment and fog lifts the grey level; every frame has its labels."""
    import numpy as np

    out = tmp_path / "data"
    r = runner.invoke(app, ["synth", str(out), *SMALL, "--no-video", "--drift-frames", "40"])
    assert r.exit_code == 0, r.output
    assert "a 40-frame drifting drive with labels" in r.output
    info = json.loads((out / "drift.json").read_text())
    names = [s["name"] for s in info["segments"]]
    assert names == ["clean", "dusk", "fog", "sudden", "clean again"] and info["segments"][-1]["end"] == 40
    frames = []
    cap = cv2.VideoCapture(str(out / "drift.mp4"))
    while (read := cap.read())[0]:
        frames.append(read[1])
    assert len(frames) == 40 == len(list((out / "drift_labels").glob("*.png")))
    label = cv2.imread(str(out / "drift_labels" / "000039.png"), cv2.IMREAD_UNCHANGED)
    assert label.shape == (32, 64) and label.dtype == np.uint8 and len(np.unique(label)) >= 4
    seg = {s["name"]: s for s in info["segments"]}
    dusk, fog = seg["dusk"], seg["fog"]
    assert frames[dusk["end"] - 1].mean() < 0.5 * frames[dusk["start"]].mean()  # dimmed to 30%
    assert frames[fog["end"] - 1].mean() > 1.5 * frames[fog["start"]].mean()  # towards fog's grey
    again = runner.invoke(app, ["synth", str(out), *SMALL, "--no-video", "--overwrite"])
    assert again.exit_code == 0 and not (out / "drift.mp4").exists() and not (out / "drift_labels").exists()

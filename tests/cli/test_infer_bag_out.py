"""`mslseg infer BAG --topic T --bag-out`: an MCAP beside the outputs that reads back as Foxglove reads it."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from tests.fullfs import assert_one_line_error, leftovers, limited, mslseg
from tests.runtime import bags, models
from tests.runtime.test_bag_writer import read_back, stamp

runner = CliRunner()
TOPIC = "/front/image_raw/compressed"


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    shutil.copy(models.onnx_model("uint8_labels"), path)
    return path


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    """Two cameras, png-compressed (lossless, so labels match the same frames run as images)."""
    folder = tmp_path_factory.mktemp("bag")
    return bags.write_mcap(folder / "run_0412.mcap", {TOPIC: models.frames(4, seed=8),
                                                      "/rear/image_raw/compressed": models.frames(2, seed=9)},
                           encoding="png", frame_id="front_optical")


def _infer(*args):
    return runner.invoke(app, ["infer", *map(str, args), "--threads", "1"])


def test_bag_out_holds_the_labels_of_the_chosen_camera(tmp_path, model, bag):
    done = _infer(bag, "--topic", TOPIC, "--model", model, "--out", tmp_path / "o", "--bag-out", "--bag-out-source",
                  "--areas", "none")
    assert done.exit_code == 0, done.output
    (mcap,) = (tmp_path / "o").glob("*.mcap")
    assert mcap.name == "run_0412_front_image_raw_compressed.mcap"
    got = read_back(mcap)
    assert sorted(got) == sorted([TOPIC, *(TOPIC + s for s in ("/mslseg/labels", "/mslseg/overlay/compressed",
                                                               "/mslseg/classes"))])
    labels = [m for _, _, m in got[TOPIC + "/mslseg/labels"]]
    assert [stamp(m) for m in labels] == bags.default_stamps(4)
    assert {m.header.frame_id for m in labels} == {"front_optical"}
    # the same frames run as images give the same label maps
    for i, frame in enumerate(models.frames(4, seed=8)):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), frame)
    assert _infer(tmp_path / "f*.png", "--model", model, "--out", tmp_path / "img").exit_code == 0
    (folder,) = (tmp_path / "img" / "labels").iterdir()
    for i, m in enumerate(labels):
        want = cv2.imread(str(folder / f"f{i}.png"), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(np.frombuffer(bytes(m.data), np.uint8).reshape(want.shape), want)
    # the camera copied in as recorded: its png bytes unchanged
    recorded = [bytes(m.data) for _, _, m in read_back(bag)[TOPIC]]
    assert [bytes(m.data) for _, _, m in got[TOPIC]] == recorded


def test_bag_out_refuses_images_and_a_source_copy_alone(tmp_path, model):
    cv2.imwrite(str(tmp_path / "a.png"), models.frames(1)[0])
    done = _infer(tmp_path / "a.png", "--model", model, "--out", tmp_path / "o", "--bag-out")
    assert done.exit_code == 1 and "error:" in done.output and "have none" in done.output, done.output
    assert "Traceback" not in done.output and not (tmp_path / "o").exists()
    done = _infer(tmp_path / "a.png", "--model", model, "--out", tmp_path / "o", "--bag-out-source")
    assert done.exit_code == 1 and "add --bag-out" in done.output, done.output


@pytest.mark.slow
def test_bag_out_past_a_file_size_limit_is_one_line_and_leaves_nothing(tmp_path, model):
    bag = bags.write_mcap(tmp_path / "big.mcap", {"/cam": bags.frames(12, 48, 64)})  # noise: incompressible
    out = tmp_path / "run"
    done = mslseg("infer", bag, "--topic", "/cam", "--model", model, "--out", out, "--threads", "1", "--bag-out",
                  "--bag-out-source", "--labels", "none", "--areas", "none", "--no-overlay",
                  preexec_fn=limited(64 * 1024))
    assert_one_line_error(done, "big_cam.mcap in", "grew past the largest file allowed (File too large")
    assert not list(out.glob("*.mcap")) and not leftovers(out)

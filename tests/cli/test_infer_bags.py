"""`mslseg infer` on robot bags (real MCAP / rosbag2 / ROS 1 files written by tests/runtime/bags.py):
the topic picked, the listing without --topic, labels equal to the same frames run as images, stamps in
label names, npz and area rows, --start/--end in bag time, resume, and a cluster run equal to a local one."""

from __future__ import annotations

import csv
import json
import shutil
import threading

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from tests.cli.test_infer_cluster import _same_outputs, ray_session  # noqa: F401 (a fixture, used below)
from tests.runtime import bags, models

runner = CliRunner()
FRONT, REAR = "/front/image_raw", "/rear/image_raw"
N = 6


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    shutil.copy(models.onnx_model("uint8_labels"), path)
    return path


@pytest.fixture(scope="module")
def cameras():
    return {FRONT: bags.frames(N, 48, 64, seed=1), REAR: bags.frames(N, 48, 64, seed=2)}


@pytest.fixture(scope="module")
def two_camera_mcap(tmp_path_factory, cameras):
    return bags.write_mcap(tmp_path_factory.mktemp("bag") / "run.mcap", cameras)


def _infer(*args):
    return runner.invoke(app, ["infer", *map(str, args), "--threads", "1", "--codec", "mp4v"])


def _labels(folder):
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


def test_topic_picks_the_camera_and_labels_equal_the_frames_as_images(tmp_path, model, cameras, two_camera_mcap):
    out = tmp_path / "out"
    r = _infer(two_camera_mcap, "--topic", REAR, "--model", model, "--out", out)
    assert r.exit_code == 0, r.output
    stamps = bags.default_stamps(N)
    labels = _labels(out / "labels" / "run_rear_image_raw")
    assert list(labels) == [f"{i:06d}_{s}.png" for i, s in enumerate(stamps)]
    # the same frames (bgr8 is lossless) as PNG images: the same label maps
    images = tmp_path / "images"
    images.mkdir()
    for i, frame in enumerate(cameras[REAR]):
        cv2.imwrite(str(images / f"{i:06d}.png"), frame)
    r = _infer(images, "--model", model, "--out", tmp_path / "ref")
    assert r.exit_code == 0, r.output
    ref = _labels(tmp_path / "ref" / "labels" / "images")
    assert all(np.array_equal(a, b) for a, b in zip(labels.values(), ref.values(), strict=True))
    # and not the other camera's
    front = runner.invoke(app, ["infer", str(two_camera_mcap), "--topic", FRONT, "--model", str(model),
                                "--out", str(tmp_path / "front"), "--threads", "1", "--no-overlay"])
    assert front.exit_code == 0, front.output
    assert not all(np.array_equal(a, b) for a, b in
                   zip(labels.values(), _labels(tmp_path / "front" / "labels" / "run_front_image_raw").values(), strict=True))
    rows = list(csv.DictReader((out / "areas.csv").open()))
    assert [int(r["stamp_ns"]) for r in rows] == stamps
    assert [r["source"] for r in rows] == [f"{two_camera_mcap}:{REAR}"] * N
    assert float(rows[1]["time_s"]) == pytest.approx(bags.PERIOD_NS / 1e9, abs=1e-4)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sources"][0]["kind"] == "bag" and summary["sources"][0]["frames"] == N
    assert (out / "run_rear_image_raw_overlay.mp4").is_file()


def test_no_topic_lists_the_image_topics_and_asks_for_one(tmp_path, model, two_camera_mcap):
    r = _infer(two_camera_mcap, "--model", model, "--out", tmp_path / "o")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "choose one with --topic" in r.output and FRONT in r.output and REAR in r.output
    assert "64x48" in r.output and f"{N} msgs" in r.output and len(r.output.strip().splitlines()) <= 4
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_topic_without_a_bag_and_a_missing_topic_are_one_line(tmp_path, model, two_camera_mcap):
    video = models.write_video(tmp_path / "clip.mp4", n=3)
    r = _infer(video, "--topic", FRONT, "--model", model, "--out", tmp_path / "a")
    assert r.exit_code == 1 and "no bag" in r.output
    r = _infer(two_camera_mcap, "--topic", "/nope", "--model", model, "--out", tmp_path / "b")
    assert r.exit_code == 1 and "/nope" in r.output and FRONT in r.output and "Traceback" not in r.output


def test_npz_and_json_areas_carry_stamps_and_empty_ones_for_videos(tmp_path, model, two_camera_mcap):
    video = models.write_video(tmp_path / "clip.mp4", n=3)
    out = tmp_path / "out"
    r = _infer(two_camera_mcap, video, "--topic", FRONT, "--model", model, "--out", out,
               "--labels", "npz", "--areas", "json", "--stride", "2")
    assert r.exit_code == 0, r.output
    stamps = bags.default_stamps(N)[::2]
    with np.load(out / "labels" / "run_front_image_raw.npz") as data:
        assert list(data["frame_index"]) == [0, 2, 4] and list(data["stamp_ns"]) == stamps
    with np.load(out / "labels" / "clip.npz") as data:
        assert "stamp_ns" not in data.files
    rows = [json.loads(line) for line in (out / "areas.jsonl").read_text().splitlines()]
    assert [r["stamp_ns"] for r in rows] == stamps + [None, None]


def test_start_and_end_are_bag_time_from_the_first_stamp(tmp_path, model, cameras):
    # a camera that paused: 0, 0.1, 0.2 s, then 1.0, 1.1, 1.2 s (10 fps by its median interval)
    t0 = bags.T0_NS
    stamps = [t0 + int(s * 1e9) for s in (0, 0.1, 0.2, 1.0, 1.1, 1.2)]
    bag = bags.write_rosbag2_sqlite(tmp_path / "paused", {FRONT: cameras[FRONT]}, stamps_ns=stamps)
    out = tmp_path / "out"
    r = _infer(bag, "--topic", FRONT, "--model", model, "--out", out, "--start", "0.5s", "--end", "1.15s",
               "--no-overlay")
    assert r.exit_code == 0, r.output
    assert list(_labels(out / "labels" / "paused_front_image_raw")) == [f"00000{i}_{stamps[i]}.png" for i in (3, 4)]
    r = _infer(bag, "--topic", FRONT, "--model", model, "--out", tmp_path / "idx", "--start", "1", "--end", "3",
               "--no-overlay")
    assert r.exit_code == 0, r.output
    assert [n[:6] for n in _labels(tmp_path / "idx" / "labels" / "paused_front_image_raw")] == ["000001", "000002"]


def test_resume_after_an_interrupted_bag_redoes_it_and_keeps_the_done_one(tmp_path, model, cameras):
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import open_sources
    from mslseg.runtime.segmenter import Segmenter

    folder = tmp_path / "bags"
    folder.mkdir()
    a = bags.write_mcap(folder / "a.mcap", {FRONT: cameras[FRONT]})
    b = bags.write_rosbag1(folder / "b.bag", {FRONT: cameras[REAR]})
    out, ref = tmp_path / "out", tmp_path / "ref"
    stop = threading.Event()

    def on_frame(report):
        if report.name.startswith(str(b)) and report.frames == 2:
            stop.set()

    with Segmenter(model, device="cpu", threads=1) as seg:
        opts = InferOptions(out=out, codec="mp4v")
        first = run_infer(open_sources(str(folder), topic=FRONT), seg, opts, stop=stop, on_frame=on_frame)
        assert first.interrupted and [r.complete for r in first.sources] == [True, False]
        kept = (out / "labels" / "a_front_image_raw").stat().st_mtime_ns
        again = run_infer(open_sources(str(folder), topic=FRONT), seg,
                          InferOptions(out=out, codec="mp4v", resume=True), stop=threading.Event())
        run_infer(open_sources(str(folder), topic=FRONT), seg, InferOptions(out=ref, codec="mp4v"),
                  stop=threading.Event())
    assert [r.resumed for r in again.sources] == [True, False] and again.frames == N
    assert (out / "labels" / "a_front_image_raw").stat().st_mtime_ns == kept
    assert (out / "areas.csv").read_text() == (ref / "areas.csv").read_text()
    for stem in ("a_front_image_raw", "b_front_image_raw"):
        assert (out / ".done" / f"{stem}.json").is_file()
        assert {k: v.tobytes() for k, v in _labels(out / "labels" / stem).items()} == \
            {k: v.tobytes() for k, v in _labels(ref / "labels" / stem).items()}
    assert a.is_file()


@pytest.mark.slow
def test_a_cluster_run_on_two_bags_equals_the_local_run(ray_session, tmp_path, model, cameras):  # noqa: F811
    folder = tmp_path / "bags"
    folder.mkdir()
    bags.write_mcap(folder / "a.mcap", cameras)
    bags.write_rosbag2_sqlite(folder / "b", {FRONT: cameras[REAR][:4]})
    args = ["--topic", FRONT, "--model", str(model), "--codec", "mp4v", "--threads", "1", "--batch", "2"]
    r = runner.invoke(app, ["infer", str(folder), "--out", str(tmp_path / "ref"), *args])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["infer", str(folder), "--out", str(tmp_path / "cluster"), *args,
                            "--cluster", "auto", "--workers", "2"])
    assert r.exit_code == 0, r.output
    assert f"{N + 4} frames" in r.output
    _same_outputs(tmp_path / "ref", tmp_path / "cluster")

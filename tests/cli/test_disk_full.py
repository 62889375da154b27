"""A full disk, a file-size limit and a read-only disk under the commands, run as a user runs them
(`python -m mslseg ...` in its own process): exit 1, one line on stderr naming the folder and the
file, nothing partial left, and what an earlier run wrote unchanged."""

from __future__ import annotations

import errno
import shutil

import pytest

from mslseg.cli.app import _os_error_line
from tests.fullfs import assert_one_line_error, fill, leftovers, limited, mslseg, read_only, snapshot, tmpfs
from tests.runtime import models


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    shutil.copy(models.onnx_model("uint8_labels"), path)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return models.write_video(tmp_path_factory.mktemp("video") / "clip.mp4", n=24)


def _infer(video, model, out, *extra, **kw):
    return mslseg("infer", video, "--model", model, "--out", out, "--threads", "1", *extra, **kw)


def test_infer_onto_a_full_disk_keeps_the_earlier_outputs(tmp_path, model, video):
    with tmpfs(tmp_path / "disk") as disk:
        out = disk / "run"
        assert _infer(video, model, out).returncode == 0
        earlier = snapshot(out)
        fill(disk, 24 * 1024)
        done = _infer(video, model, out, "--overwrite")
        assert_one_line_error(done, f"the disk holding {out}", "is full (No space left on device) while writing",
                              "free some space or choose another output folder")
        assert snapshot(out) == earlier and not leftovers(out)


@pytest.mark.slow
def test_infer_into_a_read_only_folder(tmp_path, model, video):
    with tmpfs(tmp_path / "disk") as disk:
        out = disk / "run"
        assert _infer(video, model, out).returncode == 0
        earlier = snapshot(out)
        read_only(disk)
        assert_one_line_error(_infer(video, model, out, "--overwrite"), f"{out} is on a read-only filesystem",
                              "remount it read-write or choose another output folder")
        assert snapshot(out) == earlier
        # the output folder itself cannot be made: the CLI's own net catches that OSError
        assert_one_line_error(_infer(video, model, disk / "new"), f"{disk} is on a read-only filesystem",
                              "while writing new")


@pytest.mark.slow
def test_infer_video_past_a_file_size_limit(tmp_path, model, video):
    out = tmp_path / "run"
    done = _infer(video, model, out, "--labels", "none", "--areas", "none", preexec_fn=limited(16 * 1024))
    assert_one_line_error(done, "clip_overlay.mp4 in", "grew past the largest file allowed (File too large",
                          "ulimit -f")
    assert not list(out.glob("*.mp4")) and not leftovers(out)


@pytest.mark.slow
def test_infer_failing_at_close_drops_every_partial_output(tmp_path, model, video):
    out = tmp_path / "run"
    done = _infer(video, model, out, preexec_fn=limited(16 * 1024))
    assert_one_line_error(done, "File too large")
    assert not leftovers(out)


def test_synth_onto_a_full_disk(tmp_path):
    with tmpfs(tmp_path / "disk") as disk:
        fill(disk, 64 * 1024)
        done = mslseg("synth", disk / "data", "--source", "4", "--target-train", "4", "--target-val", "2",
                      "--size", "64x32", "--video-frames", "200")
        assert_one_line_error(done, "is full (No space left on device) while writing")
        assert not leftovers(disk)


@pytest.mark.slow
def test_synth_video_past_a_file_size_limit(tmp_path):
    done = mslseg("synth", tmp_path / "data", "--source", "1", "--target-train", "1", "--target-val", "0",
                  "--size", "64x32", "--video-frames", "400", preexec_fn=limited(32 * 1024))
    assert_one_line_error(done, "target.mp4 in", "File too large")
    assert not (tmp_path / "data" / "target.mp4").exists() and not leftovers(tmp_path)


@pytest.mark.slow
def test_export_onto_a_full_then_read_only_disk(tmp_path):
    ckpt = models.checkpoint()
    with tmpfs(tmp_path / "disk", "4m") as disk:  # the model is ~45 MB
        (disk / "m.onnx").write_bytes(b"an earlier export")
        earlier = snapshot(disk)
        done = mslseg("export", ckpt, "--out", disk / "m.onnx", "--overwrite")
        assert_one_line_error(done, f"the disk holding {disk} is full", "while writing m.onnx",
                              f"{disk / 'm.onnx'} is unchanged")
        assert snapshot(disk) == earlier and not leftovers(disk)
        read_only(disk)
        done = mslseg("export", ckpt, "--out", disk / "m2.onnx")
        assert_one_line_error(done, f"{disk} is on a read-only filesystem", "while writing m2.onnx")


def test_the_cli_net_names_only_full_or_forbidden_outputs():
    full = _os_error_line(OSError(errno.ENOSPC, "No space left on device", "runs/a/x.bin"))
    assert full.startswith("the disk holding runs/a is full (No space left on device) while writing x.bin")
    assert "permission denied on runs/a (Permission denied)" in _os_error_line(PermissionError(errno.EACCES, "Permission denied",
                                                                          "runs/a"))
    assert _os_error_line(FileNotFoundError(errno.ENOENT, "No such file or directory", "x")) is None

"""The runtime's writers on a really full disk, past a file-size limit and on a read-only disk:
OutputError naming the folder and the file, nothing partial left, what was there unchanged."""

from __future__ import annotations

import errno
import subprocess
import sys

import numpy as np
import pytest

from mslseg.runtime.errors import MslsegError, OutputError
from mslseg.runtime.io.atomic import atomic_write_bytes, atomic_write_text, describe_write_failure, writing
from mslseg.runtime.io.result_writers import AreaTable, LabelNpz, LabelPngFolder
from mslseg.runtime.io.video_writer import OpenCVWriter, PyAVWriter, h264_available
from mslseg.runtime.metadata import ModelMeta
from tests.fullfs import fill, leftovers, limited, read_only, snapshot, tmpfs

META = ModelMeta(num_classes=3, class_names=("road", "car", "sky"), palette=((0, 0, 0), (1, 1, 1), (2, 2, 2)))


def _noise(n: int, hw=(96, 128)) -> list[np.ndarray]:  # incompressible: fills a disk fast
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (*hw, 3), dtype=np.uint8) for _ in range(n)]


def test_atomic_write_on_a_full_disk_keeps_the_old_file(tmp_path):
    with tmpfs(tmp_path / "disk") as disk:
        atomic_write_text(disk / "scores.json", '{"miou": 0.5}')
        fill(disk, 8 * 1024)
        before = snapshot(disk)
        with pytest.raises(OutputError) as caught:
            atomic_write_bytes(disk / "scores.json", bytes(64 * 1024))
        assert str(caught.value) == (
            f"the disk holding {disk} is full (No space left on device) while writing scores.json; "
            f"free some space or choose another output folder; {disk / 'scores.json'} is unchanged")
        assert snapshot(disk) == before and not leftovers(disk)


def test_atomic_write_on_a_read_only_disk(tmp_path):
    with tmpfs(tmp_path / "disk") as disk:
        read_only(disk)
        with pytest.raises(OutputError, match=r"is on a read-only filesystem \(Read-only file system\) while "
                                              r"writing a\.json; .* was not written"):
            atomic_write_text(disk / "a.json", "{}")


def test_atomic_write_past_a_file_size_limit_is_efbig_not_a_kill(tmp_path):
    code = ("import sys; from mslseg.runtime.io.atomic import atomic_write_bytes\n"
            "from mslseg.runtime.errors import OutputError\n"
            "try:\n    atomic_write_bytes(sys.argv[1], bytes(256 * 1024))\n"
            "except OutputError as e:\n    print(e); sys.exit(1)\n")
    (tmp_path / "big.bin").write_bytes(b"old")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "big.bin")], capture_output=True,
                          text=True, preexec_fn=limited(64 * 1024), timeout=120)
    assert done.returncode == 1, done.stderr  # not -SIGXFSZ
    assert "big.bin in" in done.stdout and "File too large" in done.stdout and "ulimit -f" in done.stdout
    assert (tmp_path / "big.bin").read_bytes() == b"old" and not leftovers(tmp_path)


def test_only_a_full_or_forbidden_output_becomes_an_output_error(tmp_path):
    with pytest.raises(OutputError, match=r"the disk quota for .* is used up \(Disk quota exceeded\)"), \
            writing(tmp_path / "x"):
        raise OSError(errno.EDQUOT, "Disk quota exceeded")
    with pytest.raises(OutputError, match=rf"^mslseg may not write in {tmp_path} \(Permission denied\) while "
                                          r"writing x; change its permissions .*x was not written$"), \
            writing(tmp_path / "x"):
        raise PermissionError(errno.EACCES, "Permission denied")
    with pytest.raises(FileNotFoundError), writing(tmp_path / "x"):  # a bug or a vanished folder: as it is
        raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert describe_write_failure(OSError(errno.EIO, "I/O error"), tmp_path, "x") is None
    assert issubclass(OutputError, MslsegError)


@pytest.mark.parametrize("writer", [
    pytest.param(PyAVWriter, marks=pytest.mark.skipif(not h264_available(), reason="PyAV with libx264")),
    OpenCVWriter,
])
def test_video_writer_on_a_full_disk(tmp_path, writer):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        (disk / "clip_overlay.mp4").write_bytes(b"an earlier video")
        before = snapshot(disk)
        video = writer(disk / "clip_overlay.mp4", 15.0, (96, 128))
        with pytest.raises(OutputError, match=r"the disk holding .* is full .* while writing clip_overlay\.mp4; "
                                              r".*clip_overlay\.mp4 is unchanged"):
            for frame in _noise(400):  # ~15 MB raw, far more than the disk holds even encoded
                video.write(frame)
            video.close()
        video.abort()  # what run_infer does on any failure
        assert snapshot(disk) == before and not leftovers(disk)


@pytest.mark.parametrize("writer", [
    pytest.param(PyAVWriter, marks=pytest.mark.skipif(not h264_available(), reason="PyAV with libx264")),
    OpenCVWriter,
])
def test_video_writer_in_a_read_only_folder(tmp_path, writer):
    with tmpfs(tmp_path / "disk") as disk:
        read_only(disk)
        with pytest.raises(OutputError, match="read-only"):  # PyAV opens the file at the first frame
            video = writer(disk / "clip_overlay.mp4", 15.0, (96, 128))
            for frame in _noise(3):
                video.write(frame)
            video.close()
        assert not list(disk.iterdir())


def test_video_past_a_file_size_limit_drops_the_partial_file(tmp_path):
    """The encoder holds frames back, so the limit may be reached only when the video is closed."""
    code = ("import sys, numpy as np; from pathlib import Path\n"
            "from mslseg.runtime.io.video_writer import open_video_writer\n"
            "from mslseg.runtime.errors import OutputError\n"
            "w = open_video_writer(Path(sys.argv[1]), 15, (96, 128))\n"
            "rng = np.random.default_rng(0)\n"
            "try:\n"
            "    for _ in range(30): w.write(rng.integers(0, 255, (96, 128, 3), dtype=np.uint8))\n"
            "    w.close()\n"
            "except OutputError as e:\n    w.abort(); print(e); sys.exit(1)\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "v.mp4")], capture_output=True, text=True,
                          preexec_fn=limited(48 * 1024), timeout=120)
    assert done.returncode == 1, done.stderr
    assert "grew past the largest file allowed (File too large" in done.stdout
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kind", ["png", "npz", "csv", "json"])
def test_label_and_area_writers_on_a_full_disk(tmp_path, kind):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        rng = np.random.default_rng(1)
        fill(disk, 96 * 1024)
        before = snapshot(disk)
        if kind == "png":
            out = LabelPngFolder(disk / "clip")
        elif kind == "npz":
            out = LabelNpz(disk / "clip.npz", META)
        else:
            out = AreaTable(disk / f"areas.{kind}", META, kind)
        with pytest.raises(OutputError, match=r"the disk holding .* is full \(No space left on device\) while "
                                              r"writing .*; free some space .* was not written"):
            for i in range(2000):
                labels = rng.integers(0, 255, (64, 96), dtype=np.uint8)
                if kind in ("png", "npz"):
                    out.write(i, labels) if kind == "npz" else out.write(f"{i:06d}", labels)
                else:
                    out.write("clip.mp4", i, i / 15, "", rng.random(3))
            out.close()
        out.abort()
        assert snapshot(disk) == before and not leftovers(disk)


def test_area_snapshot_on_a_full_disk_keeps_the_last_one(tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        fill(disk, 64 * 1024)
        table = AreaTable(disk / "areas.csv", META, "csv")
        for i in range(100):
            table.write("a.mp4", i, None, "", np.full(3, 1 / 3))
        table.snapshot()  # a finished source's rows, published
        published = (disk / "areas.csv").read_bytes()
        with pytest.raises(OutputError, match=r"while writing areas\.csv; .*areas\.csv is unchanged"):
            for i in range(5000):
                table.write("b.mp4", i, None, "", np.full(3, 1 / 3))
            table.snapshot()
        table.abort()
        assert (disk / "areas.csv").read_bytes() == published and not leftovers(disk)


def test_atomic_write_in_a_folder_the_user_may_not_write(tmp_path):
    """EACCES: root writes anywhere, so the write runs as the unprivileged user 'nobody'."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root to run a child as another user (CI runs as root)")
    folder = tmp_path / "theirs"
    folder.mkdir()
    (folder / "a.json").write_text("old")
    os.chmod(tmp_path, 0o755)
    code = ("import sys; from mslseg.runtime.io.atomic import atomic_write_text\n"
            "from mslseg.runtime.errors import OutputError\n"
            "try:\n    atomic_write_text(sys.argv[1], 'new')\n"
            "except OutputError as e:\n    print(e); sys.exit(1)\n")

    def as_nobody() -> None:
        os.setgid(65534)
        os.setuid(65534)

    try:
        done = subprocess.run([sys.executable, "-c", code, str(folder / "a.json")], capture_output=True,
                              text=True, preexec_fn=as_nobody, timeout=120, cwd="/")
    except PermissionError as exc:
        pytest.skip(f"the user 'nobody' may not run this Python ({exc})")
    if done.returncode != 1 and "Permission denied" in done.stderr:
        pytest.skip(f"the user 'nobody' cannot import mslseg here ({done.stderr.strip()[-200:]})")
    assert done.returncode == 1, done.stderr
    assert done.stdout.strip() == (f"mslseg may not write in {folder} (Permission denied) while writing a.json; "
                                   f"change its permissions or choose another output folder; "
                                   f"{folder / 'a.json'} is unchanged")
    assert (folder / "a.json").read_text() == "old" and not leftovers(folder)

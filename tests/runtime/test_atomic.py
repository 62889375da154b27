"""atomic_path: the old file or the new one under the final name, never a torn one; modes as
for any file the user writes (the umask), not owner-only."""

import os
import stat

import pytest

from mslseg.runtime.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def _mode(path):
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_new_files_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "summary.json", "{}")
    finally:
        os.umask(old)
    assert _mode(path) == 0o666 & ~umask


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"old")
    path.chmod(0o640)
    atomic_write_bytes(path, b"new", sync=False)
    assert path.read_bytes() == b"new" and _mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed midway")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def test_the_temporary_is_hidden_beside_the_final_name(tmp_path):
    with atomic_path(tmp_path / "a.bin") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".a.bin.") and tmp.suffix == ".tmp"
        assert not (tmp_path / "a.bin").exists()
        tmp.write_bytes(b"x")
    assert (tmp_path / "a.bin").read_bytes() == b"x" and not tmp.exists()


def test_every_writer_and_cleanup_agrees_with_the_owner_of_temporary_names(tmp_path):
    """One naming owner (atomic.py): what each writer holds open is a temporary name that maps back to
    its final name, the cluster's cleanup finds it, and it finds leftovers of the earlier names too."""
    from mslseg.runtime.cluster.units import discard_partials
    from mslseg.runtime.io.atomic import final_name, is_temporary, temporaries
    from mslseg.runtime.io.result_writers import AreaTable, LabelNpz, LabelPngFolder
    from mslseg.runtime.io.video_writer import OpenCVWriter
    from mslseg.runtime.metadata import ModelMeta

    meta = ModelMeta(num_classes=2, class_names=("road", "sky"), palette=((0, 0, 0), (9, 9, 9)))
    out, labels = tmp_path / "o", tmp_path / "o" / "labels"
    labels.mkdir(parents=True)
    writers = {out / "clip_overlay.mp4": OpenCVWriter(out / "clip_overlay.mp4", 10.0, (16, 16)),
               labels / "clip": LabelPngFolder(labels / "clip"), labels / "clip.npz": LabelNpz(labels / "clip.npz", meta),
               out / "areas.csv": AreaTable(out / "areas.csv", meta, "csv")}
    with atomic_path(out / "summary.json") as held:
        held.write_text("{}")
        open_now = temporaries(out) + temporaries(labels)
        assert sorted(map(final_name, open_now)) == sorted([*writers, out / "summary.json"])
        assert not any(is_temporary(p) for p in writers)  # a final name is never one
    for writer in writers.values():
        writer.abort()

    # a killed run's leftovers: the current names and the earlier conventions (.clip.npz.partial, a
    # hex .tmp), of this source only; another source's and final names stay
    left = [out / ".clip_overlay.partial.mp4", labels / ".clip.partial", labels / ".clip.npz.partial",
            out / ".clip_overlay.mp4.0a1b2c3d.tmp"]
    kept = [out / ".other_overlay.partial.mp4", out / "clip_overlay.mp4", labels / ".other.partial"]
    for p in left + kept:
        p.mkdir() if p.name == ".clip.partial" else p.write_bytes(b"x")
    discard_partials(out, "clip")
    assert [p for p in left if p.exists()] == [] and all(p.exists() for p in kept)

"""One owner for "what kind of file is this": runtime/io/media.py. Every place that sorts files into
images and videos must sort a mixed set of names exactly as the owner does, so a private suffix list
re-introduced anywhere (an old copy missing .webm, a lower-case-only check) fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mslseg.runtime.errors import DataError
from mslseg.runtime.io.media import LABEL_SUFFIXES, MEDIA_KINDS, is_bag, is_image, is_label, is_video, kind_of

ROOT = Path(__file__).resolve().parents[1]
OTHER = (".txt", ".json", ".npz", ".gif", ".jp2", ".yaml", ".onnx", "")
SUFFIXES = sorted({*(s for kind in MEDIA_KINDS.values() for s in kind), *LABEL_SUFFIXES, *OTHER})
NAMES = [f"f{i}{s}" for i, s in enumerate(SUFFIXES)] + [f"u{i}{s.upper()}" for i, s in enumerate(SUFFIXES)]


@pytest.fixture
def mixed(tmp_path) -> Path:
    """A folder with one empty file per name (classification reads names, never contents)."""
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in NAMES:
        (folder / name).touch()
    return folder


def _owner(folder: Path) -> tuple[set[str], set[str]]:
    return {n for n in NAMES if is_image(folder / n)}, {n for n in NAMES if is_video(folder / n)}


def test_the_owner_knows_images_videos_and_lossless_labels():
    assert kind_of("a/B.PNG") == "image" and kind_of("clip.WebM") == "video" and kind_of("x.txt") is None
    assert kind_of("https://host/clip.mp4?sig=a.png") == "video"
    assert set(LABEL_SUFFIXES) <= set(MEDIA_KINDS["image"]) and not {".jpg", ".jpeg", ".webp"} & set(LABEL_SUFFIXES)
    assert not set(MEDIA_KINDS["image"]) & set(MEDIA_KINDS["video"])
    assert kind_of("run.MCAP") == kind_of("old.bag") == kind_of("x.db3") == "bag"


def test_a_rosbag2_folder_is_a_bag(tmp_path):
    (tmp_path / "run_0412").mkdir()
    assert not is_bag(tmp_path / "run_0412")
    (tmp_path / "run_0412" / "metadata.yaml").write_text("rosbag2_bagfile_information: {}\n")
    assert is_bag(tmp_path / "run_0412") and kind_of(tmp_path / "run_0412") == "bag"


def test_infer_sources_sort_as_the_owner(mixed):
    from mslseg.runtime.cluster.units import _is_video_url
    from mslseg.runtime.io.sources import local_files

    videos, images, bags = local_files(str(mixed))
    assert ({p.name for p in images}, {p.name for p in videos}) == _owner(mixed)
    assert {p.name for p in bags} == {n for n in NAMES if is_bag(mixed / n)} and len(bags) == 6
    assert {n for n in NAMES if _is_video_url(f"https://host/{n}?sig=1")} == _owner(mixed)[1]


def test_training_datasets_sort_as_the_owner(mixed, tmp_path):
    from mslseg.data.config import DataConfig
    from mslseg.data.folder import folder
    from mslseg.data.video_frames import find_videos

    images, videos = _owner(mixed)
    mixed.rename(tmp_path / "images")
    index = folder(DataConfig(kind="folder", root=str(tmp_path), labelled=False))
    assert {s.image.name for s in index.samples} == images
    assert {p.name for p in find_videos(str(tmp_path / "images"))} == videos
    assert {p.name for p in find_videos(str(tmp_path / "images" / "*"))} == videos


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_folder_labels_pair_only_in_label_formats(tmp_path, suffix):
    from mslseg.data.config import DataConfig
    from mslseg.data.folder import folder

    for sub, name in (("images", "a.jpg"), ("labels", f"a{suffix}")):
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / name).write_bytes(b"x")
    cfg = DataConfig(kind="folder", root=str(tmp_path))
    if is_label(f"a{suffix}"):
        assert folder(cfg).samples[0].label == tmp_path / "labels" / f"a{suffix}"
    else:
        with pytest.raises(DataError, match="has no label"):
            folder(cfg)


def test_calibration_and_train_cli_sort_as_the_owner(mixed):
    from mslseg.cli.train import target_kind_for
    from mslseg.export.calibration import _folder_items, _items

    images, videos = _owner(mixed)
    assert {p.name for p, _ in _folder_items(mixed)} == images
    seen_images, seen_videos = set(), set()
    for name in NAMES:
        try:
            if _items([mixed / name]) == [(mixed / name, -1)]:
                seen_images.add(name)
        except DataError as exc:  # an empty file taken for a video fails to open as one
            if "cannot open video" in str(exc):
                seen_videos.add(name)
    assert (seen_images, seen_videos) == (images, videos)
    assert {n for n in NAMES if target_kind_for(Path(n)) == "video"} == videos


def _suffix_lists(path: Path) -> list[int]:
    """Lines of `path` with a literal collection of two or more media suffixes (".png", ".mp4")."""
    known = {s for kind in MEDIA_KINDS.values() for s in kind}
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2:
            values = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
            if len(values) == len(node.elts) and sum(v.lower() in known for v in values) >= 2:
                lines.append(node.lineno)
    return lines


def test_no_private_suffix_list_outside_the_owner():
    owner = ROOT / "runtime" / "io" / "media.py"
    found = {f"{p.relative_to(ROOT)}:{line}" for top in ("runtime", "mslseg", "export")
             for p in (ROOT / top).rglob("*.py") if p != owner for line in _suffix_lists(p)}
    assert not found, f"suffix lists outside runtime/io/media.py: {sorted(found)}; import them from there"

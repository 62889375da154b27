"""Bad data gives one DataError (or ConfigError) sentence naming the file, at construction if it can."""

from dataclasses import replace

import numpy as np
import pytest

from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from mslseg.runtime.errors import ConfigError, DataError
from tests.mslseg import test_data_helpers as fx
from tests.mslseg.test_data_helpers import NORM


def _one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    message = str(exc.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, (needle, message)


def test_label_of_another_size_is_caught_at_construction(tmp_path):
    cfg = fx.gta5(tmp_path, [fx.ids_map([7])])
    fx.write(tmp_path / "labels" / "00001.png", fx.ids_map([7], w=6, h=4))
    with pytest.raises(DataError) as exc:
        build_dataset(cfg, NORM, train=False)
    _one_line(exc, "00001.png", "6x4", "8x4")


def test_label_of_another_size_non_png_is_caught_when_read(tmp_path):
    fx.write(tmp_path / "images" / "a.jpg", fx.image(0))
    fx.write(tmp_path / "labels" / "a.png", fx.ids_map([1], w=5, h=3))
    ds = build_dataset(DataConfig(kind="folder", root=str(tmp_path)), NORM, train=False)
    with pytest.raises(DataError) as exc:
        ds[0]
    _one_line(exc, str(tmp_path / "labels" / "a.png"), "5x3")


def test_unknown_cityscapes_id_names_file_and_value(tmp_path):
    cfg = fx.gta5(tmp_path, [fx.ids_map([7, 200])])
    ds = build_dataset(cfg, NORM, train=False)
    with pytest.raises(DataError) as exc:
        ds[0]
    _one_line(exc, str(tmp_path / "labels" / "00001.png"), "200")


def test_value_missing_from_mapping_file(tmp_path):
    fx.write(tmp_path / "images" / "a.png", fx.image(0))
    fx.write(tmp_path / "labels" / "a.png", fx.ids_map([1, 2, 3]))
    (tmp_path / "map.yaml").write_text("1: 0\n2: 1\n")
    cfg = DataConfig(kind="folder", root=str(tmp_path), label_map=str(tmp_path / "map.yaml"), classes=2)
    with pytest.raises(DataError) as exc:
        build_dataset(cfg, NORM, train=False)[0]
    _one_line(exc, "labels/a.png", "3", "map.yaml")


def test_folder_value_beyond_classes_without_mapping(tmp_path):
    fx.write(tmp_path / "images" / "a.png", fx.image(0))
    fx.write(tmp_path / "labels" / "a.png", fx.ids_map([0, 19]))
    with pytest.raises(DataError) as exc:
        build_dataset(DataConfig(kind="folder", root=str(tmp_path)), NORM, train=False)[0]
    _one_line(exc, "19", "label_map")


@pytest.mark.parametrize("content", [b"", b"not a png at all"])
def test_corrupt_or_empty_image_and_label(tmp_path, content):
    cfg = fx.gta5(tmp_path, [fx.ids_map([7])] * 2)
    (tmp_path / "images" / "00001.png").write_bytes(content)
    (tmp_path / "labels" / "00002.png").write_bytes(content)
    ds = build_dataset(cfg, NORM, train=False)
    for i, path in ((0, "images/00001.png"), (1, "labels/00002.png")):
        with pytest.raises(DataError) as exc:
            ds[i]
        _one_line(exc, path)


def test_image_without_label(tmp_path):
    cfg = fx.cityscapes(tmp_path, [fx.ids_map([7])] * 2)
    (tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000001_gtFine_labelIds.png").unlink()
    with pytest.raises(DataError) as exc:
        build_dataset(cfg, NORM, train=False)
    _one_line(exc, "aachen_000000_000001_leftImg8bit.png", "aachen_000000_000001_gtFine_labelIds.png",
              "labelled: false")
    assert len(build_dataset(replace(cfg, labelled=False), NORM, train=False)) == 2


def test_empty_folder(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError) as exc:
        build_dataset(DataConfig(kind="gta5", root=str(tmp_path)), NORM, train=False)
    _one_line(exc, "no GTA5 images", str(tmp_path / "images"))


@pytest.mark.parametrize("kind, expected", [
    ("gta5", "images/NNNNN.png"),
    ("cityscapes", "leftImg8bit/train/<city>/*_leftImg8bit.png"),
    ("synthia", "GT/LABELS/*.png"),
    ("folder", "images/<name>"),
])
def test_wrong_layout_says_what_was_expected(tmp_path, kind, expected):
    (tmp_path / "pictures").mkdir()
    cfg = DataConfig(kind=kind, root=str(tmp_path), classes=16 if kind == "synthia" else 19)
    with pytest.raises(DataError) as exc:
        build_dataset(cfg, NORM, train=False)
    _one_line(exc, expected)


def test_list_file_naming_unknown_images(tmp_path):
    cfg = fx.gta5(tmp_path, [fx.ids_map([7])])
    (tmp_path / "list.txt").write_text("00001.png\n09999.png\n")
    with pytest.raises(DataError) as exc:
        build_dataset(replace(cfg, list_file=str(tmp_path / "list.txt")), NORM, train=False)
    _one_line(exc, "list.txt", "09999.png")


def test_colour_label_is_refused(tmp_path):
    cfg = fx.cityscapes(tmp_path, [fx.ids_map([7])])
    colour = np.zeros((fx.H, fx.W, 3), np.uint8)
    colour[..., 2] = 128
    fx.write(tmp_path / "gtFine" / "val" / "aachen" / "aachen_000000_000000_gtFine_labelIds.png", colour)
    with pytest.raises(DataError) as exc:
        build_dataset(cfg, NORM, train=False)[0]
    _one_line(exc, "labelIds.png", "single-channel")


def test_invalid_settings_are_config_errors(tmp_path):
    cfg = fx.synthia(tmp_path / "s", fx.ids_map([3]).astype(np.uint16))
    with pytest.raises(ConfigError, match="16 or 13"):
        build_dataset(replace(cfg, classes=19), NORM, train=False)
    nthu = fx.nthu(tmp_path / "n", fx.ids_map([0]))
    with pytest.raises(ConfigError, match="city"):
        build_dataset(replace(nthu, city=None), NORM, train=False)
    with pytest.raises(ConfigError, match="labelled: false"):
        build_dataset(replace(nthu, split="train"), NORM, train=False)
    with pytest.raises(ConfigError, match="kind"):
        build_dataset(DataConfig(kind="kitti", root=str(tmp_path)), NORM, train=False)
    with pytest.raises(ConfigError, match="interpolation"):
        build_dataset(replace(cfg, interpolation="lanczos"), NORM, train=False)
    fx.write(tmp_path / "f" / "images" / "a.png", fx.image(0))
    fx.write(tmp_path / "f" / "labels" / "a.png", fx.ids_map([1]))
    for text, needle in (("mapping: {1: 40}\nclasses: [a, b]\n", "train id 40"), ("[1, 2]", "mapping"),
                         ("mapping: {1: 0}\nnames: [a]\n", "unknown keys"), ("1: [", "YAML")):
        (tmp_path / "bad.yaml").write_text(text)
        folder = DataConfig(kind="folder", root=str(tmp_path / "f"), label_map=str(tmp_path / "bad.yaml"))
        with pytest.raises(ConfigError, match=needle):
            build_dataset(folder, NORM, train=False)


def test_video_sources_that_are_not_there(tmp_path):
    for root, needle in ((tmp_path / "missing.mp4", "does not exist"), (tmp_path, "no videos")):
        with pytest.raises(DataError) as exc:
            build_dataset(DataConfig(kind="video", root=str(root)), NORM, train=True)
        _one_line(exc, needle)
    (tmp_path / "junk.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(DataError) as exc:
        build_dataset(DataConfig(kind="video", root=str(tmp_path / "junk.mp4")), NORM, train=True)
    _one_line(exc, "junk.mp4")

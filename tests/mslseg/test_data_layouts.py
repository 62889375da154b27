"""Each real layout on tiny fixtures: pairing, names, and label id -> train id against known pixels."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from mslseg.classes import CITYSCAPES_CLASSES, SYNTHIA13_CLASSES, SYNTHIA16_CLASSES
from mslseg.data import build_dataset
from mslseg.data.config import DataConfig
from tests.mslseg import test_data_helpers as fx
from tests.mslseg.test_data_helpers import NORM

# Cityscapes label ids and the train ids (19 classes) they must become: road, sidewalk, car, sky,
# unlabeled, ego vehicle, bicycle, parking (an id with no train id).
CS_IDS = [7, 8, 26, 23, 0, 1, 33, 9]
CS_TRAIN19 = [0, 1, 13, 10, 255, 255, 18, 255]


def _label_row(item) -> list[int]:
    return item["label"][0].tolist()


def test_gta5_maps_cityscapes_ids_to_train_ids(tmp_path):
    cfg = fx.gta5(tmp_path, [fx.ids_map(CS_IDS), fx.ids_map([7])])
    ds = build_dataset(cfg, NORM, train=False)
    assert len(ds) == 2 and ds.class_names == CITYSCAPES_CLASSES
    item = ds[0]
    assert item["name"] == "00001.png"
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, fx.H, fx.W)
    assert item["label"].dtype == torch.int64 and item["label"].shape == (fx.H, fx.W)
    assert _label_row(item) == CS_TRAIN19


def test_image_is_normalised_from_bgr(tmp_path):
    cfg = fx.gta5(tmp_path, [fx.ids_map([7])])
    raw = fx.image(0)
    x = build_dataset(cfg, NORM, train=False)[0]["image"]
    np.testing.assert_allclose(x[0].numpy(), raw[..., 0] - NORM.mean[0], atol=1e-4)  # B channel first
    rgb = build_dataset(cfg, NORM.imagenet(), train=False)[0]["image"]
    inet = NORM.imagenet()
    np.testing.assert_allclose(rgb[0].numpy(), (raw[..., 2] - inet.mean[0]) / inet.std[0], atol=1e-4)


def test_gta5_palette_labels_are_read_by_index(tmp_path):
    """GTA5 ships palette PNGs; OpenCV would expand them to colours."""
    cfg = fx.gta5(tmp_path, [fx.ids_map([7])])
    pal = Image.fromarray(fx.ids_map(CS_IDS), mode="P")
    pal.putpalette([(i * 37) % 256 for i in range(768)])
    pal.save(tmp_path / "labels" / "00001.png")
    assert _label_row(build_dataset(cfg, NORM, train=False)[0]) == CS_TRAIN19


def test_cityscapes_layout_and_16_13_class_sets(tmp_path):
    cfg = fx.cityscapes(tmp_path, [fx.ids_map(CS_IDS)] * 3)
    ds = build_dataset(cfg, NORM, train=False)
    assert len(ds) == 3
    assert ds[0]["name"] == "aachen/aachen_000000_000000_leftImg8bit.png"
    assert _label_row(ds[0]) == CS_TRAIN19
    ds16 = build_dataset(replace(cfg, classes=16), NORM, train=False)
    assert ds16.class_names == SYNTHIA16_CLASSES
    names = [SYNTHIA16_CLASSES[t] if t != 255 else None for t in _label_row(ds16[0])]
    assert names == ["road", "sidewalk", "car", "sky", None, None, "bicycle", None]
    ds13 = build_dataset(replace(cfg, classes=13), NORM, train=False)
    names = [SYNTHIA13_CLASSES[t] if t != 255 else None for t in _label_row(ds13[0])]
    assert names == ["road", "sidewalk", "car", "sky", None, None, "bicycle", None]


def test_unlabelled_reads_images_only(tmp_path):
    cfg = fx.cityscapes(tmp_path, [fx.ids_map(CS_IDS)])
    ds = build_dataset(replace(cfg, labelled=False), NORM, train=False)
    assert "label" not in ds[0] and ds.labelled is False


# SYNTHIA ids: road 3, sidewalk 4, wall 21, pole 7, sky 1, void 0, terrain 16 (not in 16), bicycle 11
SYN_IDS = [3, 4, 21, 7, 1, 0, 16, 11]


def test_synthia_16_bit_first_channel_16_classes(tmp_path):
    cfg = fx.synthia(tmp_path, fx.ids_map(SYN_IDS).astype(np.uint16))
    ds = build_dataset(cfg, NORM, train=False)
    assert ds.class_names == SYNTHIA16_CLASSES
    assert _label_row(ds[0]) == [0, 1, 3, 5, 9, 255, 255, 15]


def test_synthia_13_classes_drop_wall_fence_pole(tmp_path):
    cfg = fx.synthia(tmp_path, fx.ids_map(SYN_IDS).astype(np.uint16), classes=13)
    ds = build_dataset(cfg, NORM, train=False)
    assert ds.class_names == SYNTHIA13_CLASSES
    assert _label_row(ds[0]) == [0, 1, 255, 255, 6, 255, 255, 12]


def test_nthu_test_split_labels_and_unlabelled_train(tmp_path):
    cfg = fx.nthu(tmp_path, fx.ids_map([0, 3, 12, 255]))
    ds = build_dataset(cfg, NORM, train=False)
    assert ds.class_names == SYNTHIA13_CLASSES and len(ds) == 1
    assert _label_row(ds[0]) == [0, 3, 12, 255] * 2
    train = build_dataset(replace(cfg, split="Train", labelled=False), NORM, train=True)
    assert len(train) == 1 and train[0]["name"] == "pic_900.png"


def test_list_file_selects_in_its_order_and_limit(tmp_path):
    cfg = fx.gta5(tmp_path, [fx.ids_map([7])] * 4)
    lst = tmp_path / "train.txt"
    lst.write_text("00003.png\n\n00001\n")
    ds = build_dataset(replace(cfg, list_file=str(lst)), NORM, train=False)
    assert [ds[i]["name"] for i in range(len(ds))] == ["00003.png", "00001.png"]
    assert len(build_dataset(replace(cfg, limit=3), NORM, train=False)) == 3


def test_folder_with_yaml_mapping_and_class_names(tmp_path):
    fx.write(tmp_path / "images" / "seq1" / "a.jpg", fx.image(0))
    fx.write(tmp_path / "labels" / "seq1" / "a.png", fx.ids_map([10, 20, 30, 0]))
    mapping = tmp_path / "map.yaml"
    mapping.write_text("classes: [road, car]\nmapping: {10: 0, 20: 1, 30: 255, 0: 255}\n")
    cfg = DataConfig(kind="folder", root=str(tmp_path), label_map=str(mapping))
    ds = build_dataset(cfg, NORM, train=False)
    assert ds.class_names == ("road", "car")
    assert ds[0]["name"] == "seq1/a.jpg"
    assert _label_row(ds[0]) == [0, 1, 255, 255] * 2


def test_folder_with_flat_json_mapping_and_plain_train_ids(tmp_path):
    fx.write(tmp_path / "images" / "a.png", fx.image(0))
    fx.write(tmp_path / "labels" / "a.png", fx.ids_map([5, 6]))
    (tmp_path / "map.json").write_text('{"5": 2, "6": 0}')
    cfg = DataConfig(kind="folder", root=str(tmp_path), label_map=str(tmp_path / "map.json"), classes=3)
    assert _label_row(build_dataset(cfg, NORM, train=False)[0]) == [2, 0] * 4
    plain = build_dataset(replace(cfg, label_map=None, classes=19), NORM, train=False)
    assert _label_row(plain[0]) == [5, 6] * 4


@pytest.mark.parametrize("kind", ["gta5", "cityscapes"])
def test_item_batches_through_a_dataloader(tmp_path, kind):
    make = fx.gta5 if kind == "gta5" else fx.cityscapes
    cfg = replace(make(tmp_path, [fx.ids_map(CS_IDS)] * 2), size=(16, 8))
    loader = torch.utils.data.DataLoader(build_dataset(cfg, NORM, train=False), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 8, 16) and batch["label"].shape == (2, 8, 16)
    assert len(batch["name"]) == 2

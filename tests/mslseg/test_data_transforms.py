"""Transforms keep image and label aligned; augmentation randomness follows torch's seed."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from mslseg.classes import CITYSCAPES_ID_TO_TRAIN
from mslseg.data import build_dataset, transforms
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.sizes import Size
from tests.mslseg import test_data_helpers as fx
from tests.mslseg.test_data_helpers import NORM


def _pair(w=64, h=32, seed=0):
    rng = np.random.default_rng(seed)
    label = rng.choice([7, 8, 11, 26], size=(h, w)).astype(np.uint8)
    image = np.repeat(label[..., None], 3, axis=2).copy()  # the image spells out its label
    return image, label


def test_resize_sets_size_and_keeps_labels_nearest():
    image, label = _pair()
    for interp in ("bicubic", "bilinear"):
        im2, lb2 = transforms.resize(image, label, Size(40, 24), interp)
        assert im2.shape == (24, 40, 3) and lb2.shape == (24, 40)
        assert set(np.unique(lb2)) <= {7, 8, 11, 26}
    big = np.zeros((4, 4), np.uint8)
    big[:, 2:] = 26
    _, up = transforms.resize(np.zeros((4, 4, 3), np.uint8), big, Size(8, 8))
    assert (up[:, :4] == 0).all() and (up[:, 4:] == 26).all()


def test_crop_flip_keep_alignment_and_size():
    image, label = _pair()
    rng = np.random.default_rng(1)
    aug = transforms.Augment(crop=Size(24, 16), flip=True)
    for _ in range(20):
        im, lb = transforms.apply(image, label, aug, rng)
        assert im.shape == (16, 24, 3) and lb.shape == (16, 24)
        np.testing.assert_array_equal(im[..., 0], lb)


def test_flip_mirrors_both():
    image, label = _pair()
    flips = 0
    for seed in range(8):
        im, lb = transforms.random_flip(image, label, np.random.default_rng(seed))
        np.testing.assert_array_equal(im[..., 0], lb)
        flips += not np.array_equal(lb, label)
    assert 0 < flips < 8


def test_crop_larger_than_image_pads_with_fill_and_ignore():
    image, label = _pair(w=8, h=4)
    im, lb = transforms.random_crop(image, label, Size(10, 6), np.random.default_rng(0), fill=(1, 2, 3))
    assert im.shape == (6, 10, 3)
    assert (lb[4:] == 255).all() and (lb[:, 8:] == 255).all()
    assert (im[5, 9] == (1, 2, 3)).all()


def test_blur_changes_image_only():
    image = fx.image(3, 64, 32)
    blurred = [transforms.random_blur(image, np.random.default_rng(s)) for s in range(6)]
    assert any(not np.array_equal(b, image) for b in blurred)
    assert all(b.shape == image.shape and b.dtype == np.uint8 for b in blurred)


def test_bad_augment_settings():
    with pytest.raises(ConfigError):
        transforms.Augment(crop=(0, 4))
    with pytest.raises(ConfigError):
        transforms.Augment(interpolation="area")


def _aligned_gta5(tmp_path):
    rows = np.random.default_rng(5).choice([7, 8, 11, 26, 0], size=(32, 64)).astype(np.uint8)
    cfg = fx.gta5(tmp_path, [rows])
    fx.write(tmp_path / "images" / "00001.png", np.repeat(rows[..., None], 3, axis=2))
    return replace(cfg, crop=(32, 16), flip=True, blur=False)


def test_dataset_items_stay_aligned_through_crop_and_flip(tmp_path):
    cfg = _aligned_gta5(tmp_path)
    ds = build_dataset(cfg, NORM, train=True)
    lut = np.full(256, 255)
    for k, v in CITYSCAPES_ID_TO_TRAIN.items():
        lut[k] = v
    for seed in range(6):
        torch.manual_seed(seed)
        item = ds[0]
        raw_ids = np.rint(item["image"][0].numpy() + NORM.mean[0]).astype(int)
        assert item["label"].shape == (16, 32)
        np.testing.assert_array_equal(lut[raw_ids], item["label"].numpy())


def test_randomness_follows_torch_seed_and_dataset_seed(tmp_path):
    cfg = replace(_aligned_gta5(tmp_path), blur=True)
    ds = build_dataset(cfg, NORM, train=True, seed=0)

    def draw(dataset, torch_seed):
        torch.manual_seed(torch_seed)
        return dataset[0]["image"]

    assert torch.equal(draw(ds, 3), draw(ds, 3))
    assert any(not torch.equal(draw(ds, 3), draw(ds, s)) for s in range(4, 9))
    other = build_dataset(cfg, NORM, train=True, seed=1)
    assert any(not torch.equal(draw(ds, s), draw(other, s)) for s in range(4))


def test_evaluation_items_are_fixed_and_leave_torch_rng_alone(tmp_path):
    cfg = replace(_aligned_gta5(tmp_path), size=(16, 8))
    ds = build_dataset(cfg, NORM, train=False)
    state = torch.random.get_rng_state()
    first = ds[0]
    assert torch.equal(torch.random.get_rng_state(), state)
    assert first["image"].shape == (3, 8, 16) and torch.equal(ds[0]["image"], first["image"])

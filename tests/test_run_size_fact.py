"""One owner for where a model's frames run (runtime/metadata.py) and how they are resized (runtime/sizes.py).

`resolve_run_size` decides the size and interpolation, `resize_frame` resizes; the Segmenter,
`mslseg evaluate` (eval_run.run_data), the training datasets and int8 calibration all agree with
them, so a private copy of either rule in any of them fails here.
"""

import cv2
import numpy as np
import pytest

from mslseg.checkpoint import save_checkpoint
from mslseg.data.config import DataConfig
from mslseg.data.transforms import resize as data_resize
from mslseg.export.calibration import load_frames
from mslseg.runtime import Segmenter
from mslseg.runtime.errors import InputError
from mslseg.runtime.metadata import ModelMeta, resolve_run_size
from mslseg.runtime.sizes import INTERPOLATIONS, Size, resize_frame
from mslseg.training.eval_run import run_data
from tests.helpers import tiny_model

REQUESTS = (None, "native", "48x32", Size(40, 24))


def _frame(h: int = 30, w: int = 50, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module", params=[(Size(64, 32), "bicubic"), (Size(32, 16), "bilinear"), (None, "bilinear")],
                ids=["64x32-bicubic", "32x16-bilinear", "no-size"])
def checkpoint(request, tmp_path_factory):
    train_size, interp = request.param
    model, meta = tiny_model(3, train_size=train_size)
    meta = meta.with_(interpolation=interp)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", model, meta), meta


def test_the_resolver():
    meta = ModelMeta(num_classes=1, class_names=("a",), palette=((0, 0, 0),), train_size=Size(64, 32),
                     interpolation="bilinear")
    assert str(resolve_run_size(None, meta)) == "64x32 (the model's training size, bilinear)"
    assert resolve_run_size("native", meta).size is None
    assert resolve_run_size("48x32", meta).size == Size(48, 32)
    assert resolve_run_size(None, meta, fixed=Size(16, 16)).size == Size(16, 16)
    with pytest.raises(InputError, match="fixed input size 16x16"):
        resolve_run_size("48x32", meta, fixed=Size(16, 16))


@pytest.mark.parametrize("requested", REQUESTS)
def test_segmenter_and_evaluate_choose_what_the_owner_chooses(checkpoint, requested):
    path, meta = checkpoint
    chosen = resolve_run_size(requested, meta)
    with Segmenter(path, device="cpu", size=requested, warmup=False) as seg:
        assert seg.run_size == chosen.size and seg.describe_size() == str(chosen)
    data = run_data(DataConfig(kind="cityscapes", root="x", split="val"), meta, requested)
    assert data.size == chosen.size
    if chosen.size is not None:
        assert data.interpolation == chosen.interpolation == meta.interpolation


def test_segmenter_resizes_frames_with_the_owners_resize(checkpoint):
    path, meta = checkpoint
    frame = _frame()
    with Segmenter(path, device="cpu", size="40x24", warmup=False) as seg:
        direct = seg(frame).labels
        by_hand = seg(resize_frame(frame, Size(40, 24), meta.interpolation)).labels
    expected = cv2.resize(by_hand, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(direct, expected)


@pytest.mark.parametrize("interp", list(INTERPOLATIONS))
def test_datasets_and_calibration_resize_as_the_owner(interp, tmp_path):
    frame, size = _frame(seed=1), Size(40, 24)
    want = resize_frame(frame, size, interp)
    other = resize_frame(frame, size, next(i for i in INTERPOLATIONS if i != interp))
    assert not np.array_equal(want, other)  # the two methods differ on this frame: the test can tell
    np.testing.assert_array_equal(data_resize(frame, None, size, interp)[0], want)
    (tmp_path / "imgs").mkdir()
    cv2.imwrite(str(tmp_path / "imgs" / "a.png"), frame)
    [calib] = load_frames([tmp_path / "imgs"], 1, size=size, interpolation=interp)
    np.testing.assert_array_equal(calib, want)

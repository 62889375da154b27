import numpy as np
import pytest
import torch

from mslseg.models import deeplabv2
from mslseg.runtime.errors import ConfigError
from mslseg.training.config import RunConfig, load_config, shipped_configs
from mslseg.training.device import capture_rng, restore_rng
from mslseg.training.metrics import confusion_matrix, scores_from_confusion
from mslseg.training.sampling import StreamBatchSampler
from mslseg.training.step import build_optimizer, set_poly_lr


def test_confusion_and_iou_on_a_hand_made_case():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 0, 1]])
    conf = confusion_matrix(pred, label, 3)
    assert conf.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]
    s = scores_from_confusion(conf, ("a", "b", "c"))
    # IoU a = 1 / (2 + 2 - 1) = 1/3; b = 3 / (3 + 4 - 3) = 3/4; c = 1 / (2 + 1 - 1) = 1/2
    assert s.iou == pytest.approx((1 / 3, 3 / 4, 1 / 2))
    assert s.miou == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert s.pixel_acc == pytest.approx(5 / 7)


def test_absent_class_is_nan_and_left_out_of_miou():
    conf = np.array([[5, 0, 0], [0, 0, 0], [0, 0, 5]])
    s = scores_from_confusion(conf, ("a", "b", "c"))
    assert np.isnan(s.iou[1]) and s.miou == pytest.approx(1.0)
    assert s.to_dict()["iou"]["b"] is None


def test_synthia_miou13():
    from mslseg.classes import SYNTHIA16_CLASSES

    conf = np.eye(16, dtype=np.int64)
    conf[3, 3] = 0  # wall never right -> IoU 0 hurts mIoU(16) but not mIoU*(13)
    conf[3, 4] = 1  # ... predicted as fence, also outside the 13
    s = scores_from_confusion(conf, SYNTHIA16_CLASSES)
    assert s.miou < 1.0 and s.miou13 == pytest.approx(1.0)


def test_config_unknown_key_suggests_and_types_checked():
    with pytest.raises(ConfigError, match="did you mean 'iterations'"):
        load_config(None, ["train.iteratons=3", "source.root=x"])
    with pytest.raises(ConfigError, match="not a valid int"):
        load_config(None, ["train.iterations=many", "source.root=x"])
    with pytest.raises(ConfigError, match="needs target data"):
        load_config(None, ["source.root=x", "method.target_loss=msl"])


def test_shipped_configs_all_load():
    configs = shipped_configs()
    assert {"gta5-iwmsl-multi", "synthia-iwmsl-multi", "synthetic"} <= set(configs)
    for name in configs:
        cfg = load_config(name)
        assert isinstance(cfg, RunConfig)
    multi = load_config("gta5-iwmsl-multi")
    assert multi.method.lambda_target == 0.09 and multi.method.multi_level
    assert multi.optim.lr == 2.5e-4 and multi.method.iw_ratio == 0.2


def test_stream_two_ranks_see_what_one_rank_with_double_batch_sees():
    one = iter(StreamBatchSampler(7, 4, seed=3))
    r0 = iter(StreamBatchSampler(7, 2, seed=3, rank=0, world=2))
    r1 = iter(StreamBatchSampler(7, 2, seed=3, rank=1, world=2))
    for _ in range(5):
        assert next(one) == next(r0) + next(r1)


def test_stream_resume_continues_exactly():
    full = iter(StreamBatchSampler(5, 2, seed=1))
    batches = [next(full) for _ in range(6)]
    resumed = iter(StreamBatchSampler(5, 2, seed=1, start=3 * 2))
    assert [next(resumed) for _ in range(3)] == batches[3:]
    epoch0 = sorted(i for b in batches[:2] for _, i in b) + [batches[2][0][1]]
    assert sorted(epoch0) == [0, 1, 2, 3, 4]  # each epoch is a permutation


def test_poly_lr_and_head_multiplier():
    from mslseg.training.config import OptimConfig

    model = deeplabv2("resnet18", num_classes=3)
    cfg = OptimConfig(lr=1e-2)
    opt = build_optimizer(model, cfg)
    base = set_poly_lr(opt, cfg, 50, 100)
    assert base == pytest.approx(1e-2 * 0.5**0.9)
    assert opt.param_groups[1]["lr"] == pytest.approx(10 * base)


def test_rng_round_trip():
    import random

    state = capture_rng()
    a = (torch.rand(3), np.random.rand(), random.random())
    restore_rng(state)
    b = (torch.rand(3), np.random.rand(), random.random())
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]


def test_the_confusion_picture_is_titled_with_what_was_scored(tmp_path):
    import cv2

    from mslseg.training.plots import confusion_title, plot_confusion

    title = confusion_title("cityscapes val", tmp_path / "runs" / "x" / "last.pt", 600, 0.41234)
    assert title == "cityscapes val: x/last.pt (iteration 600), mIoU 41.2%"
    assert confusion_title("folder frames", "best.pt", None, 0.5) == "folder frames: best.pt, mIoU 50.0%"
    conf = np.diag([40, 30, 20]) + 2
    plain = cv2.imread(str(plot_confusion(conf, ("a", "b", "c"), tmp_path / "plain.png")))
    titled = cv2.imread(str(plot_confusion(conf, ("a", "b", "c"), tmp_path / "titled.png", title=title)))
    assert titled.shape == plain.shape
    ink = (titled < 128).all(-1)  # dark pixels: text, axes
    rows = np.flatnonzero(ink.any(1))
    first_axes_row = np.flatnonzero((plain < 128).all(-1).any(1))[0]
    assert rows[0] < first_axes_row  # something is written above the matrix in the titled picture only

"""Label-free signals: each one moves the way its definition says on models whose answer is known."""

import math

import pytest
import torch
from torch import nn

from mslseg.training.label_free import atc_threshold, collapse, measure, source_fit


class Fixed(nn.Module):
    """Logits that put `scale` on class `k` everywhere (a collapsed model)."""

    def __init__(self, k, c=4, scale=5.0):
        super().__init__()
        self.k, self.c, self.scale = k, c, scale

    def forward(self, x):
        out = torch.zeros(x.shape[0], self.c, *x.shape[-2:])
        out[:, self.k] = self.scale
        return out


class ByColumn(nn.Module):
    """Class = which quarter of the image's width a pixel is in: flip changes the answer."""

    def forward(self, x):
        n, _, h, w = x.shape
        cls = (torch.arange(w) * 4 // w).clamp(max=3)
        return 8.0 * nn.functional.one_hot(cls, 4).permute(1, 0)[None, :, None, :].expand(n, 4, h, w).float()


def _batches(n=2):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(2, 3, 16, 32, generator=g) for _ in range(n)]


def test_a_collapsed_model_is_certain_agrees_with_itself_and_loses_classes():
    s = measure(Fixed(1), _batches(), 4, device=torch.device("cpu"), reference=[0.4, 0.3, 0.2, 0.1])
    assert s.frames == 4 and s.class_share == (0.0, 1.0, 0.0, 0.0)
    assert s.flip_agreement == 1.0 and s.scale_agreement == 1.0
    assert s.entropy < 0.1 and s.confidence > 0.9
    assert s.vanished == (0, 2, 3)  # classes the reference had, gone
    assert s.class_confidence == pytest.approx(s.confidence / 4)  # three of four classes count 0
    assert s.im == pytest.approx(0, abs=1e-6)  # every pixel the same answer: no information


def test_a_position_dependent_model_disagrees_with_its_mirror_and_keeps_its_classes():
    s = measure(ByColumn(), _batches(), 4, device=torch.device("cpu"), reference=[0.25] * 4, other=Fixed(0))
    assert s.class_share == pytest.approx((0.25,) * 4)
    assert s.flip_agreement == 0.0  # every column's class moves under the mirror
    assert s.agreement == pytest.approx(0.25)
    assert s.vanished == ()
    assert s.im == pytest.approx(1.0 - s.entropy)  # full diversity


def test_atc_threshold_makes_the_share_above_it_the_source_accuracy():
    model = ByColumn()
    images = _batches(1)[0]
    labels = (torch.arange(32) * 4 // 32).expand(2, 16, 32).clone()
    labels[:, :, :8] = 3  # a quarter of the pixels wrong: accuracy 0.75
    t = atc_threshold(model, [(images, labels)], device=torch.device("cpu"))
    s = measure(model, [images], 4, device=torch.device("cpu"), atc_threshold=t)
    assert s.atc is not None and 0 <= s.atc <= 1
    assert not math.isnan(t)


def test_collapse_counts_only_classes_that_were_there():
    assert collapse([0.5, 0.5, 0.0], [0.5, 0.495, 0.005]) == ()  # the third was under 1%
    assert collapse([0.96, 0.039, 0.001], [0.5, 0.4, 0.1]) == (1, 2)


def test_a_model_knows_the_source_halfway_from_the_majority_class_to_perfect():
    images = _batches(1)[0]
    truth = (torch.arange(32) * 4 // 32).expand(2, 16, 32).clone()  # four columns: a quarter each
    fit = source_fit(ByColumn(), [(images, truth)], device=torch.device("cpu"))
    assert fit.accuracy == 1.0 and fit.majority == 0.25 and fit.knows_source
    fresh = source_fit(Fixed(0), [(images, truth)], device=torch.device("cpu"))  # one class everywhere
    assert fresh.accuracy == pytest.approx(0.25) and not fresh.knows_source  # the majority class's accuracy
    half = truth.clone()
    half[:, :, :12] = 0  # columns 0-11 read class 0: the majority holds 12/32; ByColumn is right on 28/32
    fit = source_fit(ByColumn(), [(images, half)], device=torch.device("cpu"))
    assert fit.majority == pytest.approx(12 / 32) and fit.accuracy == pytest.approx(28 / 32)
    assert fit.knows_source  # 0.875 >= (1 + 0.375) / 2 = 0.6875


def test_a_class_traded_for_another_is_no_collapse():
    """SegFormer's IW-MSL at lambda 3 drops the source model's spurious traffic lights and finds
    vegetation; MinEnt drops cars and traffic lights and finds nothing (the method table's runs)."""
    from mslseg.training.label_free import lost

    source = [0.364, 0.517, 0.027, 0.004, 0.086]  # road, building, traffic light, vegetation, car
    iw_msl = [0.483, 0.401, 0.001, 0.089, 0.026]
    minent = [0.500, 0.500, 0.000, 0.000, 0.000]
    assert collapse(iw_msl, source) == (2,) and lost(iw_msl, source) == ()
    assert lost(minent, source) == (2, 4)


def test_one_class_lost_net_may_be_a_correction_and_is_no_collapse():
    """DAFormer from a weak source model: the road it called car taken back, terrain lost, sidewalk found."""
    from mslseg.training.label_free import lost

    source = [0.251, 0.005, 0.330, 0.001, 0.061, 0.042, 0.073, 0.236]  # road sidewalk building pole veg terrain sky car
    daformer = [0.430, 0.046, 0.263, 0.005, 0.212, 0.0003, 0.026, 0.017]
    assert collapse(daformer, source) == (5, 7) and lost(daformer, source) == ()

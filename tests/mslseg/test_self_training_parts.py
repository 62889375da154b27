"""Self-training building blocks: mean teacher, pseudo-labels, ClassMix, strong augmentation, MIC
masks, rare class sampling. Small tensors; analytic values where the papers give formulas."""

from __future__ import annotations

import io
import math

import pytest
import torch
from torch import nn

from mslseg.data.mixing import (
    apply_mask,
    classmix_masks,
    color_jitter,
    gaussian_blur,
    mic_mask,
    mix,
)
from mslseg.runtime.errors import ConfigError
from mslseg.runtime.metadata import Normalization
from mslseg.training.rare_class import RareClassSampler, class_pixel_counts, class_probabilities
from mslseg.training.teacher import (
    EmaTeacher,
    confidence_weight,
    ema_alpha,
    pseudo_label,
    pseudo_label_from_logits,
    pseudo_label_loss,
)


def _net(seed: int = 0, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, classes, 1))


def _perturb(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g))


# ---- mean teacher ----

def test_ema_is_the_true_mean_while_below_alpha_max():
    student = _net()
    teacher = EmaTeacher(student, alpha_max=0.999)
    assert not teacher.model.training and not any(p.requires_grad for p in teacher.model.parameters())
    history = [[p.detach().double().clone() for p in student.parameters()]]
    for t in range(1, 6):
        _perturb(student, t)
        history.append([p.detach().double().clone() for p in student.parameters()])
        assert teacher.update(student, t) == pytest.approx(1 - 1 / (t + 1))
    # alpha_t = t/(t+1): the teacher is the plain mean of the initial and the 5 updated students
    for i, p in enumerate(teacher.model.parameters()):
        expected = sum(h[i] for h in history) / len(history)
        torch.testing.assert_close(p.double(), expected, rtol=0, atol=1e-5)


def test_ema_with_capped_alpha_matches_the_recursion():
    student = _net()
    teacher = EmaTeacher(student, alpha_max=0.6)
    expected = [p.detach().double().clone() for p in student.parameters()]
    for t in range(1, 5):
        _perturb(student, 10 + t)
        a = min(1 - 1 / (t + 1), 0.6)
        assert ema_alpha(t, 0.6) == pytest.approx(a)
        expected = [a * e + (1 - a) * p.detach().double() for e, p in zip(expected, student.parameters(), strict=True)]
        teacher.update(student, t)
    for e, p in zip(expected, teacher.model.parameters(), strict=True):
        torch.testing.assert_close(p.double(), e, rtol=0, atol=1e-5)
    assert ema_alpha(0) == 0.0 and ema_alpha(10**6) == 0.999


def test_bn_buffers_follow_the_student_and_state_round_trips_bitwise():
    student = _net()
    teacher = EmaTeacher(student)
    student.train()
    student(torch.randn(4, 3, 8, 8))  # moves the student's running stats
    teacher.update(student, 1)
    bn_t, bn_s = teacher.model[1], student[1]
    assert torch.equal(bn_t.running_mean, bn_s.running_mean) and torch.equal(bn_t.running_var, bn_s.running_var)
    assert int(bn_t.num_batches_tracked) == 1

    buf = io.BytesIO()
    torch.save({"teacher": teacher.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["teacher"]
    other = EmaTeacher(_net(seed=5))
    other.load_state_dict(state)
    for (k, a), b in zip(teacher.model.state_dict().items(), other.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), k


def test_ddp_like_wrapper_is_unwrapped():
    student = _net()
    wrapped = nn.DataParallel(student)  # same `.module` contract as DDP, no process group needed
    teacher = EmaTeacher(wrapped)
    assert isinstance(teacher.model, nn.Sequential)
    _perturb(student, 3)
    teacher.update(wrapped, 1)
    assert torch.allclose(teacher.model[0].weight, (_net()[0].weight + student[0].weight) / 2, atol=1e-6)


# ---- pseudo-labels ----

def test_weight_is_share_of_confident_pixels_per_image():
    # image 0: 3 of 4 pixels with max prob >= 0.968; image 1: 1 of 4
    logits = torch.zeros(2, 2, 2, 2)
    logits[0, 0] = torch.tensor([[10.0, 10.0], [10.0, 0.5]])
    logits[1, 1] = torch.tensor([[10.0, 0.1], [0.2, 0.3]])
    labels, weight = pseudo_label_from_logits(logits)
    assert labels.dtype == torch.long and labels.shape == weight.shape == (2, 2, 2)
    assert torch.equal(labels[0], torch.zeros(2, 2, dtype=torch.long))
    assert torch.equal(labels[1], torch.ones(2, 2, dtype=torch.long))
    assert torch.allclose(weight[0], torch.full((2, 2), 0.75)) and torch.allclose(weight[1], torch.full((2, 2), 0.25))
    _, pooled = pseudo_label_from_logits(logits, per_image=False)  # the references' batch share
    assert torch.allclose(pooled, torch.full((2, 2, 2), 0.5))


def test_ignore_rows_weigh_zero():
    w = confidence_weight(torch.ones(1, 6, 3), ignore_top=1, ignore_bottom=2)
    assert torch.equal(w[0, :, 0], torch.tensor([0.0, 1, 1, 1, 0, 0]))


def test_pseudo_label_from_teacher_at_image_size_and_batch_stats_keep_buffers():
    teacher = EmaTeacher(_net())
    images = torch.randn(2, 3, 8, 8)
    before = {k: v.clone() for k, v in teacher.model.state_dict().items()}
    labels, weight = pseudo_label(teacher, images, threshold=0.0, batch_stats=True)
    assert labels.shape == (2, 8, 8) and torch.all(weight == 1.0)
    for k, v in teacher.model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not teacher.model[1].training
    expected = teacher.model(images).argmax(1)  # eval mode: running statistics
    labels_eval, _ = pseudo_label(teacher, images)
    assert torch.equal(labels_eval, expected)


def test_pseudo_label_loss_weights_pixels():
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.tensor([[[0, 1], [2, 255]]])
    full = pseudo_label_loss(logits, labels, torch.ones(1, 2, 2))
    half = pseudo_label_loss(logits, labels, torch.full((1, 2, 2), 0.5))
    assert torch.isclose(half, full / 2)
    assert pseudo_label_loss(logits, labels, torch.zeros(1, 2, 2)) == 0


# ---- ClassMix ----

def test_classmix_takes_half_of_present_classes_rounded_up_never_255():
    labels = torch.tensor([0, 1, 2, 3, 4, 255, 7, 7]).repeat(2, 4, 1)  # (2, 4, 8): 6 classes + ignore
    labels[1, :, :2] = 255  # image 1: classes 2, 3, 4, 7: 4 classes
    labels[1, 0, 0] = 9  # now 5 classes: ceil(5/2) = 3
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        mask = classmix_masks(labels, g)
        assert mask.dtype == torch.bool and mask.shape == labels.shape
        for i, n_present in ((0, 6), (1, 5)):
            picked = labels[i][mask[i]].unique()
            assert 255 not in picked.tolist()
            assert len(picked) == math.ceil(n_present / 2)
            # whole classes: every pixel of a picked class is in the mask
            assert torch.equal(mask[i], torch.isin(labels[i], picked))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(classmix_masks(labels, g1), classmix_masks(labels, g2))


def test_mix_puts_source_where_the_mask_is():
    mask = torch.tensor([[[True, False], [False, True]]])
    src, tgt = torch.ones(1, 3, 2, 2), torch.zeros(1, 3, 2, 2)
    out = mix(mask, src, tgt)
    assert torch.equal(out[:, 0], mask.float()) and torch.equal(out[:, 2], mask.float())
    lab = mix(mask, torch.full((1, 2, 2), 4), torch.full((1, 2, 2), 9))
    assert torch.equal(lab, torch.tensor([[[4, 9], [9, 4]]]))


# ---- strong augmentation ----

def test_jitter_and_blur_are_seeded_and_identity_at_zero():
    norm = Normalization.imagenet()
    images = torch.randn(4, 3, 20, 30)
    a = color_jitter(images, norm, torch.Generator().manual_seed(1), p=1.0)
    b = color_jitter(images, norm, torch.Generator().manual_seed(1), p=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, images)
    assert torch.equal(color_jitter(images, norm, torch.Generator().manual_seed(1), strength=0.0), images)
    assert torch.isfinite(a).all()
    c = gaussian_blur(images, torch.Generator().manual_seed(2), p=1.0)
    d = gaussian_blur(images, torch.Generator().manual_seed(2), p=1.0)
    assert torch.equal(c, d) and not torch.allclose(c, images)
    assert c.std() < images.std()  # blurring noise lowers its variance
    assert torch.equal(gaussian_blur(images, torch.Generator().manual_seed(2), p=0.0), images)
    const = torch.full((1, 3, 20, 30), 0.7)
    torch.testing.assert_close(gaussian_blur(const, torch.Generator().manual_seed(0), p=1.0), const)


def test_hue_shift_matches_colorsys():
    import colorsys

    from mslseg.data.mixing import _shift_hue

    rgb = torch.rand(1, 3, 3, 3, generator=torch.Generator().manual_seed(0))
    out = _shift_hue(rgb, torch.tensor([0.3]))
    for i in range(3):
        for j in range(3):
            h, s, v = colorsys.rgb_to_hsv(*rgb[0, :, i, j].tolist())
            expected = torch.tensor(colorsys.hsv_to_rgb((h + 0.3) % 1, s, v))
            torch.testing.assert_close(out[0, :, i, j], expected, atol=1e-5, rtol=0)


def test_jitter_strength_tiny_is_near_identity_and_bgr_round_trips():
    norm = Normalization.official()  # BGR, Caffe mean, no std
    images = (torch.rand(2, 3, 8, 8) * 200 + 20) - torch.tensor(norm.mean)[None, :, None, None]
    out = color_jitter(images, norm, torch.Generator().manual_seed(0), strength=1e-6, p=1.0)
    torch.testing.assert_close(out, images, atol=1e-2, rtol=0)


# ---- MIC ----

def test_mic_mask_ratio_and_block_alignment():
    g = torch.Generator().manual_seed(0)
    mask = mic_mask((64, 3, 128, 192), g, block=32, ratio=0.7)
    assert mask.shape == (64, 1, 128, 192) and mask.dtype == torch.float32
    masked_share = 1 - mask.mean().item()
    assert abs(masked_share - 0.7) < 0.03
    blocks = mask.reshape(64, 1, 4, 32, 6, 32)
    assert torch.all(blocks.amax(dim=(3, 5)) == blocks.amin(dim=(3, 5)))  # constant on every 32 x 32 block
    odd = mic_mask((2, 70, 50), torch.Generator().manual_seed(1), block=64)
    assert odd.shape == (2, 1, 70, 50)
    images = torch.randn(2, 3, 70, 50)
    out = apply_mask(images, odd)
    assert torch.all(out[odd.expand_as(out) == 0] == 0) and torch.equal(out[odd.expand_as(out) == 1],
                                                                         images[odd.expand_as(out) == 1])


# ---- rare class sampling ----

def test_rare_class_probabilities_match_the_formula():
    counts = torch.tensor([[6, 2, 0, 0], [2, 0, 0, 0]])  # f = (0.8, 0.2, 0, -): class 2 and 3 absent
    p = class_probabilities(counts, temperature=0.5)
    z = torch.tensor([math.exp(0.2 / 0.5), math.exp(0.8 / 0.5)], dtype=torch.float64)
    torch.testing.assert_close(p, torch.cat([z / z.sum(), torch.zeros(2, dtype=torch.float64)]))
    with pytest.raises(ConfigError):
        class_probabilities(counts, temperature=0)


def test_class_pixel_counts_ignore_255():
    labels = [torch.tensor([[0, 0, 255], [2, 2, 2]]), torch.tensor([[1, 255]]).numpy()]
    assert class_pixel_counts(labels, 3).tolist() == [[2, 0, 3], [0, 1, 0]]


def test_rare_classes_drawn_more_often_and_seeded():
    # 10 images all of class 0; image 7 also holds a little of class 1
    labels = [torch.zeros(8, 8, dtype=torch.long) for _ in range(10)]
    labels[7][0, :2] = 1
    counts = class_pixel_counts(labels, 2)
    sampler = RareClassSampler(counts, 0.01, torch.Generator().manual_seed(0), num_samples=2000)
    drawn = torch.tensor(list(sampler))
    share_rare = (drawn == 7).float().mean().item()
    assert share_rare > 0.9  # P(class 1) = 1 / (1 + exp(-(f1 - f0) / T)) ~ 1; uniform gives 0.1
    again = list(RareClassSampler(counts, 0.01, torch.Generator().manual_seed(0), num_samples=2000))
    assert again == drawn.tolist()
    assert sampler.indices_at(4, range(5, 9)) == sampler.indices_at(4, range(5, 9))
    # min_pixels excludes class 1 (2 pixels in image 7): uniform over the images holding class 0
    plain = RareClassSampler(counts, 0.01, torch.Generator().manual_seed(1), num_samples=4000, min_pixels=2)
    assert abs(sum(i == 7 for i in plain) / 4000 - 0.1) < 0.03

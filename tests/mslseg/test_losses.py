import math

import pytest
import torch

from mslseg.losses import (
    TARGET_LOSSES,
    entropy_loss,
    iw_max_square_loss,
    max_square_loss,
    multi_level_guidance_loss,
)


def test_max_square_uniform_logits_give_minus_half_over_c_squared():
    c = 7
    logits = torch.zeros(2, c, 5, 4)
    assert max_square_loss(logits).item() == pytest.approx(-1 / (2 * c * c))


def test_max_square_one_hot_approaches_minus_half_over_c():
    c = 5
    logits = torch.zeros(1, c, 3, 3)
    logits[:, 2] = 50.0
    assert max_square_loss(logits).item() == pytest.approx(-1 / (2 * c), rel=1e-6)


def test_max_square_mask_excludes_pixels():
    c = 4
    logits = torch.zeros(1, c, 2, 2)
    logits[0, 1, 0, 0] = 100.0  # confident pixel, masked out below
    valid = torch.ones(1, 2, 2, dtype=torch.bool)
    valid[0, 0, 0] = False
    assert max_square_loss(logits, valid).item() == pytest.approx(-1 / (2 * c * c))
    assert max_square_loss(logits).item() < -1 / (2 * c * c)


def test_empty_masks_are_finite_for_every_loss():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    valid = torch.zeros(2, 4, 4, dtype=torch.bool)
    for name, fn in TARGET_LOSSES.items():
        loss = fn(logits, valid=valid)
        assert torch.isfinite(loss), name
        loss.backward()
        assert torch.isfinite(logits.grad).all(), name


def test_gradient_grows_linearly_for_max_squares_not_for_entropy():
    """Two classes, p = sigmoid(z): d(-p^2/2 - (1-p)^2/2)/dp = 1 - 2p for MSL; entropy's
    derivative log(p/(1-p)) is unbounded as p -> 1: the paper's motivation."""
    ps = torch.tensor([0.6, 0.8, 0.99, 0.9999], dtype=torch.float64)

    def grad_wrt_p(fn):
        p = ps.clone().requires_grad_(True)
        total = fn(torch.stack([p, 1 - p]))
        total.sum().backward()
        return p.grad.abs()

    msl = grad_wrt_p(lambda q: -(q**2).sum(0) / 2)
    ent = grad_wrt_p(lambda q: -(q * q.log()).sum(0))
    assert torch.allclose(msl, (2 * ps - 1).abs())  # linear in p, at most 1
    assert msl.max() <= 1.0
    assert ent[-1] > 9.0 and ent[-1] / ent[0] > 20  # log(9999) ~ 9.2: grows without bound


def test_iw_loss_equals_mean_of_per_image_losses():
    torch.manual_seed(0)
    logits = torch.randn(4, 6, 9, 7) * 3
    batch = iw_max_square_loss(logits, ratio=0.2)
    single = torch.stack([iw_max_square_loss(logits[i : i + 1], ratio=0.2) for i in range(4)])
    assert batch.item() == pytest.approx(single.mean().item(), rel=1e-5)


def test_iw_loss_single_image_matches_formula():
    torch.manual_seed(1)
    logits = torch.randn(1, 3, 4, 5)
    p = logits.softmax(1)
    label = p.argmax(1)[0]
    n = label.numel()
    w = torch.tensor([1 / max((label == k).sum().item() ** 0.2 * n**0.8, 1) for k in range(3)])
    expected = -(w[label] * (p[0] ** 2)).sum() / 3
    assert iw_max_square_loss(logits, 0.2).item() == pytest.approx(expected.item(), rel=1e-5)


def _iw_scene() -> torch.Tensor:
    """One 10x10 image: 99 pixels of class 0, one of class 1, none of class 2; each pixel equally
    confident (logit 5 on its class), so the classes differ only in how many pixels they have."""
    logits = torch.zeros(1, 3, 10, 10)
    logits[0, 0] = 5.0
    logits[0, 0, 0, 0] = 0.0
    logits[0, 1, 0, 0] = 5.0
    return logits


@pytest.mark.parametrize("ratio", [0.2, 0.0, -0.2])
def test_iw_loss_ratio_sets_the_rare_class_weight_and_an_absent_class_is_harmless(ratio):
    """w_k = 1 / (N_k^ratio * N^(1 - ratio)): a rare class's pixels weigh (N_0 / N_1)^ratio times a
    frequent class's. Positive ratio (the paper's 0.2) weighs them up, 0 is plain max-squares (w = 1/N,
    twice `max_square_loss`, which halves), a negative ratio weighs them down. Class 2 has N_2 = 0: with
    a negative ratio 0^ratio is infinite, its weight 0, and nothing turns NaN."""
    logits = _iw_scene().requires_grad_(True)
    loss = iw_max_square_loss(logits, ratio=ratio)
    p2 = (logits.detach().softmax(1) ** 2).sum(1)[0]  # sum_c p^2 per pixel, the same at every pixel
    n, n0, n1 = 100, 99, 1
    w0, w1 = 1 / (n0**ratio * n ** (1 - ratio)), 1 / max(n1**ratio * n ** (1 - ratio), 1)
    expected = -(w0 * n0 + w1 * n1) * p2[5, 5].item() / 3
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    rare, frequent = logits.grad[0, :, 0, 0].abs().sum(), logits.grad[0, :, 5, 5].abs().sum()
    assert (rare / frequent).item() == pytest.approx((n0 / n1) ** ratio, rel=1e-4)
    if ratio > 0:
        assert rare > 2 * frequent
    elif ratio < 0:
        assert rare < frequent / 2
    else:
        assert loss.item() == pytest.approx(2 * max_square_loss(logits.detach()).item(), rel=1e-6)


def test_entropy_loss_normalised_by_log_c():
    logits = torch.zeros(1, 8, 3, 3)
    assert entropy_loss(logits).item() == pytest.approx(1.0)
    logits[:, 0] = 60.0
    assert entropy_loss(logits).item() == pytest.approx(0.0, abs=1e-6)


def test_guidance_zero_when_nothing_confident_and_grads_only_into_aux():
    main = torch.zeros(1, 4, 3, 3, requires_grad=True)
    aux = torch.zeros(1, 4, 3, 3, requires_grad=True)
    loss = multi_level_guidance_loss(main, aux, 0.95)
    assert loss.item() == 0.0 and not math.isnan(loss.item())
    main2 = torch.zeros(1, 4, 3, 3)
    main2[:, 2] = 20.0
    main2.requires_grad_(True)
    loss = multi_level_guidance_loss(main2, aux, 0.95)
    assert loss.item() == pytest.approx(math.log(4), rel=1e-5)  # uniform aux vs label 2
    loss.backward()
    assert main2.grad is None or main2.grad.abs().sum() == 0
    assert aux.grad.abs().sum() > 0

"""Online adaptation (mslseg.training.online): what it changes, and its guard against collapse."""

import pytest
import torch
from torch import nn

from mslseg.training.online import OnlineAdapter, OnlineConfig


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1))


def _frames(n, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 3, 16, 16, generator=g) for _ in range(n)]


def test_norm_adaptation_changes_only_the_norm_layers_affine_parameters():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    adapter = OnlineAdapter(net, OnlineConfig(objective="msl", lr=0.1, check_every=0))
    for x in _frames(5):
        assert adapter(x).shape == (1, 4, 16, 16)
    after = net.state_dict()
    changed = {k for k in ("0.weight", "0.bias", "1.weight", "1.bias", "3.weight", "3.bias")
               if not torch.equal(before[k], after[k])}
    assert changed == {"1.weight", "1.bias"} and adapter.stats.updates == 5


def test_every_k_updates_on_every_kth_batch_and_none_never():
    adapter = OnlineAdapter(_net(), OnlineConfig(objective="entropy", every=3, check_every=0))
    for x in _frames(7):
        adapter(x)
    assert adapter.stats.batches == 7 and adapter.stats.updates == 2
    still = OnlineAdapter(_net(), OnlineConfig(objective="none", check_every=0))
    weights = [p.clone() for p in still.params]
    for x in _frames(3):
        still(x)
    assert still.stats.updates == 0 and all(torch.equal(a, b) for a, b in zip(weights, still.params, strict=True))


def test_the_guard_restores_the_last_healthy_state_when_classes_vanish():
    """Entropy at a huge step size drives every pixel to one class: the guard sees classes the
    unadapted weights predict vanish, restores the weights of the last passing check, and says so."""
    adapter = OnlineAdapter(_net(), OnlineConfig(objective="entropy", params="all", lr=50.0, check_every=1, window=1))
    for x in _frames(6):
        adapter(x)
    assert adapter.stats.resets, "the adapter collapsed without a reset"
    reset = adapter.stats.resets[0]
    assert reset.vanished and reset.to < reset.batch


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="not one of"):
        OnlineConfig(objective="tent")
    with pytest.raises(ValueError, match="no normalisation layer"):
        OnlineAdapter(nn.Conv2d(3, 4, 1), OnlineConfig())


def test_resets_in_a_row_stop_the_updates_for_good():
    from mslseg.training.online import RESETS_TO_STOP

    torch.manual_seed(0)
    adapter = OnlineAdapter(_net(), OnlineConfig(objective="entropy", params="all", lr=500.0, check_every=1, window=1))
    for x in _frames(40, seed=3):
        adapter(x)
    stats = adapter.stats
    assert stats.stopped_at is not None and stats.stopped_after == RESETS_TO_STOP
    updates = stats.updates
    frozen = [p.clone() for p in adapter.params]
    for x in _frames(5, seed=4):
        adapter(x)
    assert adapter.stats.updates == updates and all(torch.equal(a, b) for a, b in zip(frozen, adapter.params, strict=True))

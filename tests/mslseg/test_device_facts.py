"""Decisions that depend on the machine, tested as pure functions of the device facts
(AMP dtype, each rank's device, CUDA RNG states on resume), and the BN / DDP / compile set-up."""

import logging

import pytest
import torch

from mslseg.models import deeplabv2
from mslseg.runtime.errors import ConfigError
from mslseg.training.config import load_config
from mslseg.training.device import amp_dtype, choose_amp, cuda_rng_states, rank_device
from mslseg.training.loop import Dist, prepare_net


@pytest.mark.parametrize(("capability", "expected"), [
    ((6, 0), torch.float16),  # P100
    ((7, 0), torch.float16),  # V100
    ((7, 5), torch.float16),  # T4, RTX 20xx: is_bf16_supported() says True (emulation), cuDNN has no bf16 conv
    ((8, 0), torch.bfloat16),  # A100
    ((8, 9), torch.bfloat16),  # L4, RTX 40xx
    ((9, 0), torch.bfloat16),  # H100
])
def test_amp_auto_takes_bf16_only_where_native(capability, expected):
    assert choose_amp("auto", "cuda", bf16_native=capability >= (8, 0)) == expected


def test_amp_explicit_and_cpu_choices():
    assert choose_amp("auto", "cpu", bf16_native=False) is None
    assert choose_amp("off", "cuda", bf16_native=True) is None
    assert choose_amp("bf16", "cuda", bf16_native=False) == torch.bfloat16  # asked for: honoured (warned)
    assert choose_amp("fp16", "cuda", bf16_native=True) == torch.float16
    assert choose_amp("bf16", "cpu", bf16_native=False) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        choose_amp("fp16", "cpu", bf16_native=False)
    assert amp_dtype(torch.device("cpu"), "auto") is None  # no CUDA query on the CPU


@pytest.mark.parametrize(("requested", "world", "local", "cuda", "expected", "warns"), [
    ("cuda:0", 1, 0, True, "cuda:0", False),  # a single process: as asked
    ("cuda:1", 1, 0, True, "cuda:1", False),
    ("auto", 1, 0, True, "auto", False),
    ("auto", 4, 2, True, "cuda:2", False),
    ("auto", 4, 2, False, "cpu", False),  # gloo ranks
    ("cpu", 4, 2, True, "cpu", False),
    ("cuda", 4, 3, True, "cuda:3", False),
    ("cuda:2", 4, 2, True, "cuda:2", False),
    ("cuda:0", 4, 2, True, "cuda:2", True),  # the bug: every rank on GPU 0
    ("nonsense", 2, 1, True, "nonsense", False),  # left to resolve_device's error
])
def test_each_rank_takes_its_local_gpu(requested, world, local, cuda, expected, warns):
    name, note = rank_device(requested, world=world, local_rank=local, cuda_available=cuda)
    assert name == expected
    assert (note is not None) == warns
    if warns:
        assert "LOCAL_RANK" in note and requested in note


def test_cuda_rng_states_for_fewer_gpus():
    saved = ["s0", "s1", "s2", "s3"]
    keep, note = cuda_rng_states(saved, 2)
    assert keep == {0: "s0", 1: "s1"}
    assert "cuda:2, cuda:3" in note and "dropped" in note
    assert cuda_rng_states(saved, 4) == ({0: "s0", 1: "s1", 2: "s2", 3: "s3"}, None)
    assert cuda_rng_states(saved[:1], 8) == ({0: "s0"}, None)  # more GPUs: the rest keep their seeded state
    assert cuda_rng_states([], 2) == ({}, None)


def test_cuda_rng_states_per_rank():
    saved = ["s0", "s1"]
    assert cuda_rng_states(saved, 8, own=1) == ({1: "s1"}, None)
    keep, note = cuda_rng_states(saved, 8, own=5)
    assert keep == {} and "cuda:5" in note


def test_sync_bn_with_frozen_bn_is_rejected():
    with pytest.raises(ConfigError, match="sync_bn needs model.bn: train"):
        load_config(None, ["source.root=x", "train.sync_bn=true", "model.bn=frozen"])
    assert load_config(None, ["source.root=x", "train.sync_bn=true", "model.bn=train"]).train.sync_bn


def test_frozen_mode_covers_sync_batchnorm():
    """Were the layers converted anyway, frozen still means eval mode and no gradients."""
    model = deeplabv2("resnet18", num_classes=3)
    model.set_bn_mode("frozen")
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.train()
    sync = [m for m in model.modules() if isinstance(m, torch.nn.SyncBatchNorm)]
    assert sync and not any(m.training or m.weight.requires_grad for m in sync)
    model.set_bn_mode("train")
    assert all(m.training and m.weight.requires_grad for m in sync)


@pytest.fixture
def gloo_group(tmp_path):
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def _cfg(*sets):
    return load_config(None, ["source.root=x", *sets])


@pytest.mark.slow
def test_prepare_net_single_process():
    model = deeplabv2("resnet18", num_classes=3, multi_level=False)
    assert prepare_net(model, _cfg(), torch.device("cpu"), Dist()) is model
    compiled = prepare_net(model, _cfg("train.compile=true"), torch.device("cpu"), Dist())
    assert compiled is not model and compiled._orig_mod is model  # torch.compile is lazy: nothing compiled yet


def test_prepare_net_under_ddp_compiles_the_inner_model(gloo_group):
    model = deeplabv2("resnet18", num_classes=3, multi_level=False)
    net = prepare_net(model, _cfg("train.compile=true"), torch.device("cpu"), Dist(0, 2))
    assert isinstance(net, torch.nn.parallel.DistributedDataParallel)
    assert net.module._orig_mod is model  # compiled before wrapping, as the PyTorch docs advise
    plain = prepare_net(model, _cfg(), torch.device("cpu"), Dist(0, 2))
    assert plain.module is model


def test_prepare_net_sync_bn_on_cpu_is_a_config_error(gloo_group):
    """DDP runs SyncBatchNorm on GPUs only: say so before DDP's own ValueError."""
    model = deeplabv2("resnet18", num_classes=3, multi_level=False)
    with pytest.raises(ConfigError, match="sync_bn needs CUDA"):
        prepare_net(model, _cfg("train.sync_bn=true"), torch.device("cpu"), Dist(0, 2))


def test_restore_rng_without_cuda_ignores_cuda_states(caplog):
    from mslseg.training.device import capture_rng, restore_rng

    state = capture_rng() | {"cuda": [torch.zeros(16, dtype=torch.uint8)] * 3}
    a = torch.rand(3)
    with caplog.at_level(logging.INFO):
        restore_rng(state, own_cuda=1)
    assert torch.equal(torch.rand(3), a)

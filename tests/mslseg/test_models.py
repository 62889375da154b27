import pytest
import torch

from mslseg.models import deeplabv2
from mslseg.runtime.errors import ModelFormatError


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_forward_shapes_and_output_stride(backbone):
    model = deeplabv2(backbone, num_classes=5).eval()
    x = torch.randn(2, 3, 65, 97)
    with torch.no_grad():
        out = model(x)
        main, aux = model.forward_with_aux(x)
        f3, f4 = model.backbone(x)
    assert out.shape == (2, 5, 65, 97)
    assert torch.equal(out, main)
    assert aux.shape == (2, 5, 65, 97)
    assert f4.shape[-2:] == (9, 13)  # output stride 8 with ceil-mode pooling: ceil(ceil(65/2)/2)/2
    assert f3.shape[1] == model.backbone.aux_channels


def test_resnet101_has_23_layer3_blocks_and_caffe_stride():
    model = deeplabv2("resnet101", num_classes=19)
    assert len(model.backbone.layer3) == 23
    first = model.backbone.layer2[0]
    assert first.conv1.stride == (2, 2) and first.conv2.stride == (1, 1)
    assert model.backbone.layer4[0].conv2.dilation == (4, 4)
    assert model.backbone.layer3[0].conv2.dilation == (2, 2)
    assert model.backbone.maxpool.ceil_mode


def test_two_branch_classifier_sums_only_first_two():
    model = deeplabv2("resnet18", num_classes=3, branches=2).eval()
    head = model.head_main
    x = torch.randn(1, 512, 6, 6)
    with torch.no_grad():
        expected = head.convs[0](x) + head.convs[1](x)
        assert torch.allclose(head(x), expected)
        head.branches = 4
        assert not torch.allclose(head(x), expected)


def test_single_level_has_no_aux_head():
    model = deeplabv2("resnet18", num_classes=3, multi_level=False).eval()
    assert model.head_aux is None
    _, aux = model.forward_with_aux(torch.randn(1, 3, 33, 33))
    assert aux is None


def test_frozen_bn_stays_eval_and_untrained():
    model = deeplabv2("resnet18", num_classes=3)
    model.set_bn_mode("frozen")
    model.train()
    bn = model.backbone.bn1
    assert not bn.training and not bn.weight.requires_grad
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 33, 33))
    assert torch.equal(before, bn.running_mean)
    groups = model.param_groups(1e-3)
    assert all(p.requires_grad for g in groups for p in g["params"])
    model.set_bn_mode("train")
    model.train()
    model(torch.randn(2, 3, 33, 33))
    assert not torch.equal(before, bn.running_mean)


def test_param_groups_heads_at_ten_x():
    model = deeplabv2("resnet18", num_classes=3)
    backbone, heads = model.param_groups(2.5e-4)
    assert heads["lr"] == pytest.approx(2.5e-3) and backbone["lr"] == pytest.approx(2.5e-4)
    n_all = sum(1 for p in model.parameters())
    assert len(backbone["params"]) + len(heads["params"]) == n_all


def test_bad_spec_is_a_clear_error():
    with pytest.raises(ModelFormatError, match="unknown backbone"):
        deeplabv2("resnet34", num_classes=3)

"""DAFormer's ImageNet feature distance (method.lambda_fd): the mask over thing classes, the loss
against the frozen encoder the run started from, the refusal on random weights, and runs from an
ImageNet-format ResNet file and an encoder-only SegFormer folder (random weights standing in for
ImageNet's, which cannot be downloaded here: the code path is the same)."""

import json

import pytest
import torch
from typer.testing import CliRunner

from mslseg.checkpoint import load_checkpoint
from mslseg.cli.app import app
from mslseg.classes import IGNORE_INDEX
from mslseg.models.deeplabv2 import deeplabv2
from mslseg.runtime.errors import ConfigError
from mslseg.training.feature_distance import FeatureDistance, class_indices, encoder_origin

runner = CliRunner()


def _fd(model, **kw):
    return FeatureDistance(model, weight=kw.pop("weight", 1.0), **kw)


def test_mask_keeps_feature_pixels_mostly_of_the_named_classes():
    model = deeplabv2("resnet18", num_classes=4, multi_level=False)
    label = torch.zeros(1, 8, 8, dtype=torch.long)
    label[0, :4, :4] = 2  # the top-left feature pixel (of 2x2) wholly class 2
    label[0, :4, 4:] = 2
    label[0, :1, 4:] = 3  # top-right: 75% class 2 (the threshold), 25% class 3
    label[0, 4:, :4] = 2
    label[0, 4:7, :4] = 1  # bottom-left: 75% class 1, 25% class 2
    label[0, 4:, 4:] = IGNORE_INDEX  # bottom-right: ignored pixels are no class
    mask = _fd(model, classes=(2,)).mask(label, (2, 2))
    assert mask.tolist() == [[[True, True], [False, False]]]
    assert _fd(model, classes=(2,), min_ratio=0.9).mask(label, (2, 2)).tolist() == [[[True, False], [False, False]]]
    assert _fd(model).mask(label, (2, 2)).tolist() == [[[True, True], [True, False]]]  # any class


def test_loss_is_zero_at_the_start_grows_as_the_student_moves_and_leaves_the_reference_alone():
    torch.manual_seed(0)
    model = deeplabv2("resnet18", num_classes=4, multi_level=False).eval()  # eval: the same BN statistics
    fd = _fd(model, weight=0.005)
    before = {k: v.clone() for k, v in fd.state_dict().items()}
    image, label = torch.randn(2, 3, 64, 64), torch.ones(2, 64, 64, dtype=torch.long)
    fd.arm()
    model(image)
    assert fd.loss(image, label).item() == 0.0
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    fd.arm()
    torch.nn.functional.cross_entropy(model(image), label).backward()
    fd._features = None  # that forward's features are not this test's
    opt.step()
    fd.arm()
    model(image)
    loss = fd.loss(image, label)
    assert loss.item() > 0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is None for p in fd.reference.parameters())
    assert all(torch.equal(v, before[k]) for k, v in fd.state_dict().items())
    model(image)  # unarmed forwards (evaluation, the teacher) keep nothing
    with pytest.raises(RuntimeError):
        fd.loss(image, label)


def test_no_counted_pixel_adds_nothing_but_keeps_the_graph():
    model = deeplabv2("resnet18", num_classes=4, multi_level=False)
    fd = _fd(model, classes=(3,))
    image, label = torch.randn(1, 3, 64, 64), torch.zeros(1, 64, 64, dtype=torch.long)
    fd.arm()
    model(image)
    loss = fd.loss(image, label)
    assert loss.item() == 0.0 and loss.requires_grad


def test_origin_of_the_encoder_and_class_names():
    assert encoder_origin(None, None, None) is None
    assert encoder_origin("r.pth", "torchvision-resnet", None) == "imagenet"
    assert encoder_origin("mit-b5", None, True) == "imagenet"
    assert encoder_origin("runs/src/best.pt", None, None) == "segmentation"
    assert encoder_origin("ade-folder", None, False) == "segmentation"
    assert class_indices(("car", "road"), ("road", "car")) == (1, 0)
    with pytest.raises(ConfigError, match="carr, which the data does not have"):
        class_indices(("carr",), ("road", "car"))


def _imagenet_resnet(path):
    """A torchvision-format ResNet-18 state dict (random weights in ImageNet's key layout)."""
    torch.manual_seed(3)
    m = deeplabv2("resnet18", num_classes=19)
    state = {k.removeprefix("backbone."): v for k, v in m.state_dict().items() if k.startswith("backbone.")}
    torch.save(state | {"fc.weight": torch.zeros(1000, 512), "fc.bias": torch.zeros(1000)}, path)
    return state


def _adapt(synth_data, out, *extra):
    return ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target",
            str(synth_data / "cityscapes"), "--method", "daformer", "--size", "64x32", "--batch", "2",
            "--iterations", "3", "--out", str(out), "--device", "cpu", "--set", "train.workers=0",
            "--set", "train.log_every=1", "--set", "target_val=null", "--set", "method.lambda_fd=0.005", *extra]


def test_random_weights_are_refused_in_one_line(synth_data, tmp_path):
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "o"))
    assert r.exit_code != 0
    assert "starts from random weights; pass ImageNet weights with --init" in r.output
    assert "Traceback" not in r.output and not (tmp_path / "o" / "last.pt").exists()


def test_a_run_from_imagenet_resnet_weights_keeps_them_as_its_reference(synth_data, tmp_path):
    state = _imagenet_resnet(tmp_path / "r18.pth")
    out = tmp_path / "o"
    r = runner.invoke(app, _adapt(synth_data, out, "--init", str(tmp_path / "r18.pth"), "--init-format",
                                  "torchvision-resnet", "--set", "model.backbone=resnet18",
                                  "--set", "method.fd_min_ratio=0.5"))
    assert r.exit_code == 0, r.output
    assert "feature distance to ImageNet encoder x0.005 on all classes (command line)" in r.output.splitlines()[0]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_fd" in rec for rec in records) and any(rec["loss_fd"] > 0 for rec in records)
    saved = load_checkpoint(out / "last.pt")
    reference = saved["training"]["fd_reference"]
    assert all(torch.equal(reference[k], v) for k, v in state.items())  # the ImageNet file, untouched
    moved = [k for k, v in state.items() if v.is_floating_point() and not torch.equal(saved["state_dict"][f"backbone.{k}"], v)]
    assert moved  # while the student's encoder learnt


@pytest.mark.slow
def test_an_encoder_only_segformer_folder_is_imagenet(synth_data, tmp_path):
    import transformers

    from mslseg.models.segformer import variant_config

    transformers.SegformerModel(variant_config("b0", 19)).save_pretrained(tmp_path / "mit-b0")
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "o", "--model", "segformer-b0",
                                  "--init", str(tmp_path / "mit-b0"), "--set", "method.fd_classes=car,road"))
    assert r.exit_code == 0, r.output
    assert "feature distance to ImageNet encoder x0.005 on 2 classes (command line)" in r.output.splitlines()[0]
    assert "fd_reference" in load_checkpoint(tmp_path / "o" / "last.pt")["training"]


@pytest.mark.slow
def test_resume_restores_the_reference_and_continues_bitwise(synth_data, tmp_path):
    _imagenet_resnet(tmp_path / "r18.pth")
    init = ["--init", str(tmp_path / "r18.pth"), "--init-format", "torchvision-resnet",
            "--set", "model.backbone=resnet18", "--set", "method.fd_min_ratio=0.5", "--iterations", "4"]
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "ref", *init))
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "cut", *init, "--set", "train.stop_after=2"))
    assert r.exit_code == 0, r.output
    (tmp_path / "r18.pth").unlink()  # the reference comes from last.pt, not the init file
    r = runner.invoke(app, ["adapt", "--resume", str(tmp_path / "cut"), "--set", "train.stop_after=null"])
    assert r.exit_code == 0, r.output
    ref, got = load_checkpoint(tmp_path / "ref" / "last.pt"), load_checkpoint(tmp_path / "cut" / "last.pt")
    assert all(torch.equal(got["state_dict"][k], v) for k, v in ref["state_dict"].items())
    assert all(torch.equal(got["training"]["fd_reference"][k], v) for k, v in ref["training"]["fd_reference"].items())

"""The model protocol (mslseg.models.base): output adapters, heads, BatchNorm modes, checkpoint
rebuilds and factories for each kind of model, SegFormer weights from save_pretrained folders,
and docs/models.md against the registry."""

import re
from collections import OrderedDict
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from mslseg.architectures import CHOOSABLE, MODELS, architecture
from mslseg.checkpoint import load_checkpoint, load_model, model_from_checkpoint, save_checkpoint
from mslseg.classes import default_class_names, palette_for
from mslseg.models import deeplabv2
from mslseg.models.base import count_bn, split_output
from mslseg.models.factory import FactoryModel, resolve_factory
from mslseg.runtime.errors import ModelFormatError
from mslseg.runtime.metadata import ModelMeta

DOCS = Path(__file__).resolve().parents[2] / "docs" / "models.md"
NET = "python:tests.mslseg.byo_nets:build_net"  # the importable-module form; tests/cli uses the .py path
OTHER = "python:tests.mslseg.byo_nets:build_other"


def _meta(n):
    names = default_class_names(n)
    return ModelMeta(num_classes=n, class_names=names, palette=palette_for(names))


def _tiny_segformer(n=3, *, multi_level=False):
    """A SegFormer of four one-block stages, 8..32 channels: fast, but every part of B0..B5."""
    tf = pytest.importorskip("transformers")
    from mslseg.models.segformer import SegFormer

    torch.manual_seed(0)
    cfg = tf.SegformerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                             decoder_hidden_size=16, num_labels=n)
    return SegFormer(cfg, multi_level=multi_level)


# --- split_output: the output shapes networks give --------------------------------------------

MAIN, AUX = torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)


@pytest.mark.parametrize("out, has_aux", [
    (MAIN, False),
    ((MAIN, AUX), True),
    ((MAIN,), False),
    ([MAIN, AUX], True),
    ([MAIN, None], False),
    (OrderedDict(out=MAIN, aux=AUX), True),  # torchvision's segmentation models (aux_loss=True)
    ({"out": MAIN}, False),  # torchvision, aux_loss=False
    (SimpleNamespace(logits=MAIN), False),  # transformers' SemanticSegmenterOutput
    (SimpleNamespace(logits=MAIN, aux_logits=AUX), True),
], ids=["tensor", "tuple", "tuple1", "list", "list-none", "dict-out-aux", "dict-out", "logits", "logits-aux"])
def test_split_output_reads_each_shape(out, has_aux):
    main, aux = split_output(out)
    assert main is MAIN
    assert (aux is AUX) if has_aux else aux is None


def test_split_output_reads_transformers_output():
    outputs = pytest.importorskip("transformers.modeling_outputs")
    main, aux = split_output(outputs.SemanticSegmenterOutput(logits=MAIN))
    assert main is MAIN and aux is None


@pytest.mark.parametrize("out", [
    None, "logits", (MAIN, AUX, AUX), (), (None, AUX), [1.0], {"aux": AUX}, {"logits": MAIN},
    SimpleNamespace(logits=None), {"out": [MAIN]},
], ids=["none", "str", "triple", "empty", "none-main", "float", "dict-no-out", "dict-logits", "logits-none",
        "dict-list"])
def test_split_output_refuses_other_shapes(out):
    with pytest.raises(ModelFormatError, match=r"must return logits \(N, C, h, w\)") as exc:
        split_output(out, "python:m:f")
    assert str(exc.value).startswith("python:m:f returned ")


# --- a user's network through a factory ----------------------------------------------------------

def test_factory_model_forward_aux_and_heads():
    model = FactoryModel(NET, 4).eval()
    assert model.arch == NET and model.num_classes == 4 and model.has_aux
    x = torch.randn(2, 3, 40, 56)
    with torch.no_grad():
        main = model(x)
        main2, aux = model(x, with_aux=True)
        raw = model.net(x)
    assert raw["out"].shape == (2, 4, 5, 7)  # stride 8, resized to the input by the adapter
    assert main.shape == aux.shape == (2, 4, 40, 56) and torch.equal(main, main2)
    body, heads = model.param_groups(1e-3)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)].split(".")[1] for p in body["params"]} == {"backbone"}
    assert {names[id(p)].split(".")[1] for p in heads["params"]} == {"classifier", "aux_classifier"}
    assert heads["lr"] == pytest.approx(1e-2) and body["lr_mult"] == 1.0


@pytest.mark.parametrize("name, match", [
    ("python:tests.mslseg.byo_nets", "does not name a factory"),
    ("tests.mslseg.byo_nets:build_net", "does not name a factory"),
    ("python:no_such_module_xyz:f", "cannot import no_such_module_xyz"),
    ("python:tests.mslseg.byo_nets:nope", "has no function nope"),
    ("python:missing/nets.py:f", "does not exist"),
])
def test_resolve_factory_errors(name, match):
    with pytest.raises(ModelFormatError, match=match):
        resolve_factory(name)


@pytest.mark.parametrize("build, match", [
    (lambda num_classes: "not a module", "not a torch nn.Module"),
    (lambda: nn.Identity(), "must accept num_classes"),
    (lambda num_classes: nn.Conv2d(3, num_classes + 1, 1), r"expected \(N, 3, h, w\) for 3 classes"),
    (lambda num_classes: nn.Flatten(), "logits of shape"),
    (lambda num_classes: nn.Linear(3, 3), "failed on a"),
])
def test_factory_model_checks_what_it_builds(build, match):
    with pytest.raises(ModelFormatError, match=match):
        FactoryModel("python:m:f", 3, build=build)


def test_factory_checkpoint_loads_only_for_the_same_factory(tmp_path):
    path = save_checkpoint(tmp_path / "byo.pt", FactoryModel(NET, 3).eval(), _meta(3))
    with pytest.raises(ModelFormatError, match=re.escape(f"pass --factory {NET}")) as exc:
        load_model(path)
    assert "\n" not in str(exc.value)
    with pytest.raises(ModelFormatError, match=re.escape(f"you named {OTHER}, another")):
        load_model(path, factory=OTHER)
    model, meta = load_model(path, factory=NET)
    assert model.arch == NET and meta.num_classes == 3 and not model.training


def test_factory_checkpoint_whose_spec_disagrees_is_damaged(tmp_path):
    data = load_checkpoint(save_checkpoint(tmp_path / "byo.pt", FactoryModel(NET, 3), _meta(3)))
    data["spec"]["factory"] = OTHER
    with pytest.raises(ModelFormatError, match="damaged"):
        model_from_checkpoint(data, factory=NET)


# --- checkpoints rebuild each built-in kind --------------------------------------------------------

def _rebuilds(model, tmp_path, x):
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, _meta(model.num_classes))
    loaded, _ = model_from_checkpoint(load_checkpoint(path), str(path))
    assert type(loaded) is type(model) and loaded.arch == model.arch
    assert loaded.spec_dict() == model.spec_dict() and loaded.has_aux == model.has_aux
    loaded.eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        assert torch.equal(loaded(x, with_aux=True)[1], model(x, with_aux=True)[1])


def test_checkpoint_rebuilds_deeplabv2(tmp_path):
    _rebuilds(deeplabv2("resnet18", num_classes=3, multi_level=True, branches=2), tmp_path, torch.randn(1, 3, 33, 41))


@pytest.mark.slow  # B0's 3.7M parameters take ~15 s to initialise on one loaded core; the tiny shape below is fast
def test_checkpoint_rebuilds_segformer_b0(tmp_path):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = architecture("segformer-b0").build(num_classes=3, multi_level=True)
    assert model.arch == "segformer-b0"
    _rebuilds(model, tmp_path, torch.randn(1, 3, 64, 96))


def test_checkpoint_rebuilds_a_segformer_of_another_shape(tmp_path):
    model = _tiny_segformer(multi_level=True)
    assert model.arch == "segformer"  # none of B0..B5: the family name
    _rebuilds(model, tmp_path, torch.randn(1, 3, 64, 64))


# --- heads, weight decay and BatchNorm per kind --------------------------------------------------

def _group_names(model, groups):
    names = {id(p): n for n, p in model.named_parameters()}
    return [{names[id(p)] for p in g["params"]} for g in groups]


def test_param_groups_deeplab_heads():
    model = deeplabv2("resnet18", num_classes=3, multi_level=True)
    body, heads = _group_names(model, model.param_groups(1.0))
    assert heads and all(n.startswith(("head_main.", "head_aux.")) for n in heads)
    assert {n.split(".")[0] for n in heads} == {"head_main", "head_aux"}
    assert body and not any(n.startswith("head_") for n in body)


def test_param_groups_segformer_heads_and_norm_decay():
    model = _tiny_segformer(multi_level=True)
    groups = model.param_groups(6e-5, 10.0, norm_decay=False)
    body, heads, body_norms, head_norms = _group_names(model, groups)
    assert all(n.startswith(("net.decode_head.", "head_aux.")) for n in heads | head_norms)
    assert any(n.startswith("head_aux.") for n in heads)
    assert all(n.startswith("net.segformer.") for n in body | body_norms)
    assert head_norms == {"net.decode_head.batch_norm.weight", "net.decode_head.batch_norm.bias"}
    layer_norms = {f"{n}.{p}" for n, m in model.named_modules() if isinstance(m, nn.LayerNorm) for p in ("weight", "bias")}
    assert body_norms == layer_norms
    assert [g.get("weight_decay") for g in groups] == [None, None, 0.0, 0.0]
    assert [g["lr"] for g in groups] == pytest.approx([6e-5, 6e-4, 6e-5, 6e-4])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert len(model.param_groups(6e-5)) == 2  # norm_decay=True: no groups of their own


def test_param_groups_factory_norm_decay():
    model = FactoryModel(NET, 3)
    body, heads, body_norms, head_norms = _group_names(model, model.param_groups(1.0, norm_decay=False))
    assert all(".backbone." not in f".{n}" for n in heads) and not head_norms
    assert body_norms and all(".1." in n for n in body_norms)  # the BatchNorms of the backbone's blocks
    assert body and not body & body_norms


def test_set_bn_mode_on_segformer_touches_only_the_decode_head_batchnorm():
    model = _tiny_segformer()
    assert count_bn(model) == 1
    bn = model.net.decode_head.batch_norm
    layer_norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert layer_norms
    model.set_bn_mode("frozen")
    model.train()
    assert not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad
    assert all(m.training and m.weight.requires_grad and m.bias.requires_grad for m in layer_norms)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {"net.decode_head.batch_norm.weight", "net.decode_head.batch_norm.bias"}
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64))
    assert torch.equal(before, bn.running_mean)
    model.set_bn_mode("train")
    model.train()
    assert bn.training and bn.weight.requires_grad
    model(torch.randn(2, 3, 64, 64))
    assert not torch.equal(before, bn.running_mean)
    with pytest.raises(ModelFormatError, match="valid: train, frozen"):
        model.set_bn_mode("eval")


# --- SegFormer weights from save_pretrained folders and the hub ------------------------------------

@pytest.fixture(scope="module")
def segformer_folders(tmp_path_factory):
    """A save_pretrained folder with a 3-class head (named classes), and an encoder-only one."""
    tf = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("segformer")
    labels = {0: "road", 1: "car", 2: "sky"}
    cfg = tf.SegformerConfig(hidden_sizes=[8, 16, 24, 32], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 1, 1],
                             decoder_hidden_size=16, id2label=labels, label2id={v: k for k, v in labels.items()})
    torch.manual_seed(0)
    full = tf.SegformerForSemanticSegmentation(cfg).eval()
    full.save_pretrained(root / "full")
    encoder = tf.SegformerModel(cfg).eval()
    encoder.save_pretrained(root / "encoder")
    return root, full, encoder


def test_pretrained_segformer_from_a_folder_keeps_weights_and_names(segformer_folders):
    from mslseg.models.segformer import pretrained_segformer

    root, full, _ = segformer_folders
    model, names = pretrained_segformer(str(root / "full"), num_classes=3, multi_level=True)
    assert names == ("road", "car", "sky") and model.num_classes == 3 and model.has_aux
    expected = full.state_dict()
    got = model.net.state_dict()
    assert got.keys() == expected.keys()
    assert all(torch.equal(got[k], expected[k]) for k in expected)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ref = torch.nn.functional.interpolate(full(pixel_values=x).logits, size=(64, 64), mode="bilinear")
        assert torch.allclose(model.eval()(x), ref, atol=1e-6)


def test_pretrained_segformer_encoder_only_gets_a_new_head(segformer_folders):
    from mslseg.models.segformer import pretrained_segformer

    root, _, encoder = segformer_folders
    model, names = pretrained_segformer(str(root / "encoder"), num_classes=5)
    assert names is None and model.num_classes == 5
    assert model.net.decode_head.classifier.out_channels == 5
    got = model.net.segformer.state_dict()
    assert all(torch.equal(got[k], v) for k, v in encoder.state_dict().items())
    assert model.eval()(torch.randn(1, 3, 64, 64)).shape == (1, 5, 64, 64)


def test_pretrained_segformer_errors(segformer_folders, tmp_path, monkeypatch):
    from mslseg.models.segformer import pretrained_segformer

    root, _, _ = segformer_folders
    with pytest.raises(ModelFormatError, match="predicts 3 classes but the data has 4") as exc:
        pretrained_segformer(str(root / "full"), num_classes=4)
    assert "\n" not in str(exc.value)
    with pytest.raises(ModelFormatError, match=r"not a save_pretrained folder \(no config.json\)"):
        pretrained_segformer(str(tmp_path), num_classes=3)
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # fail at once, as on a robot without network
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelFormatError, match="the hub is out of reach or the id is wrong") as exc:
        pretrained_segformer("hf:nvidia/mslseg-test-no-such-model", num_classes=3)
    assert "\n" not in str(exc.value)


# --- docs/models.md against the registry ----------------------------------------------------------

def test_docs_list_the_choosable_architectures():
    text = DOCS.read_text()
    section = text.split("## Built-in architectures", 1)[1].split("\n## ", 1)[0]
    listed = tuple(re.findall(r"^\| `([a-z0-9-]+)` \|", section, flags=re.M))
    assert listed == CHOOSABLE
    for name in CHOOSABLE:  # each row states its recipe's optimiser and lr as the registry does
        row = next(line for line in section.splitlines() if line.startswith(f"| `{name}` |"))
        recipe = MODELS[name].recipe
        assert f"{recipe.optimizer.replace('adamw', 'AdamW').replace('sgd', 'SGD')} {recipe.lr:g}" in row, row

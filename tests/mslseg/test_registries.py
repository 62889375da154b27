"""Registries that carry behaviour: a model name is parsed in one place (`ModelRef`) and every
user reads it the same way; a method entry says its loss and the parameters the loss takes; the
recipe's defaults live once; DeepLab-v2's own settings on another architecture are errors."""

import dataclasses
import subprocess
import sys

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mslseg.architectures import (
    CHOOSABLE,
    MODELS,
    PAPER,
    SEGFORMER_SIZES,
    ModelRef,
    OptimRecipe,
    architecture,
    architecture_of_meta,
    entry_of,
)
from mslseg.cli.app import app
from mslseg.export.int8 import int8_ops
from mslseg.losses import iw_max_square_loss, target_loss_fn
from mslseg.methods import METHODS, Method
from mslseg.models import deeplabv2
from mslseg.models.factory import FactoryRef
from mslseg.runtime.errors import ConfigError, ModelFormatError
from mslseg.training.config import MethodConfig, OptimConfig, load_config, to_dict
from mslseg.training.resume import resume_config

NET = "python:tests.mslseg.byo_nets:build_net"


@pytest.mark.parametrize("text, kind, family, variant, entry", [
    ("deeplabv2", "builtin", "deeplabv2", None, "deeplabv2"),
    ("deeplabv2-resnet18", "builtin", "deeplabv2", "resnet18", "deeplabv2"),  # metadata's full name
    ("segformer-b0", "builtin", "segformer", "b0", "segformer-b0"),
    ("segformer", "builtin", "segformer", None, "segformer"),  # a SegFormer of another shape
    ("hf:nvidia/segformer-b0-finetuned-cityscapes-1024-1024", "hf", "hf", None, None),
    ("python:mypkg.nets:build_net", "python", "python", None, None),
    ("python:path/to/nets.py:build_net", "python", "python", None, None),
])
def test_model_ref_parses_each_form(text, kind, family, variant, entry):
    ref = ModelRef.parse(text)
    assert (ref.kind, ref.family, ref.variant, ref.entry) == (kind, family, variant, entry)
    if kind == "python":
        assert ref.function == "build_net" and ref.is_file == text.endswith(".py:build_net")
    if kind == "hf":
        assert ref.ident == text.removeprefix("hf:")


@pytest.mark.parametrize("text", ["segformer-b9", "deeplab", "resnet18", "segformer-b0-x", ""])
def test_an_unknown_name_lists_the_registry(text):
    with pytest.raises(ModelFormatError) as err:
        ModelRef.parse(text)
    assert all(name in str(err.value) for name in CHOOSABLE) and "python:MODULE:FUNCTION" in str(err.value)


def test_every_user_reads_a_model_name_as_the_parser_does():
    """The one test of the naming fact: what the models call themselves parses back to their entry,
    and config validation, int8 export and the factory loader classify each name as ModelRef does."""
    names = [deeplabv2(b, num_classes=2).name for b in ("resnet18", "resnet50")]
    names += [entry_of("segformer", v) for v in (*SEGFORMER_SIZES, None)]
    for name in names:
        ref = ModelRef.parse(name)
        assert architecture_of_meta(name) is MODELS[ref.entry]
        assert int8_ops(name) == MODELS[ref.entry].int8_ops
        if ref.entry == name:  # an entry (the family segformer too, as checkpoints record it)
            assert load_config("synthetic", {"model.arch": name}).model.arch == name
        else:  # a full name: the config says it in two keys, and says how
            with pytest.raises(ConfigError, match=f"'{name}'"):
                load_config("synthetic", {"model.arch": name})
    assert ModelRef.parse(names[0]).variant == "resnet18"
    assert ModelRef.name_of("deeplabv2", backbone="resnet50") == names[1]
    factory, ref = FactoryRef.parse(NET), ModelRef.parse(NET)
    assert (factory.module, factory.function) == (ref.module, ref.function)
    assert architecture(NET).recipe.normalization == "imagenet"
    with pytest.raises(ModelFormatError, match="does not name a factory"):
        FactoryRef.parse("deeplabv2")


def test_segformer_sizes_are_the_modules_variants():
    from mslseg.models.segformer import VARIANTS

    assert tuple(VARIANTS) == SEGFORMER_SIZES


def test_hub_ids_and_full_names_are_not_architectures():
    with pytest.raises(ModelFormatError, match=r"model\.init \(--init\) with one of segformer-b0"):
        architecture("hf:nvidia/x")
    with pytest.raises(ConfigError, match="set model.arch deeplabv2 and model.backbone resnet18"):
        load_config("synthetic", {"model.arch": "deeplabv2-resnet18"})


# --- methods: one entry each, the loss and its parameters ----------------------------------------

def test_a_method_entry_binds_its_parameters():
    logits = torch.randn(2, 5, 8, 8, generator=torch.Generator().manual_seed(0))
    for ratio in (0.2, 0.5, -0.3):
        got = target_loss_fn(MethodConfig(target_loss="iw-msl", iw_ratio=ratio))(logits)
        assert torch.equal(got, iw_max_square_loss(logits, ratio=ratio))
    a, b = (target_loss_fn(MethodConfig(target_loss="iw-msl", iw_ratio=r))(logits) for r in (0.0, 0.5))
    assert not torch.equal(a, b)  # the parameter reaches the loss
    assert target_loss_fn(MethodConfig(target_loss="msl", iw_ratio=0.5))(logits) == target_loss_fn(
        MethodConfig(target_loss="msl"))(logits)  # msl takes no parameter


def test_a_new_method_is_one_entry(monkeypatch, synth_data, tmp_path):
    monkeypatch.setitem(METHODS, "iw-msl-flat", Method("iw-msl at the config's ratio", "iw-msl",
                                                        {"iw_ratio": "ratio"}))
    cfg = load_config("synthetic", {"method.target_loss": "iw-msl-flat", "method.iw_ratio": 0.0,
                                    "source.root": str(synth_data / "gta5")})
    logits = torch.randn(1, 4, 6, 6)
    assert torch.equal(target_loss_fn(cfg.method)(logits), iw_max_square_loss(logits, ratio=0.0))
    with pytest.raises(ConfigError, match="needs target data"):
        load_config("synthetic", {"method.target_loss": "iw-msl-flat", "target": None})


def test_the_registries_import_no_torch():
    code = ("import sys, mslseg.methods, mslseg.architectures; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the recipe, stated once -----------------------------------------------------------------------

def test_optim_defaults_are_the_recipes():
    recipe_fields = [f.name for f in dataclasses.fields(OptimRecipe)]
    assert issubclass(OptimConfig, OptimRecipe)
    assert {k: getattr(OptimConfig(), k) for k in recipe_fields} == {k: getattr(PAPER, k) for k in recipe_fields}
    for arch in (*CHOOSABLE, NET):
        written = to_dict(load_config("synthetic", {"model.arch": arch}))
        recipe = architecture(arch).recipe
        assert all(written["optim"][k] == getattr(recipe, k) for k in recipe_fields), arch
        assert None not in written["optim"].values() and written["optim"]["lr_scale"] == 10


def test_an_older_run_dir_resumes_with_its_config(tmp_path):
    """A config.yaml as runs wrote it before: optim in the old order, DeepLab's defaults on a SegFormer."""
    old = to_dict(load_config("synthetic", {"model.arch": "segformer-b0"}))
    old["model"] |= {"backbone": "resnet101", "branches": 4}
    old["optim"] = {k: old["optim"][k] for k in ("optimizer", "lr", "lr_scale", "head_lr_mult", "momentum",
                                                  "weight_decay", "poly_power", "norm_decay")}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old, sort_keys=False))
    cfg = resume_config(tmp_path)
    # warm-up came later: an older run resumes without one
    assert to_dict(cfg)["optim"] == old["optim"] | {"warmup_iters": 0}
    assert (cfg.model.backbone, cfg.model.branches) == (None, None)


# --- DeepLab-v2's own settings ----------------------------------------------------------------------

def test_deeplab_settings_are_filled_for_deeplab_and_errors_elsewhere(tmp_path):
    plain = load_config(None, {"source.root": "x"})
    assert (plain.model.backbone, plain.model.branches) == ("resnet101", 4)  # written complete
    with pytest.raises(ConfigError, match="^model.backbone applies to deeplabv2 only; segformer sizes are "
                                          "segformer-b0..segformer-b5"):
        load_config("synthetic", {"model.arch": "segformer-b0", "model.backbone": "resnet50"})
    with pytest.raises(ConfigError, match=f"^model.branches applies to deeplabv2 only; drop it for {NET}"):
        load_config("synthetic", {"model.arch": NET, "model.branches": 2})
    own = tmp_path / "sf.yaml"  # a file that says both: its own mistake
    own.write_text("model: {arch: segformer-b1, backbone: resnet50}\nsource: {root: x}\n")
    with pytest.raises(ConfigError, match="model.backbone applies to deeplabv2 only"):
        load_config(own)
    # the synthetic config's resnet18 goes with the DeepLab-v2 that --model replaced
    assert load_config("synthetic", {"model.arch": "segformer-b0"}).model.backbone is None


def test_the_cli_names_the_flag_of_a_deeplab_setting_on_segformer():
    r = CliRunner().invoke(app, ["train", "-c", "synthetic", "--model", "segformer-b0", "--backbone", "resnet50"])
    assert r.exit_code == 1 and "--backbone applies to deeplabv2 only; segformer sizes are" in r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1

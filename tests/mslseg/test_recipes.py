"""Per-architecture recipes and SegFormer through the loop: the registry decides, configs override."""

import json

import pytest
import torch
import yaml
from typer.testing import CliRunner

from mslseg.architectures import CHOOSABLE, MODELS, architecture
from mslseg.checkpoint import load_checkpoint
from mslseg.cli.app import app
from mslseg.runtime.errors import ConfigError
from mslseg.training.config import load_config
from mslseg.training.loop import run
from mslseg.training.step import build_optimizer


def _cfg(synth_data, out, **extra):
    overrides = {
        "source.root": str(synth_data / "gta5"), "source.size": [64, 32],
        "target.root": str(synth_data / "cityscapes"), "target.size": [64, 32],
        "target_val": None, "train.iterations": 4, "train.batch_source": 2, "train.batch_target": 2,
        "train.checkpoint_every": 2, "train.log_every": 1, "method.target_loss": "iw-msl",
        "method.multi_level": True, "model.arch": "segformer-b0", "out": str(out),
    }
    return load_config("synthetic", overrides | extra)


def test_the_architecture_chooses_the_recipe_and_the_config_overrides_it():
    deeplab = load_config("synthetic")
    assert (deeplab.optim.optimizer, deeplab.optim.lr, deeplab.optim.lr_scale) == ("sgd", 2.5e-4, 10)
    assert deeplab.optim.lr * deeplab.optim.lr_scale == 2.5e-3  # the synthetic DeepLab runs as before
    assert deeplab.model.normalization == "official" and deeplab.optim.norm_decay

    sf = load_config("synthetic", {"model.arch": "segformer-b0"})
    assert (sf.optim.optimizer, sf.optim.lr, sf.optim.weight_decay, sf.optim.poly_power) == ("adamw", 6e-5, 0.01, 1.0)
    assert sf.optim.head_lr_mult == 10 and not sf.optim.norm_decay and sf.model.normalization == "imagenet"

    given = load_config("synthetic", {"model.arch": "segformer-b0", "optim.lr": 1e-4, "model.normalization": "official"})
    assert given.optim.lr == 1e-4 and given.optim.optimizer == "adamw" and given.model.normalization == "official"


def test_an_unknown_architecture_names_the_valid_ones():
    with pytest.raises(ConfigError) as err:
        load_config("synthetic", {"model.arch": "segformer-b9"})
    assert all(name in str(err.value) for name in CHOOSABLE) and "python:MODULE:FUNCTION" in str(err.value)


def test_segformer_optimizer_groups_follow_the_recipe(synth_data, tmp_path):
    from mslseg.training.loop import build_model

    cfg = _cfg(synth_data, tmp_path / "x")
    model, meta = build_model(cfg.model, tuple(f"c{i}" for i in range(19)))
    opt = build_optimizer(model, cfg.optim)
    assert isinstance(opt, torch.optim.AdamW)
    decays = {(g["lr_mult"], g["weight_decay"]) for g in opt.param_groups if g["params"]}
    assert decays == {(1.0, 0.01), (10.0, 0.01), (1.0, 0.0), (10.0, 0.0)}
    assert meta.arch == "segformer-b0"
    assert set(architecture("segformer-b0").int8_ops) >= {"Conv", "MatMul"} and "deeplabv2" in MODELS


@pytest.mark.slow
def test_segformer_adapts_and_resumes_bitwise(synth_data, tmp_path):
    full = run(_cfg(synth_data, tmp_path / "full"))
    assert full.iterations == 4

    class Stop(Exception):
        pass

    def crash_after_3(stats):
        if stats.iteration == 3:
            raise Stop

    cfg = _cfg(synth_data, tmp_path / "resumed")
    with pytest.raises(Stop):
        run(cfg, on_step=crash_after_3)
    run(cfg, resume=True)
    a, b = load_checkpoint(full.run_dir / "last.pt"), load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert a["arch"] == "segformer-b0" and a["spec"]["multi_level"]
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    steps = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("loss_guidance", 0) > 0 for r in steps)  # multi-level guidance on the stage-3 head
    written = yaml.safe_load((tmp_path / "full" / "config.yaml").read_text())
    assert written["model"]["arch"] == "segformer-b0" and written["optim"]["optimizer"] == "adamw"


def test_init_of_another_architecture_says_which_to_name(synth_data, tmp_path):
    run(_cfg(synth_data, tmp_path / "sf", **{"train.iterations": 1, "method.target_loss": "none",
                                             "method.multi_level": False, "target": None}))
    with pytest.raises(ConfigError, match="--model segformer-b0"):
        run(load_config("synthetic", {"source.root": str(synth_data / "gta5"), "target_val": None,
                                      "model.init": str(tmp_path / "sf" / "last.pt"), "out": str(tmp_path / "d")}))


def test_every_method_has_its_target_loss():
    import dataclasses
    import inspect

    from mslseg.losses import TARGET_LOSSES
    from mslseg.methods import METHODS
    from mslseg.training.config import MethodConfig

    fields = {f.name for f in dataclasses.fields(MethodConfig)}
    for name, method in METHODS.items():  # each entry's loss exists and takes the parameters it maps
        keywords = set(inspect.signature(TARGET_LOSSES[method.loss]).parameters)
        assert set(method.params) <= fields and set(method.params.values()) <= keywords, name
    out = CliRunner().invoke(app, ["adapt", "--help"], terminal_width=400).output
    assert all(name in out for name in METHODS)

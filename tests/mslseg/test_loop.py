"""The training loop end to end on tiny synthetic data (CPU, ResNet-18, 64x32)."""

import json

import pytest
import torch

from mslseg.checkpoint import load_checkpoint
from mslseg.runtime.errors import ConfigError, TrainingError
from mslseg.training.config import load_config
from mslseg.training.loop import run


def _cfg(synth_data, out, **extra):
    overrides = {
        "source.root": str(synth_data / "gta5"), "source.size": [64, 32],
        "target.root": str(synth_data / "cityscapes"), "target.size": [64, 32], "target.flip": True,
        "target_val.root": str(synth_data / "cityscapes"), "target_val.size": [64, 32],
        "train.iterations": 6, "train.batch_source": 2, "train.batch_target": 2,
        "train.checkpoint_every": 3, "train.eval_every": 0, "train.log_every": 1,
        "method.target_loss": "iw-msl", "method.multi_level": True, "source.flip": True,
        "out": str(out),
    }
    return load_config("synthetic", overrides | extra)


class _Stop(Exception):
    pass


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_the_same_weights_bitwise(synth_data, tmp_path):
    full = run(_cfg(synth_data, tmp_path / "full"))

    def crash_after_4(stats):
        if stats.iteration == 4:
            raise _Stop

    cfg = _cfg(synth_data, tmp_path / "resumed")
    with pytest.raises(_Stop):
        run(cfg, on_step=crash_after_4)
    assert load_checkpoint(tmp_path / "resumed" / "last.pt")["training"]["iteration"] == 3
    run(cfg, resume=True)
    a = load_checkpoint(full.run_dir / "last.pt")
    b = load_checkpoint(tmp_path / "resumed" / "last.pt")
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    # the metrics file holds each iteration once, with the same losses
    lines = [json.loads(x) for x in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    steps = [r["iteration"] for r in lines if "loss_source" in r]
    assert steps == [1, 2, 3, 4, 5, 6]
    ref = [json.loads(x) for x in (full.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss_target"] for r in lines if "loss_source" in r] == [r["loss_target"] for r in ref if "loss_source" in r]


@pytest.mark.parametrize("method, multi", [  # the default tier runs the full method; the others in the full tier
    pytest.param("none", False, marks=pytest.mark.slow), pytest.param("minent", False, marks=pytest.mark.slow),
    pytest.param("msl", False, marks=pytest.mark.slow), ("iw-msl", True)])
def test_each_method_runs_and_writes_the_run_dir(synth_data, tmp_path, method, multi):
    cfg = _cfg(synth_data, tmp_path / method, **{"method.target_loss": method, "method.multi_level": multi,
                                                 "train.iterations": 2, "train.eval_every": 2})
    result = run(cfg)
    assert result.final_miou is not None and 0 <= result.final_miou <= 1
    for name in ("last.pt", "best.pt", "config.yaml", "metrics.jsonl", "curves.png"):
        assert (tmp_path / method / name).is_file(), name
    records = [json.loads(x) for x in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss_source" in r]
    if method == "none":
        assert all(r["loss_target"] == 0 for r in steps)
    else:
        assert any(r["loss_target"] != 0 for r in steps)
    assert any(r["loss_guidance"] > 0 for r in steps) == multi


def test_bn_only_changes_running_stats_but_no_weight_from_target(synth_data, tmp_path):
    """Method none with target data: target images only move BatchNorm statistics. Against the same
    run without target data, every weight is bitwise the same after two real SGD steps, every BN
    running statistic differs, and the predictions differ only through those statistics."""
    common = {"method.target_loss": "none", "method.multi_level": False, "train.iterations": 2,
              "train.checkpoint_every": 2, "source.flip": False, "target.flip": False, "target_val": None}
    run(_cfg(synth_data, tmp_path / "bn", **common))
    run(_cfg(synth_data, tmp_path / "src", **common, target=None))
    with_target = load_checkpoint(tmp_path / "bn" / "last.pt")
    source_only = load_checkpoint(tmp_path / "src" / "last.pt")
    stats = {k for k in with_target["state_dict"] if k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert stats and len(stats) < len(with_target["state_dict"])
    for key, value in with_target["state_dict"].items():
        same = torch.equal(value, source_only["state_dict"][key])
        assert same != (key in stats), key  # weights equal, statistics moved by the target images
    from mslseg.checkpoint import model_from_checkpoint

    x = torch.randn(2, 3, 32, 64)
    adapted, _ = model_from_checkpoint(with_target)
    plain, _ = model_from_checkpoint(source_only)
    assert not torch.allclose(adapted.eval()(x), plain.eval()(x))
    plain.load_state_dict({k: v for k, v in with_target["state_dict"].items() if k in stats}, strict=False)
    assert torch.equal(adapted(x), plain.eval()(x))  # the target's statistics alone make the difference


def test_existing_run_dir_needs_resume(synth_data, tmp_path):
    cfg = _cfg(synth_data, tmp_path / "r", **{"train.iterations": 1})
    run(cfg)
    with pytest.raises(ConfigError, match="--resume"):
        run(cfg)


def test_non_finite_loss_stops_with_iteration_and_keeps_last_good(synth_data, tmp_path):
    cfg = _cfg(synth_data, tmp_path / "nan", **{"optim.lr": 1e10, "train.iterations": 20,
                                                "train.checkpoint_every": 1, "method.target_loss": "none",
                                                "method.multi_level": False})
    with pytest.raises(TrainingError, match=r"non-finite (at|by) iteration \d+"):
        run(cfg)
    data = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert all(torch.isfinite(v).all() for v in data["state_dict"].values() if v.is_floating_point())

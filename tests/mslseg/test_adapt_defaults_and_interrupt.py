"""adapt's default method, the default video frame stride, and Ctrl-C saving a whole step."""

import os
import signal

import pytest
import torch

from mslseg.checkpoint import load_checkpoint
from mslseg.data.video_frames import frame_positions
from mslseg.training import loop
from mslseg.training.config import load_config
from mslseg.training.resume import RunInterrupted


def _method(name, overrides=(), adapt=True):
    m = load_config(name, dict(overrides), adapt=adapt).method
    return m.target_loss, m.multi_level, m.lambda_target


def test_adapt_defaults_to_iw_msl_with_multi_level_where_there_is_an_aux_head():
    assert _method("synthetic") == ("iw-msl", True, 0.09)
    assert _method("synthetic", {"model.multi_level": False, "method.multi_level": False}) == ("iw-msl", False, 0.1)
    assert _method("synthetic", {"method": None, "model.multi_level": False}) == ("iw-msl", False, 0.1)
    assert _method("synthetic", {"method.target_loss": "none"}) == ("none", True, 0.09)  # the config's multi_level
    assert _method("synthetic", {"method.lambda_target": 1.0}) == ("iw-msl", True, 1.0)
    # a config that names its method keeps it; train (adapt=False) keeps the source-only default
    assert _method("gta5-msl") == ("msl", False, 0.1)
    assert _method("gta5-iwmsl-multi") == ("iw-msl", True, 0.09)
    assert _method("synthetic", {"target": None}, adapt=False)[0] == "none"


def test_default_video_stride_keeps_at_least_100_frames_of_a_short_clip():
    assert frame_positions(120, None, None) == list(range(120))
    assert frame_positions(50, None, None) == list(range(50))
    assert len(frame_positions(250, None, None)) == 125  # stride 2
    assert frame_positions(3000, None, None) == list(range(0, 3000, 30))
    assert len(frame_positions(108_000, None, None)) == 3600  # an hour at 30 fps: one frame a second
    assert frame_positions(120, 30, None) == [0, 30, 60, 90]  # an explicit stride is kept


def _cfg(synth_data, out):
    return load_config("synthetic", {
        "source.root": str(synth_data / "gta5"), "source.size": [64, 32], "source.flip": True,
        "target.root": str(synth_data / "cityscapes"), "target.size": [64, 32], "target.flip": True,
        "target_val": None, "train.iterations": 3, "train.batch_source": 2, "train.batch_target": 2,
        "train.checkpoint_every": 100, "train.log_every": 1, "out": str(out)}, adapt=True)


@pytest.mark.slow
def test_sigint_during_a_step_saves_that_step_and_resumes_bitwise(synth_data, tmp_path, monkeypatch):
    full = loop.run(_cfg(synth_data, tmp_path / "full"))
    real = loop.adapt_step

    def step(*args, iteration, **kwargs):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, in the middle of step 2
        return real(*args, iteration=iteration, **kwargs)

    monkeypatch.setattr(loop, "adapt_step", step)
    cfg = _cfg(synth_data, tmp_path / "cut")
    with pytest.raises(RunInterrupted) as stop:
        loop.run(cfg)
    assert (stop.value.iteration, stop.value.saved) == (2, 2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    loop.run(cfg, resume=True)
    a = load_checkpoint(full.run_dir / "last.pt")["state_dict"]
    b = load_checkpoint(tmp_path / "cut" / "last.pt")["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)

"""What `mslseg train` and `mslseg adapt` say: the start line, plain progress lines, Ctrl-C."""

import os
import signal
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.cli.progress import RunProgress
from mslseg.data.synthetic import write_target_video
from mslseg.training import loop
from mslseg.training.run_log import RunStart
from mslseg.training.step import StepStats

runner = CliRunner()
TINY = ["--size", "64x32", "--batch", "2", "--device", "cpu", "--set", "train.workers=0"]


def _adapt(synth_data, out, *extra):
    return ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target",
            str(synth_data / "cityscapes"), "--out", str(out), *TINY, *extra]


@pytest.mark.slow
def test_adapt_defaults_to_the_full_method_and_says_so_with_plain_progress_lines(synth_data, tmp_path):
    out = tmp_path / "a"
    r = runner.invoke(app, _adapt(synth_data, out, "--target-val", str(synth_data / "cityscapes"),
                                  "--iterations", "2", "--set", "train.log_every=1"))
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert lines[0] == (f"adapt: iw-msl + multi-level, lambda_T 0.09, deeplabv2-resnet18 (main+aux heads), "
                        f"sgd lr 0.0025 = 0.00025 x 10 (heads x10), cpu, 2 iterations, 12 source / 8 target / 4 val images -> {out}")
    # CliRunner's stderr is no terminal: a plain line per log_every iterations, no progress bar
    progress = [line for line in lines if line.startswith("adapt ")]
    assert [line.split()[1] for line in progress] == ["1/2", "2/2"]
    assert all(k in progress[0] for k in ("src ", "aux ", "tgt ", "guide ", "img/s", "ETA 0:"))
    assert lines[-1].startswith(f"wrote {out}/last.pt and best.pt after 2 iterations")


def test_train_start_line_says_source_only(synth_data, tmp_path):
    out = tmp_path / "t"
    r = runner.invoke(app, ["train", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--out", str(out),
                            "--iterations", "1", "--set", "target_val=null", *TINY])
    assert r.exit_code == 0, r.output
    assert r.output.splitlines()[0] == (
        f"train: source only, deeplabv2-resnet18 (main+aux heads), sgd lr 0.0025 = 0.00025 x 10 (heads x10), cpu, 1 iterations, 12 source images -> {out}")
    assert "train 1/1  src " in r.output and "tgt" not in r.output


@pytest.mark.slow
def test_video_target_says_how_many_frames_of_how_many(synth_data, tmp_path):
    write_target_video(tmp_path / "clips" / "drive.mp4", 120, "64x32", seed=3)
    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"),
                            "--target", str(tmp_path / "clips"), "--target-kind", "video", "--out", str(tmp_path / "v"),
                            "--iterations", "1", *TINY])
    assert r.exit_code == 0, r.output
    # a 120-frame clip keeps every frame (the default stride keeps >= 100 per video); 12 of them are
    # held out for label-free validation: the config's target_val labels its own target, not this one
    assert "best.pt by im on the held-out frames (no labels)" in r.output.splitlines()[0]
    assert "12 source / 108 target + 12 held-out images (target: 120 of 120 frames from 1 video)" in r.output.splitlines()[0]


def _sigint_during(iterations, times=1):
    """An adapt_step that sends this process SIGINT `times` times during the given iterations."""
    real = loop.adapt_step

    def step(*args, iteration, **kwargs):
        if iteration in iterations:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
        return real(*args, iteration=iteration, **kwargs)

    return step


@pytest.mark.slow
def test_ctrl_c_finishes_the_step_saves_it_and_says_how_to_resume(synth_data, tmp_path, monkeypatch):
    out = tmp_path / "c"
    monkeypatch.setattr(loop, "adapt_step", _sigint_during({2}))
    r = runner.invoke(app, _adapt(synth_data, out, "--iterations", "3", "--set", "target_val=null",
                                  "--set", "train.checkpoint_every=100"))
    assert r.exit_code == 130, r.output
    assert r.output.splitlines()[-2:] == [f"interrupted at iteration 2 of 3; {out}/last.pt holds iteration 2",
                                          f"continue with: mslseg adapt --resume {out}"]
    monkeypatch.undo()
    r = runner.invoke(app, ["adapt", "--resume", str(out)])
    assert r.exit_code == 0, r.output
    assert f"resumed at iteration 2 of 3 from {out}/last.pt" in r.output.splitlines()[0]
    assert r.output.splitlines()[-1].startswith(f"wrote {out}/last.pt and best.pt after 3 iterations")


@pytest.mark.slow
def test_a_second_ctrl_c_stops_mid_step_and_keeps_the_last_checkpoint(synth_data, tmp_path, monkeypatch):
    out = tmp_path / "c2"
    monkeypatch.setattr(loop, "adapt_step", _sigint_during({2}, times=2))
    r = runner.invoke(app, _adapt(synth_data, out, "--iterations", "3", "--method", "msl", "--single-level",
                                  "--set", "target_val=null", "--set", "train.checkpoint_every=1"))
    assert r.exit_code == 130, r.output
    assert f"interrupted at iteration 1 of 3; {out}/last.pt holds iteration 1" in r.output


def test_ctrl_c_before_the_first_checkpoint_and_during_setup(synth_data, tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "adapt_step", _sigint_during({1}, times=2))
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "e", "--iterations", "2", "--set", "target_val=null"))
    assert r.exit_code == 130, r.output
    assert "interrupted at iteration 0 of 2, before the first checkpoint: nothing to resume" in r.output

    def setup(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "_setup", setup)
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "s", "--iterations", "2"))
    assert r.exit_code == 130 and "interrupted before the first step: nothing was trained" in r.output


def _info(**kw):
    base = dict(target_loss="iw-msl", multi_level=False, lambda_target=0.1, arch="deeplabv2-resnet18",
                aux_head=True, device="cpu", world=1, iterations=1000, start=0, stop=1000, source_images=10,
                target_images=10, target_video=None, val_images=None, images_per_step=4, run_dir=Path("runs/x"))
    return RunStart(**(base | kw))


def test_plain_lines_every_log_every_or_30_seconds(capsys):
    now = [0.0]
    progress = RunProgress("adapt", log_every=100, terminal=False, clock=lambda: now[0])
    progress.on_start(_info(start=200))
    for it in range(201, 261):  # 1 s per step: a line after 30 s, none at 100 iterations yet
        now[0] += 1.0
        progress.on_step(StepStats(it, 1e-3, 0.5, loss_target=-0.01))
    for it in range(261, 301):  # fast steps: the 300th is a log_every multiple
        now[0] += 0.01
        progress.on_step(StepStats(it, 1e-3, 0.5, loss_target=-0.01))
    lines = capsys.readouterr().err.splitlines()
    assert [line.split()[1] for line in lines] == ["230/1000", "260/1000", "300/1000"]
    assert lines[0] == "adapt  230/1000  src 0.500  tgt -0.0100  4.0 img/s  ETA 0:12:50"


# a user's network without an auxiliary head (an LR-ASPP, a U-Net)
PLAIN = f"python:{Path(__file__).resolve().parents[1] / 'mslseg' / 'byo_nets.py'}:build_plain"
NO_AUX = "single-level (the network has no auxiliary head)"


def _one_line_error(r, *needles):
    assert r.exit_code == 1, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    for needle in needles:
        assert needle in r.output, r.output


def test_a_network_without_aux_head_trains_and_adapts_single_level_and_says_so(synth_data, tmp_path):
    src = ["--source", str(synth_data / "gta5"), "--iterations", "1", "--set", "target_val=null", *TINY]
    r = runner.invoke(app, ["train", "-c", "synthetic", "--model", PLAIN, "--out", str(tmp_path / "s"), *src])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"train: source only, {NO_AUX}, {PLAIN} (main head), ")
    init = ["--init", str(tmp_path / "s" / "best.pt"), "--model", PLAIN]
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "a", *init, "--iterations", "1", "--set", "target_val=null"))
    assert r.exit_code == 0, r.output
    # the default method follows the network: single-level, and the single-level lambda_T
    assert r.output.startswith(f"adapt: iw-msl, {NO_AUX}, lambda_T 0.1, {PLAIN} (main head), ")
    assert "multi_level: false" in (tmp_path / "a" / "config.yaml").read_text().split("method:")[1]
    # an explicit multi-level cannot be honoured: an error that says what to do
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "m", *init, "--iterations", "1", "--multi-level"))
    _one_line_error(r, f"the network {PLAIN} of {tmp_path / 's' / 'best.pt'} has no auxiliary head", "--single-level")
    r = runner.invoke(app, ["train", "-c", "synthetic", "--model", PLAIN, "--multi-level", "--out",
                            str(tmp_path / "t"), *src])
    _one_line_error(r, "has no auxiliary head", "--no-multi-level (train)")


def test_errors_name_the_flag_the_user_typed_or_the_key_they_set():
    cases = [  # (arguments, what the message names, what it must not name)
        (["train", "-c", "synthetic", "--size", "64"], "--size '64' is not WIDTHxHEIGHT", "source.size"),
        (["train", "-c", "synthetic", "--set", "source.size=64"], "source.size must be", "--size"),
        (["adapt", "-c", "synthetic", "--method", "bn-only"], "--method 'bn-only' is not one of", "target_loss"),
        (["adapt", "-c", "synthetic", "--set", "method.target_loss=bn-only"], "method.target_loss 'bn-only'", "--method"),
        (["train", "-c", "synthetic", "--source-kind", "gta"], "--source-kind 'gta' is not one of", "source.kind"),
        (["train", "-c", "synthetic", "--model", "deeplab"], "--model: unknown model 'deeplab'", "model.arch"),
    ]
    for args, named, not_named in cases:
        r = runner.invoke(app, args)
        _one_line_error(r, named)
        assert not_named not in r.output, (args, r.output)


def test_start_line_says_in_words_what_a_run_without_target_loss_does():
    assert _info(target_loss="none").describe().startswith(
        "BatchNorm statistics only (no target loss), deeplabv2-resnet18 (main+aux heads), ")
    assert _info(target_loss="none", multi_level=True, lambda_target=0.09).describe().startswith(
        "no target loss, multi-level guidance on the aux head (BN statistics only: --single-level), lambda_T 0.09, ")
    assert _info(target_images=None, multi_level=False, aux_head=False).describe().startswith(
        f"source only, {NO_AUX}, deeplabv2-resnet18 (main head), ")


@pytest.mark.slow
def test_bn_only_adapt_says_so(synth_data, tmp_path):
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "bn", "--method", "none", "--single-level",
                                  "--iterations", "1", "--set", "target_val=null"))
    assert r.exit_code == 0, r.output
    assert r.output.startswith("adapt: BatchNorm statistics only (no target loss), deeplabv2-resnet18 (main+aux heads), ")

"""`mslseg infer --adapt`: online adaptation from the CLI and the Segmenter. What it writes (the
adapted network, snapshots, the summary's record), what it refuses, and that a stopped run
continues adapting from where it stopped."""

import json
import os
import signal

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mslseg.checkpoint import load_checkpoint
from mslseg.cli.app import app
from mslseg.runtime import Segmenter, infer_job
from mslseg.runtime.errors import InputError
from tests.runtime import models

runner = CliRunner()
FRAMES = 24


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    path = tmp_path_factory.mktemp("adapt") / "drive.mp4"
    models.write_video(path, n=FRAMES)
    return path


def _args(video, out, *extra):
    return ["infer", str(video), "--model", str(models.checkpoint()), "--out", str(out), "--device", "cpu",
            "--codec", "mp4v", "--threads", "1", *extra]



def test_adapting_writes_the_adapted_network_snapshots_and_says_what_it_did(video, tmp_path):
    out = tmp_path / "o"
    r = runner.invoke(app, _args(video, out, "--adapt", "msl", "--adapt-every", "2", "--adapt-save", "10",
                                 "--adapt-lr", "0.05"))
    assert r.exit_code == 0, r.output
    line = r.output.strip().splitlines()[-1]
    assert "adapted online (msl, every 2 batch(es)): 12 updates, ms/frame" in line and "without" in line
    assert "with an update, 0 guard reset(s)" in line and line.endswith(f"-> {out / 'adapted.pt'}")
    a = json.loads((out / "summary.json").read_text())["adaptation"]
    assert (a["frames"], a["batches"], a["updates"]) == (FRAMES, FRAMES, 12)
    assert a["settings"]["lr"] == 0.05 and a["settings"]["params"] == "norm"
    assert a["snapshots"] == [str(out / "adapted" / f"frame-{n:07d}.pt") for n in (10, 20)]
    # the adapted network: an ordinary checkpoint whose norm layers moved and whose convolutions did not
    start, adapted = load_checkpoint(models.checkpoint())["state_dict"], load_checkpoint(out / "adapted.pt")["state_dict"]
    moved = {k for k, v in start.items() if v.is_floating_point() and not torch.equal(v, adapted[k])}
    assert "backbone.bn1.weight" in moved and "backbone.bn1.running_mean" in moved
    assert not any(k.endswith("conv1.weight") or k.startswith("head_main") for k in moved)
    with Segmenter(out / "adapted.pt", device="cpu") as seg:  # plain inference from the snapshot
        assert seg(models.frames(1)[0]).labels.shape == (48, 64)


def test_what_cannot_adapt_is_one_line(video, tmp_path):
    onnx = models.onnx_model("uint8_labels")
    r = runner.invoke(app, ["infer", str(video), "--model", str(onnx), "--out", str(tmp_path / "a"), "--adapt", "msl"])
    assert r.exit_code != 0 and "needs torch's gradients" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, _args(video, tmp_path / "b", "--adapt-every", "4"))
    assert r.exit_code != 0 and "--adapt-every set(s) online adaptation, which is off" in r.output
    r = runner.invoke(app, _args(video, tmp_path / "c", "--adapt", "msl", "--cluster", "auto"))
    assert r.exit_code != 0 and "drop --cluster" in r.output
    with pytest.raises(InputError, match="adapt_from continues online adaptation"):
        Segmenter(models.checkpoint(), device="cpu", adapt_from=models.checkpoint())
    with pytest.raises(InputError, match="is no snapshot of online adaptation"):
        Segmenter(models.checkpoint(), device="cpu", adapt="msl", adapt_from=models.checkpoint())
    with pytest.raises(InputError, match="drop bf16"):
        Segmenter(models.checkpoint(), device="cpu", adapt="msl", bf16=True)
    with pytest.raises(InputError, match="unknown setting"):
        Segmenter(models.checkpoint(), device="cpu", adapt={"objective": "msl", "evry": 2})


def test_the_segmenter_adapts_as_it_segments_and_continues_from_a_snapshot(tmp_path):
    frames = models.frames(6)
    with Segmenter(models.checkpoint(), device="cpu") as static:
        plain = [static(f).labels for f in frames]
    with Segmenter(models.checkpoint(), device="cpu", adapt={"objective": "msl", "lr": 0.05}) as seg:
        first = [seg(f).labels for f in frames[:3]]
        assert seg.adaptation.updates == 3 and seg.adaptation.frames == 3
        seg.save_adapted(tmp_path / "snap.pt")
        rest = [seg(f).labels for f in frames[3:]]
    assert any(not np.array_equal(a, b) for a, b in zip(plain, first + rest, strict=True))  # batch statistics at least
    with Segmenter(models.checkpoint(), device="cpu", adapt={"objective": "msl", "lr": 0.05},
                   adapt_from=tmp_path / "snap.pt") as again:
        assert again.adaptation.updates == 3
        assert all(np.array_equal(again(f).labels, r) for f, r in zip(frames[3:], rest, strict=True))
    with pytest.raises(InputError, match="the saved adaptation used msl, not entropy"):
        Segmenter(models.checkpoint(), device="cpu", adapt="entropy", adapt_from=tmp_path / "snap.pt")


@pytest.mark.slow
def test_a_stopped_run_keeps_its_adaptation_and_resume_continues_it(video, tmp_path, monkeypatch):
    out = tmp_path / "cut"
    real = infer_job.run_infer

    def run_infer(sources, segmenter, opts, *, on_frame=None, stop=None):
        def frame(report):
            if report.frames == 8:
                os.kill(os.getpid(), signal.SIGTERM)
            on_frame(report)

        return real(sources, segmenter, opts, on_frame=frame, stop=stop)

    monkeypatch.setattr(infer_job, "run_infer", run_infer)
    r = runner.invoke(app, _args(video, out, "--adapt", "msl"))
    assert r.exit_code == 143, r.output
    done = json.loads((out / "summary.json").read_text())["adaptation"]["frames"]
    assert 8 <= done < FRAMES and (out / "adapted.pt").is_file()
    assert "continue with: the same command with --resume" in r.output
    monkeypatch.undo()
    r = runner.invoke(app, [*_args(video, out, "--adapt", "msl"), "--resume"])
    assert r.exit_code == 0, r.output
    assert f"continuing online adaptation from {out / 'adapted.pt'}" in r.output
    a = json.loads((out / "summary.json").read_text())["adaptation"]
    assert a["frames"] == done + FRAMES and a["updates"] == done + FRAMES  # the video again, on top of what it learnt


@pytest.mark.slow
def test_a_snapshot_continues_only_from_the_model_it_was_adapted_from(tmp_path):
    import shutil

    from mslseg.checkpoint import save_checkpoint

    with Segmenter(models.checkpoint(), device="cpu", adapt="msl") as seg:
        seg(models.frames(1)[0])
        seg.save_adapted(tmp_path / "snap.pt")
    other = tmp_path / "other.pt"
    shutil.copy(models.checkpoint(), other)
    with Segmenter(other, device="cpu", adapt="msl", adapt_from=tmp_path / "snap.pt") as same:  # same bytes
        assert same.adaptation.frames == 1
    net = models._net()
    with torch.no_grad():
        net.head_main.convs[0].weight.add_(1.0)
    save_checkpoint(other, net, models.meta())
    with pytest.raises(InputError, match="was adapted from another model than other.pt"):
        Segmenter(other, device="cpu", adapt="msl", adapt_from=tmp_path / "snap.pt")

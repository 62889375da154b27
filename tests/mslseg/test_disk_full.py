"""Checkpoints and metrics on a really full or read-only disk: OutputError, the previous last.pt
byte for byte, metrics.jsonl with whole lines only, no temporary files left."""

from __future__ import annotations

import json

import pytest

from mslseg.checkpoint import load_checkpoint, save_checkpoint
from mslseg.runtime.errors import OutputError
from mslseg.training.run_log import append_metrics
from tests.fullfs import assert_one_line_error, fill, leftovers, mslseg, read_only, snapshot, tmpfs
from tests.runtime import models


def test_checkpoint_on_a_full_disk_keeps_the_previous_last_pt(tmp_path):
    net, meta = models._net(), models.meta()
    with tmpfs(tmp_path / "run", "64m") as run:  # the checkpoint is ~45 MB
        save_checkpoint(run / "last.pt", net, meta, training={"iteration": 2})
        fill(run, 1024 * 1024)
        before = snapshot(run)
        with pytest.raises(OutputError) as caught:
            save_checkpoint(run / "last.pt", net, meta, training={"iteration": 4})
        assert str(caught.value) == (
            f"the disk holding {run} is full (No space left on device) while writing last.pt; "
            f"free some space or choose another output folder; {run / 'last.pt'} is unchanged")
        assert snapshot(run) == before and not leftovers(run)
        assert load_checkpoint(run / "last.pt")["training"] == {"iteration": 2}
        read_only(run)
        with pytest.raises(OutputError, match=r"is on a read-only filesystem .* while writing best\.pt"):
            save_checkpoint(run / "best.pt", net, meta)


def test_metrics_line_refused_by_a_full_disk_is_not_left_torn(tmp_path):
    with tmpfs(tmp_path / "run", "1m") as run:
        append_metrics(run / "metrics.jsonl", {"iteration": 1, "loss": 1.0})
        before = (run / "metrics.jsonl").read_bytes()
        fill(run, 0)
        with pytest.raises(OutputError, match=r"is full .* while writing metrics\.jsonl; .* is unchanged"):
            for i in range(2, 2000):  # the last page of the file has room for a few lines
                append_metrics(run / "metrics.jsonl", {"iteration": i, "loss": 1.0, "pad": "x" * 200})
        lines = (run / "metrics.jsonl").read_text().splitlines()
        assert (run / "metrics.jsonl").read_bytes().startswith(before)
        assert [json.loads(line)["iteration"] for line in lines] == list(range(1, len(lines) + 1))


@pytest.mark.slow
def test_train_resumed_onto_a_full_disk(synth_data, tmp_path):
    args = ["-c", "synthetic", "--source", synth_data / "gta5", "--iterations", "4", "--size", "64x32",
            "--batch", "2", "--set", "train.checkpoint_every=2", "--set", "target_val=null"]
    with tmpfs(tmp_path / "disk", "128m") as disk:
        run = disk / "run"
        first = mslseg("train", *args, "--out", run, "--set", "train.stop_after=2")
        assert first.returncode == 0, first.stderr
        fill(disk, 2 * 1024 * 1024)
        before = snapshot(run)
        done = mslseg("train", "--resume", run)
        assert_one_line_error(done, f"the disk holding {run} is full", f"{run / 'last.pt'} is unchanged",
                              progress=True)
        assert snapshot(run)["last.pt"] == before["last.pt"] and not leftovers(run)

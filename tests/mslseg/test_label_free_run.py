"""Label-free validation inside `mslseg adapt` without target labels: a run that collapses on
purpose (MinEnt at a large lambda_T) is stopped with the checkpoint from before the collapse; a
healthy run (the default IW-MSL) is not flagged; a run from a fresh head is not judged against it.
And `mslseg rank`, which ranks such checkpoints on unlabelled footage."""

import json
import re
from pathlib import Path

import cv2
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.data.synthetic import write_cityscapes_layout, write_gta5_layout, write_target_video

runner = CliRunner()
TINY = ["--size", "64x32", "--batch", "2", "--device", "cpu", "--set", "train.workers=0",
        "--set", "target_val=null"]


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    """A DeepLab trained on the synthetic source (it predicts several classes on the target), and
    40 unlabelled target frames (4 held out)."""
    root = tmp_path_factory.mktemp("lf")
    write_gta5_layout(root / "gta5", 12, "64x32", seed=0)
    write_cityscapes_layout(root / "target", 40, 1, "64x32", seed=1)
    r = runner.invoke(app, ["train", "-c", "synthetic", "--source", str(root / "gta5"), "--out", str(root / "src"),
                            "--iterations", "40", *TINY])
    assert r.exit_code == 0, r.output
    return root


def _adapt(root, out, *extra):
    return runner.invoke(app, ["adapt", "-c", "synthetic", "--source", str(root / "gta5"), "--target",
                               str(root / "target"), "--init", str(root / "src" / "best.pt"), "--out", str(out),
                               "--set", "train.eval_every=1", *TINY, *extra])


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()
            if "label_free" in line]


def test_minent_at_a_large_lambda_collapses_and_stops_with_the_checkpoint_from_before(source_model, tmp_path):
    out = tmp_path / "minent"
    r = _adapt(source_model, out, "--method", "minent", "--iterations", "30", "--set", "method.lambda_target=10")
    assert r.exit_code == 1
    line = r.output.strip().splitlines()[-1]
    m = re.fullmatch(r"error: adaptation collapsed by iteration (\d+): (.+) vanished from the predictions on the "
                     r"held-out target frames; best\.pt holds (iteration (\d+), from before it|the model the run "
                     r"started from, which scored higher than every evaluation since)\. Lower "
                     r"method\.lambda_target .*", line)
    assert m, line
    collapsed_at, kept = int(m[1]), int(m[4] or 0)
    assert kept < collapsed_at < 30
    records = _records(out)
    # the starting model (the reference, iteration 0), then every evaluation up to the collapse
    assert [rec["iteration"] for rec in records] == list(range(0, collapsed_at + 1))
    assert records[0]["reference"] and not any("reference" in rec for rec in records[1:])
    assert "collapse" in records[-1] and not any("collapse" in rec for rec in records[:-1])
    # best.pt is the healthy evaluation with the highest score
    healthy = records[:-1]  # the starting model is a candidate too: adaptation may not help
    assert max(healthy, key=lambda rec: rec["label_free"]["value"])["iteration"] == kept
    assert (out / "best.pt").is_file()
    assert (out / "curves.png").is_file()  # how it came to the collapse
    assert "collapse judged against the starting model" in r.output.splitlines()[0]


@pytest.mark.slow
def test_a_healthy_run_is_not_flagged_and_says_which_score_chose_best(source_model, tmp_path):
    out = tmp_path / "iwmsl"
    r = _adapt(source_model, out, "--iterations", "12")
    assert r.exit_code == 0, r.output
    records = _records(out)  # the starting model's, then the 12 evaluations'
    assert [rec["iteration"] for rec in records] == list(range(13)) and not any("collapse" in rec for rec in records)
    assert all(rec["label_free"]["vanished"] == [] for rec in records)
    best = max(records, key=lambda rec: rec["label_free"]["value"])  # the starting model competes
    at = ("iteration 0, the model the run started from (no evaluation scored higher: adaptation did not help by "
          "this score)" if best["iteration"] == 0 else f"iteration {best['iteration']}")
    assert (f"best.pt: im {best['label_free']['value']:.3f} at {at} on 4 held-out target frames, no "
            "labels used") in r.output


def test_a_run_from_a_fresh_head_is_not_judged_before_its_model_knows_the_source(source_model, tmp_path):
    """A random head's class shares are noise, and its first steps swing between classes: no
    reference, no collapse, and best.pt is the last iteration, saying why."""
    out = tmp_path / "fresh"
    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--source", str(source_model / "gta5"), "--target",
                            str(source_model / "target"), "--out", str(out), "--iterations", "3",
                            "--set", "train.eval_every=1", *TINY])
    assert r.exit_code == 0, r.output
    first, last = r.output.splitlines()[0], r.output.strip().splitlines()[-1]
    assert "collapse judged against the first evaluation whose model knows the source (the starting model does " \
           "not: source pixel accuracy" in first
    assert re.search(r"best\.pt: the last iteration \(no evaluated model knew the source yet: source pixel "
                     r"accuracy \d+%, needs \d+%, .*; train longer or start from a source model\)$", last), last
    records = _records(out)
    assert len(records) == 3 and not any("collapse" in rec or "reference" in rec for rec in records)
    assert all(rec["label_free"]["value"] is None for rec in records)
    assert (out / "best.pt").is_file()


@pytest.mark.slow
def test_rank_puts_the_collapsed_checkpoint_last_and_shows_why(source_model, tmp_path):
    root = source_model
    write_target_video(tmp_path / "drive.mp4", 40, "64x32", seed=5)
    fresh = tmp_path / "fresh"  # 2 steps from a random head: it predicts one or two classes
    r = runner.invoke(app, ["adapt", "-c", "synthetic", "--source", str(root / "gta5"), "--target",
                            str(root / "target"), "--out", str(fresh), "--iterations", "2", *TINY])
    assert r.exit_code == 0, r.output
    healthy = tmp_path / "healthy"
    assert _adapt(root, healthy, "--iterations", "2").exit_code == 0
    out = tmp_path / "rank"
    r = runner.invoke(app, ["rank", str(tmp_path / "drive.mp4"), str(fresh / "best.pt"), str(healthy / "best.pt"),
                            "--reference", str(root / "src" / "best.pt"), "--source", str(root / "gta5"),
                            "--frames", "8", "--out", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "rank.json").read_text())
    order = [row["checkpoint"] for row in report["ranking"]]
    assert order == [str(healthy / "best.pt"), str(fresh / "best.pt")]
    assert report["frames"] == 8 and report["reference"] == str(root / "src" / "best.pt")
    first, last = report["ranking"]
    assert first["collapse"] is None and "vanished from the predictions on the footage" in last["collapse"]
    assert first["score"] > last["score"]
    low, high = first["atc_interval"]
    assert 0 <= low <= first["atc"] <= high <= 1  # ATC with its 95% interval over the frames
    assert 0.5 < first["source_accuracy"] <= 1
    assert f"{fresh / 'best.pt'} collapsed: " in r.output
    assert r.output.strip().splitlines()[-1].startswith(f"ship {healthy / 'best.pt'} (im ")
    grid = cv2.imread(str(out / "disagreement.png"))
    assert grid is not None and grid.shape[1] == 4 * 256  # frame | reference | model | where they differ
    assert cv2.imread(str(out / "class_share.png")) is not None


def test_rank_measures_an_export_as_its_checkpoint_and_refuses_a_second_run_into_one_folder(source_model, tmp_path):
    """An ONNX export runs through the runtime's Segmenter: the same labels and confidence as its
    checkpoint give the same signals (entropy and IM need the probabilities: empty); a labels-only
    export has no confidence, so no score, and ranks after."""
    root, ckpt = source_model, str(source_model / "src" / "best.pt")
    write_target_video(tmp_path / "drive.mp4", 10, "64x32", seed=5)
    logits, labels = tmp_path / "m.onnx", tmp_path / "labels.onnx"
    assert runner.invoke(app, ["export", ckpt, "--out", str(logits)]).exit_code == 0
    assert runner.invoke(app, ["export", ckpt, "--out", str(labels), "--output", "labels"]).exit_code == 0
    args = ["rank", str(tmp_path / "drive.mp4"), str(labels), str(logits), ckpt, "--reference", ckpt,
            "--source", str(root / "gta5"), "--frames", "4", "--out", str(tmp_path / "r"), "--device", "cpu"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"ranking by class_confidence: {labels} is an exported model, which gives no im")
    rows = {Path(row["checkpoint"]).name: row for row in json.loads((tmp_path / "r" / "rank.json").read_text())["ranking"]}
    pt, onnx, only = rows["best.pt"], rows["m.onnx"], rows["labels.onnx"]
    for key in ("score", "confidence", "flip_agreement", "atc", "source_accuracy"):
        assert onnx[key] == pytest.approx(pt[key], abs=2e-3), key
    assert onnx["class_share"] == pytest.approx(pt["class_share"], abs=2e-3)
    assert onnx["entropy"] is None and onnx["im"] is None and onnx["agreement"] > 0.99
    assert only["score"] is None and only["confidence"] is None and only["class_share"] == pytest.approx(pt["class_share"], abs=2e-3)
    assert [Path(row["checkpoint"]).name for row in json.loads((tmp_path / "r" / "rank.json").read_text())["ranking"]][-1] == "labels.onnx"
    again = runner.invoke(app, args)
    assert again.exit_code != 0 and "--overwrite" in again.output and "Traceback" not in again.output


@pytest.mark.slow
def test_a_collapse_under_torchrun_stops_every_rank_together(source_model, tmp_path):
    """Rank 0 evaluates; its collapse reaches the other rank, so neither hangs in the next step."""
    import os
    import subprocess
    import sys

    root, out = source_model, tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           "--master_port=29657", "-m", "mslseg", "adapt", "-c", "synthetic", "--source", str(root / "gta5"),
           "--target", str(root / "target"), "--init", str(root / "src" / "best.pt"), "--out", str(out),
           "--method", "minent", "--iterations", "30", "--set", "method.lambda_target=10",
           "--set", "train.eval_every=1", *TINY]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240,
                       env=os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"})
    assert r.returncode != 0
    assert r.stderr.count("error: adaptation collapsed by iteration") == 2, r.stderr[-3000:]  # both ranks say it
    assert (out / "best.pt").is_file() and (out / "curves.png").is_file()  # rank 1 waited for rank 0

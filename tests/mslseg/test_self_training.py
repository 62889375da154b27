"""Self-training methods (dacs, daformer, mic, iw-msl+daformer) through `mslseg adapt`: the teacher is
saved and resumed bitwise, best.pt holds the deployed network, rare class sampling follows the class
counts, the warm-up follows the method's recipe, and two gloo ranks keep one teacher."""

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from mslseg.checkpoint import load_checkpoint
from mslseg.cli.app import app
from mslseg.methods import METHODS
from mslseg.training.config import OptimConfig, load_config
from mslseg.training.rare_class import COUNTS_FILE
from mslseg.training.step import WARMUP_RATIO, set_poly_lr

runner = CliRunner()
ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


def _adapt(synth_data, out, method, iterations=4, *extra):
    return ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target",
            str(synth_data / "cityscapes"), "--method", method, "--size", "64x32", "--batch", "2",
            "--iterations", str(iterations), "--out", str(out), "--device", "cpu", "--set", "train.workers=0",
            "--set", "train.log_every=1", "--set", "train.checkpoint_every=100", "--set", "target_val=null", *extra]


def _records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _equal_states(a, b):
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


@pytest.mark.slow
def test_mic_run_saves_its_teacher_deploys_it_and_resumes_bitwise(synth_data, tmp_path):
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "ref", "mic", 4, "--set", "method.deploy=teacher"))
    assert r.exit_code == 0, r.output
    assert "adapt: mic (teacher alpha 0.999, pseudo-labels >= 0.968" in r.output and "MIC 0.7 of 4-px blocks" in r.output
    assert "lambda_T" not in r.output.splitlines()[0]  # no target loss of its own
    ref = load_checkpoint(tmp_path / "ref" / "last.pt")
    teacher = ref["training"]["teacher"]
    # best.pt holds the teacher (method.deploy: teacher), which differs from the student it follows
    _equal_states(load_checkpoint(tmp_path / "ref" / "best.pt")["state_dict"], teacher)
    assert any(not torch.equal(v, ref["state_dict"][k]) for k, v in teacher.items() if v.is_floating_point())
    records = _records(tmp_path / "ref")
    assert all(r["loss_mic"] >= 0 and 0 <= r["confident"] <= 1 and 0 <= r["teacher_alpha"] < 1 for r in records)
    assert (tmp_path / "ref" / COUNTS_FILE).is_file()  # rare class sampling counted the source labels

    cut = tmp_path / "cut"
    r = runner.invoke(app, _adapt(synth_data, cut, "mic", 4, "--set", "train.stop_after=2",
                                  "--set", "method.deploy=teacher"))
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["adapt", "--resume", str(cut), "--set", "train.stop_after=null"])
    assert r.exit_code == 0, r.output
    got = load_checkpoint(cut / "last.pt")
    _equal_states(got["state_dict"], ref["state_dict"])
    _equal_states(got["training"]["teacher"], teacher)
    strip = [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]
    assert [{k: v for k, v in r.items() if k != "images_per_s"} for r in _records(cut)] == strip


def test_evaluations_score_the_deployed_network_and_the_other(synth_data, tmp_path):
    """The student is deployed by default (it beat the teacher in 12 of 12 runs of the method table)."""
    out = tmp_path / "student"
    args = _adapt(synth_data, out, "dacs", 2)[:-2] + ["--set", f"target_val.root={synth_data / 'cityscapes'}",
                                                        "--set", "train.eval_every=1"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    assert "deploys the student)" in r.output.splitlines()[0]
    evals = [r for r in _records(out) if "eval" in r]
    assert len(evals) == 2 and all(e["eval"]["network"] == "student" and e["eval_other"]["network"] == "teacher"
                                   and 0 <= e["eval_other"]["miou"] <= 1 for e in evals)
    last = load_checkpoint(out / "last.pt")
    assert "teacher" in last["training"]


@pytest.mark.slow
def test_sigterm_mid_run_saves_student_and_teacher_and_best_exports(synth_data, tmp_path, monkeypatch):
    """A self-trained best.pt is a plain checkpoint: export and infer take it unchanged."""
    import signal

    import numpy as np

    from mslseg.training import loop

    real = loop.adapt_step

    def sigterm_during(*args, iteration, **kwargs):
        if iteration == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, iteration=iteration, **kwargs)

    out = tmp_path / "cut"
    monkeypatch.setattr(loop, "adapt_step", sigterm_during)
    r = runner.invoke(app, _adapt(synth_data, out, "dacs", 3))
    assert r.exit_code == 143, r.output
    training = load_checkpoint(out / "last.pt")["training"]
    assert training["iteration"] == 2 and training["teacher"]
    monkeypatch.undo()
    r = runner.invoke(app, ["adapt", "--resume", str(out)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(out / "best.pt"), "-o", str(tmp_path / "st.onnx")])
    assert r.exit_code == 0, r.output
    from mslseg.runtime import Segmenter

    frame = np.random.default_rng(0).integers(0, 255, (32, 64, 3), dtype=np.uint8)
    labels = Segmenter(tmp_path / "st.onnx", threads=1)(frame).labels
    assert labels.shape == (32, 64) and labels.max() < 19


def test_a_run_without_a_teacher_is_not_resumed_as_a_self_training_run(synth_data, tmp_path):
    out = tmp_path / "msl"
    r = runner.invoke(app, _adapt(synth_data, out, "msl", 2, "--set", "train.stop_after=1"))
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["adapt", "--resume", str(out), "--set", "method.target_loss=dacs"])
    assert r.exit_code == 1 and "holds no teacher" in r.output and "--init" in r.output


def test_classmix_needs_one_crop_size_and_says_so(synth_data, tmp_path):
    r = runner.invoke(app, _adapt(synth_data, tmp_path / "sizes", "dacs", 1, "--set", "target.size=[32,16]"))
    assert r.exit_code == 1
    assert "ClassMix" in r.output and "64x32" in r.output and "32x16" in r.output


def test_warm_up_rises_linearly_from_a_millionth_then_follows_poly():
    cfg = OptimConfig(lr=1.0, poly_power=1.0, head_lr_mult=1.0)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    lrs = [set_poly_lr(opt, cfg, it, 100, warmup=10) for it in (0, 5, 10, 50)]
    assert lrs[0] == pytest.approx(WARMUP_RATIO)
    assert lrs[1] == pytest.approx(0.95 * (0.5 + 0.5 * WARMUP_RATIO))
    assert lrs[2:] == pytest.approx([0.9, 0.5])


def test_the_methods_recipe_sets_the_warm_up_unless_the_config_does():
    cfg = load_config("synthetic", {"method.target_loss": "daformer", "train.iterations": 400}, adapt=True)
    assert cfg.optim.warmup_iters == 15  # DAFormer's 1500 of 40000
    cfg = load_config("synthetic", {"method.target_loss": "daformer", "optim.warmup_iters": 0}, adapt=True)
    assert cfg.optim.warmup_iters == 0
    cfg = load_config("synthetic", {"method.target_loss": "iw-msl"}, adapt=True)
    assert cfg.optim.warmup_iters == 0
    assert {"dacs", "daformer", "mic", "iw-msl+daformer"} <= {n for n, m in METHODS.items() if m.self_training}


@pytest.mark.slow
def test_two_gloo_ranks_keep_one_teacher_and_resume_it(synth_data, tmp_path):
    """Each rank's teacher follows its own student; DDP keeps the students equal, so the teachers
    are too (the loop checks it at every checkpoint and fails the run otherwise)."""
    args = _adapt(synth_data, tmp_path / "two", "daformer", 4, "--set", "train.stop_after=2",
                  "--set", "train.checkpoint_every=1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           "--master_port=29641", "-m", "mslseg"]
    r = subprocess.run(cmd + args, env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert load_checkpoint(tmp_path / "two" / "last.pt")["training"]["iteration"] == 2
    r = subprocess.run(cmd[:-3] + ["--master_port=29642", "-m", "mslseg", "adapt", "--resume", str(tmp_path / "two"),
                                   "--set", "train.stop_after=null"], env=ENV, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    last = load_checkpoint(tmp_path / "two" / "last.pt")
    assert last["training"]["iteration"] == 4 and "teacher" in last["training"]


@pytest.mark.slow
def test_the_start_line_says_where_each_teacher_setting_came_from(synth_data, tmp_path):
    config = tmp_path / "mine.yaml"
    config.write_text("method: {pseudo_ignore_top: 2, pseudo_ignore_bottom: 4, rcs_temperature: 0.05}\n"
                      "optim: {warmup_iters: 1}\n")
    args = _adapt(synth_data, tmp_path / "o", "daformer", 2, "--set", "method.teacher_alpha=0.99")
    args[args.index("synthetic")] = str(config)
    args += ["--set", "model.backbone=resnet18"]
    r = runner.invoke(app, args)
    assert r.exit_code == 0, r.output
    line = r.output.splitlines()[0]
    assert ("daformer (teacher alpha 0.99 (command line), pseudo-labels >= 0.968, ClassMix + jitter/blur, ignoring "
            "2 top / 4 bottom rows (config), rare class sampling T 0.05 (config), deploys the student)") in line
    assert "warm-up 1 it (config)" in line

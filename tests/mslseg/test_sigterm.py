"""SIGTERM (a scheduler's preemption) stops training at a whole step, like a first Ctrl-C.

A real SIGTERM at a seeded random step: the step finishes, last.pt holds it, the run says so and
how to continue, exits 143, and `--resume` ends with the uninterrupted run's weights, bitwise
(CPU). In one process (in-process and as a real `python -m mslseg` process) and under torchrun
with two gloo ranks, where only one rank gets the signal and both must stop after the same step.
"""

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from typer.testing import CliRunner

from mslseg.checkpoint import load_checkpoint
from mslseg.cli.app import app
from mslseg.training import loop
from mslseg.training.config import load_config
from mslseg.training.resume import RunInterrupted, StopRequested, stop_signals

ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
runner = CliRunner()


def test_stop_signals_hold_the_first_ignore_a_repeated_sigterm_and_let_a_second_ctrl_c_through():
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with stop_signals() as stops:
        stops.holding = True
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)  # Slurm and torchrun may both deliver it: ignored
        assert stops.signum == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt) as second:
            os.kill(os.getpid(), signal.SIGINT)  # the user does not want to wait
        assert not isinstance(second.value, StopRequested)
        with pytest.raises(StopRequested):
            with stops.released():  # an evaluation: a held signal stops it at once
                pass
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with stop_signals() as stops, pytest.raises(StopRequested) as stop:
        os.kill(os.getpid(), signal.SIGTERM)  # not holding (setup): at once
    assert stop.value.signum == signal.SIGTERM


def test_stop_signals_leave_other_threads_and_foreign_handlers_alone():
    seen = []

    def in_thread():
        with stop_signals() as stops:
            seen.append((stops, signal.getsignal(signal.SIGTERM)))

    t = threading.Thread(target=in_thread)
    t.start()
    t.join()
    assert seen[0][1] is signal.SIG_DFL

    def mine(signum, frame):
        seen.append(signum)

    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with stop_signals():
            assert signal.getsignal(signal.SIGTERM) is mine  # an embedding application's own
    finally:
        signal.signal(signal.SIGTERM, previous)


def _train(synth_data, out, iterations=4):
    return ["train", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--size", "32x16", "--batch", "2",
            "--iterations", str(iterations), "--out", str(out), "--device", "cpu", "--set", "target_val=null",
            "--set", "train.workers=0", "--set", "train.log_every=1", "--set", "train.checkpoint_every=100"]


def _same_weights(a, b):
    a, b = load_checkpoint(a)["state_dict"], load_checkpoint(b)["state_dict"]
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def _losses(out):
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "images_per_s"} for r in records]


def test_sigterm_in_a_random_step_saves_that_step_exits_143_and_resumes_bitwise(synth_data, tmp_path,
                                                                                 monkeypatch):
    r = runner.invoke(app, _train(synth_data, tmp_path / "ref"))
    assert r.exit_code == 0, r.output
    step = random.Random(15).randint(1, 3)  # the step the signal lands in
    real = loop.adapt_step

    def sigterm_during(*args, iteration, **kwargs):
        if iteration == step:
            os.kill(os.getpid(), signal.SIGTERM)  # a real SIGTERM to this process, mid-step
        return real(*args, iteration=iteration, **kwargs)

    out = tmp_path / "cut"
    monkeypatch.setattr(loop, "adapt_step", sigterm_during)
    r = runner.invoke(app, _train(synth_data, out))
    assert r.exit_code == 143, r.output
    assert r.output.splitlines()[-2:] == [f"stopped by SIGTERM at iteration {step} of 4; {out}/last.pt holds "
                                          f"iteration {step}", f"continue with: mslseg train --resume {out}"]
    assert load_checkpoint(out / "last.pt")["training"]["iteration"] == step
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    r = runner.invoke(app, ["train", "--resume", str(out)])
    assert r.exit_code == 0, r.output
    _same_weights(tmp_path / "ref" / "last.pt", out / "last.pt")
    assert _losses(out) == _losses(tmp_path / "ref")


def test_sigterm_during_setup_trains_nothing_and_exits_143(synth_data, tmp_path, monkeypatch):
    real = loop._setup

    def setup(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "_setup", setup)
    r = runner.invoke(app, _train(synth_data, tmp_path / "s"))
    assert r.exit_code == 143, r.output
    assert "stopped by SIGTERM before the first step: nothing was trained" in r.output
    assert not (tmp_path / "s" / "last.pt").exists()


@pytest.mark.parametrize("second, saved", [(signal.SIGTERM, 3), (signal.SIGINT, 2)])
def test_a_second_signal_while_last_pt_is_written_leaves_a_whole_one(synth_data, tmp_path, monkeypatch,
                                                                      second, saved):
    """SIGTERM in step 3 of 4 (last.pt holds 2), then another signal while last.pt is being written
    at 3: a repeated SIGTERM is ignored (the write completes); a Ctrl-C abandons it (2 stays)."""
    cfg = load_config("synthetic", {
        "source.root": str(synth_data / "gta5"), "source.size": [32, 16], "target": None, "target_val": None,
        "method.target_loss": "none", "train.iterations": 4, "train.batch_source": 2, "train.workers": 0,
        "train.checkpoint_every": 2, "out": str(tmp_path / "o")}, adapt=False)
    real_step, real_save = loop.adapt_step, torch.save

    def step(*args, iteration, **kwargs):
        if iteration == 3:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(*args, iteration=iteration, **kwargs)

    def save(obj, f, *args, **kwargs):
        if isinstance(obj, dict) and (obj.get("training") or {}).get("iteration") == 3:
            os.kill(os.getpid(), second)  # the temporary file is open
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(loop, "adapt_step", step)
    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunInterrupted) as stop:
        loop.run(cfg)
    assert (stop.value.iteration, stop.value.saved, stop.value.exit_code) == (3, saved, 143)
    assert load_checkpoint(tmp_path / "o" / "last.pt")["training"]["iteration"] == saved
    assert not list((tmp_path / "o").glob(".*.tmp"))


# --- real processes --------------------------------------------------------------------------


def _adapt(synth_data, out, iterations, *extra):
    return ["adapt", "-c", "synthetic", "--source", str(synth_data / "gta5"), "--target",
            str(synth_data / "cityscapes"), "--method", "iw-msl", "--multi-level", "--size", "32x16",
            "--batch", "2", "--iterations", str(iterations), "--out", str(out), "--device", "cpu",
            "--set", "target_val=null", "--set", "train.workers=0", "--set", "train.log_every=1",
            "--set", "train.checkpoint_every=100", *extra]


def _records(out):
    path = out / "metrics.jsonl"
    return path.read_text().count("\n") if path.exists() else 0


def _wait_for(proc, ready, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not ready():
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()[1][-3000:]


@pytest.mark.slow
def test_sigterm_to_a_real_adapt_process_then_resume_equals_the_uninterrupted_run(synth_data, tmp_path):
    iterations, rng = 8, random.Random(143)
    mslseg = [sys.executable, "-m", "mslseg"]
    ref = subprocess.run(mslseg + _adapt(synth_data, tmp_path / "ref", iterations), env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "cut"
    logged = rng.randint(1, iterations - 3)
    proc = subprocess.Popen(mslseg + _adapt(synth_data, out, iterations), env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(proc, lambda: _records(out) >= logged)
    time.sleep(rng.uniform(0.0, 0.3))  # somewhere in the next step (or its data loading)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 143, stderr[-3000:]
    saved = load_checkpoint(out / "last.pt")["training"]["iteration"]
    assert logged <= saved < iterations
    assert stderr.splitlines()[-2:] == [f"stopped by SIGTERM at iteration {saved} of {iterations}; "
                                        f"{out}/last.pt holds iteration {saved}",
                                        f"continue with: mslseg adapt --resume {out}"]
    assert "Traceback" not in stderr
    done = subprocess.run(mslseg + ["adapt", "--resume", str(out)], env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_weights(tmp_path / "ref" / "last.pt", out / "last.pt")
    assert _losses(out) == _losses(tmp_path / "ref")
    assert not list(out.glob(".*.tmp"))


def _torchrun(args, port):
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
            f"--master_port={port}", "-m", "mslseg", *args]


def _worker_pids(proc, timeout=120):
    """The torchrun agent's two worker processes, by LOCAL_RANK."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        children = open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()
        ranks = {}
        for pid in children:
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            rank = [e for e in environ if e.startswith(b"LOCAL_RANK=")]
            if rank:
                ranks[int(rank[0].split(b"=")[1])] = int(pid)
        if len(ranks) == 2:
            return ranks
        time.sleep(0.1)
    raise AssertionError("torchrun started no two workers")


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the workers through /proc")
def test_sigterm_to_one_torchrun_rank_stops_both_after_the_same_step_and_resumes_bitwise(synth_data, tmp_path):
    """The signal reaches rank 1 only (as when ranks get a forwarded signal at different steps): the
    stop flag's all_reduce makes rank 0 stop after the same step and write last.pt."""
    iterations, rng = 8, random.Random(2)
    ref = subprocess.run(_torchrun(_adapt(synth_data, tmp_path / "ref", iterations), 29631), env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-3000:]
    out = tmp_path / "cut"
    logged = rng.randint(1, iterations - 3)
    proc = subprocess.Popen(_torchrun(_adapt(synth_data, out, iterations), 29632), env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers = _worker_pids(proc)
    _wait_for(proc, lambda: _records(out) >= logged)
    time.sleep(rng.uniform(0.0, 0.3))
    os.kill(workers[1], signal.SIGTERM)
    _, stderr = proc.communicate(timeout=300)
    # torchrun exits 1 for failed workers (its own code). Both ranks leave together after rank 0 wrote
    # last.pt (a barrier); whichever reaches exit first exits 143 and torchrun stops the other on its
    # way out (-15): both say SIGTERM, and the checkpoint and the lines below were already written.
    assert proc.returncode == 1
    codes = dict(re.findall(r"rank\s*: (\d) \(local_rank: \d\)\s*exitcode\s*: (-?\d+) ", stderr))
    assert codes and set(codes.values()) <= {"143", "-15"} and "143" in codes.values(), stderr[-3000:]
    saved = load_checkpoint(out / "last.pt")["training"]["iteration"]
    assert logged <= saved < iterations
    assert f"stopped by SIGTERM at iteration {saved} of {iterations}; {out}/last.pt holds iteration {saved}" \
        in stderr, stderr[-3000:]
    assert f"continue with: mslseg adapt --resume {out} (under torchrun, as before)" in stderr
    done = subprocess.run(_torchrun(["adapt", "--resume", str(out)], 29633), env=ENV, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    _same_weights(tmp_path / "ref" / "last.pt", out / "last.pt")
    assert _losses(out) == _losses(tmp_path / "ref")

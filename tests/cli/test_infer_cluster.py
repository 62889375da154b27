"""`mslseg infer --cluster` on a real Ray (started here, 127.0.0.1, 2 CPUs): the folder of a local run,
a killed worker's source redone, --resume across cluster and local runs, one line without Ray."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from tests.runtime import models

runner = CliRunner()
ENV = os.environ | {"OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    import logging

    # ray.init installs its own SIGTERM handler, which would outlive this module and change what later tests
    # of SIGTERM see: the CLI restores the handlers around its run, and so does this fixture
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False, logging_level=logging.ERROR)
    for s, handler in handlers.items():
        signal.signal(s, handler)
    yield ray
    ray.shutdown()
    for s, handler in handlers.items():
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "m.onnx"
    shutil.copy(models.onnx_model("uint8_labels"), path)
    return path


def _videos(folder, lengths):
    folder.mkdir(parents=True, exist_ok=True)
    return [models.write_video(folder / f"v{i}.mp4", n=n) for i, n in enumerate(lengths)]


def _args(model, sources, out, *extra):
    return ["infer", *map(str, sources), "--model", str(model), "--out", str(out), "--codec", "mp4v",
            "--threads", "1", "--batch", "2", *extra]


def _same_outputs(ref, out):
    """Every file of `ref` in `out` and nothing else: decoded frames, PNG bytes, area rows, markers."""
    def files(root):
        return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != "summary.json")

    assert files(ref) == files(out)
    for rel in files(ref):
        if rel.suffix == ".mp4":
            a, b = models.decoded_frames(ref / rel), models.decoded_frames(out / rel)
            assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), rel
        elif rel.parts[0] == ".done":
            mine, theirs = json.loads((ref / rel).read_text()), json.loads((out / rel).read_text())
            for marker in (mine, theirs):  # the folder a run wrote to (a copied folder keeps the old one)
                marker["outputs"] = [Path(o).name for o in marker["outputs"]]
            assert mine == theirs, rel
        else:
            assert (ref / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert not [p for p in out.rglob("*") if ".partial" in p.name or p.suffix == ".tmp" or p.name == ".parts"]


def _local(model, sources, out):
    r = runner.invoke(app, _args(model, sources, out))
    assert r.exit_code == 0, r.output
    return out


@pytest.mark.slow
def test_six_videos_on_two_workers_give_the_folder_of_a_local_run(ray_session, model, tmp_path):
    videos = _videos(tmp_path / "archive", [5, 9, 4, 7, 6, 8])
    ref = _local(model, [tmp_path / "archive"], tmp_path / "ref")
    out = tmp_path / "cluster"
    r = runner.invoke(app, _args(model, [tmp_path / "archive"], out, "--cluster", "auto", "--workers", "2"))
    assert r.exit_code == 0, r.output
    assert "2 worker(s)" in r.output and "39 frames" in r.output
    _same_outputs(ref, out)
    summary = json.loads((out / "summary.json").read_text())
    assert [s["name"] for s in summary["sources"]] == [str(v) for v in videos]
    assert {s["worker"] for s in summary["sources"]} == {"w1", "w2"}
    assert all(s["fps"] > 0 and s["attempts"] == 1 and s["problems"] == [] for s in summary["sources"])
    assert summary["frames"] == 39 and set(summary["stage_ms"]) == {"decode", "pre", "infer", "post", "encode"}


def _cluster(model, sources, out, *, resume=False, stop_when=None, kill_when=None):
    """run_cluster as the CLI calls it; `stop_when` / `kill_when` look at each ClusterProgress."""
    from mslseg.runtime.cluster import ClusterOptions, run_cluster
    from mslseg.runtime.cluster.units import plan_units
    from mslseg.runtime.infer_job import InferOptions
    from mslseg.runtime.io.sources import FrameRange

    stop = threading.Event()
    killed = []

    def on_progress(p):
        if stop_when is not None and stop_when(p):
            stop.set()
        for busy in p.busy:
            if kill_when is not None and not killed and kill_when(busy):
                killed.append(busy)
                os.kill(busy["pid"], signal.SIGKILL)

    summary = run_cluster(plan_units(list(map(str, sources))), model,
                          InferOptions(out=out, codec="mp4v", resume=resume),
                          ClusterOptions(workers=2), segmenter_options={"device": "cpu", "batch_size": 2, "threads": 1},
                          frames=FrameRange(), stop=stop, on_progress=on_progress)
    return summary, killed


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_its_video_redone_from_the_first_frame(ray_session, model, tmp_path):
    a, b, c = _videos(tmp_path / "in", [6, 60, 6])
    ref = _local(model, [a, b, c], tmp_path / "ref")
    out = tmp_path / "cluster"
    summary, killed = _cluster(model, [a, b, c], out,
                               kill_when=lambda busy: busy["source"] == str(b) and busy["frames"] >= 6)
    assert killed and not summary.interrupted
    assert summary.cluster["restarts"] == 1 and len(summary.cluster["workers"]) == 3
    redone = json.loads((out / "summary.json").read_text())["sources"][1]
    assert redone["attempts"] == 2 and redone["frames"] == 60 and redone["complete"]
    _same_outputs(ref, out)


@pytest.mark.slow
def test_resume_across_cluster_and_local_runs(ray_session, model, tmp_path):
    videos = _videos(tmp_path / "in", [4, 4, 40, 40])
    ref = _local(model, videos, tmp_path / "ref")

    cut = tmp_path / "cut"
    summary, _ = _cluster(model, videos, cut, stop_when=lambda p: p.sources_done >= 2)
    assert summary.interrupted
    marked = sorted(p.name for p in (cut / ".done").iterdir())
    assert 2 <= len(marked) < 4
    assert not [p for p in cut.rglob("*") if ".partial" in p.name or p.name == ".parts"]
    rows = (cut / "areas.csv").read_text().splitlines()[1:]
    assert len(rows) == json.loads((cut / "summary.json").read_text())["frames"]  # stopped ones: a prefix, as local

    local_resumed = tmp_path / "local-resumed"
    shutil.copytree(cut, local_resumed)
    r = runner.invoke(app, [*_args(model, videos, local_resumed), "--resume"])
    assert r.exit_code == 0 and f"({len(marked)} source(s) complete from an earlier run)" in r.output, r.output
    _same_outputs(ref, local_resumed)

    r = runner.invoke(app, [*_args(model, videos, cut, "--cluster", "auto"), "--resume"])
    assert r.exit_code == 0 and f"({len(marked)} source(s) complete from an earlier run)" in r.output, r.output
    _same_outputs(ref, cut)

    # and a local run stopped after its second source, resumed on the cluster
    from mslseg.runtime import Segmenter
    from mslseg.runtime.infer_job import InferOptions, run_infer
    from mslseg.runtime.io.sources import open_sources

    local_cut = tmp_path / "local-cut"
    stop = threading.Event()
    with Segmenter(model, device="cpu", batch_size=2, threads=1) as seg:
        run_infer([s for v in videos for s in open_sources(str(v))], seg, InferOptions(out=local_cut, codec="mp4v"),
                  stop=stop, on_frame=lambda rep: stop.set() if rep.name == str(videos[2]) else None)
    assert len(list((local_cut / ".done").iterdir())) == 2
    r = runner.invoke(app, [*_args(model, videos, local_cut, "--cluster", "auto"), "--resume"])
    assert r.exit_code == 0 and "(2 source(s) complete from an earlier run)" in r.output, r.output
    _same_outputs(ref, local_cut)


@pytest.mark.slow
def test_a_bad_video_is_reported_and_the_archive_goes_on(ray_session, model, tmp_path):
    _videos(tmp_path / "archive", [4, 5])
    junk = tmp_path / "archive" / "v2.mp4"
    junk.write_bytes(b"\x00\x01garbage" * 500)
    out = tmp_path / "out"
    r = runner.invoke(app, _args(model, [tmp_path / "archive"], out, "--cluster", "auto"))
    assert r.exit_code == 1, r.output
    errors = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "cannot decode" in errors[0] and str(junk) in errors[0], r.output
    summary = json.loads((out / "summary.json").read_text())
    assert [s["frames"] for s in summary["sources"]] == [4, 5, 0]
    assert sorted(p.name for p in (out / ".done").iterdir()) == ["v0.json", "v1.json"]


_NO_RAY = """
import sys
class NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ModuleNotFoundError("No module named 'ray'", name="ray")
sys.meta_path.insert(0, NoRay())
from mslseg.cli.app import main
sys.argv = ["mslseg", *sys.argv[1:]]
main()
"""


def test_without_ray_cluster_says_how_to_install_it(tmp_path, model):
    video = models.write_video(tmp_path / "a.mp4", n=2)
    args = _args(model, [video], tmp_path / "out", "--cluster", "auto")
    r = subprocess.run([sys.executable, "-c", _NO_RAY, *args], capture_output=True, text=True, timeout=120,
                       env={**ENV, "RAY_ADDRESS": ""})
    assert r.returncode == 1, r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and "'ray'" in lines[0] and "mslseg[cluster]" in lines[0], r.stderr
    assert not (tmp_path / "out").exists()


def test_a_local_run_imports_no_ray(tmp_path, model):
    video = models.write_video(tmp_path / "a.mp4", n=2)
    code = ("import sys\nfrom mslseg.cli.app import main\nsys.argv = ['mslseg', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "print('ray' in sys.modules, 'mslseg.runtime.cluster.run' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code, *_args(model, [video], tmp_path / "out")],
                       capture_output=True, text=True, timeout=120, env=ENV)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "False False"


def test_plain_progress_line_outside_a_terminal():
    from mslseg.cli.infer_cluster import ArchiveProgress
    from mslseg.runtime.cluster import ClusterProgress

    line = ArchiveProgress.line(ClusterProgress(3, 6, 120, 240, []), rate=40.0)
    assert line == "cluster 3/6 sources  120/240 frames  40.0 fps  ETA 0:00:03"
    assert ArchiveProgress.line(ClusterProgress(0, 6, 0, None, []), rate=0.0) == "cluster 0/6 sources  0 frames  0.0 fps"


def test_ray_client_without_grpc_says_how_to_install_it(tmp_path, model):
    pytest.importorskip("ray")
    try:
        import grpc  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("grpc is installed: Ray Client would try to connect")
    video = models.write_video(tmp_path / "a.mp4", n=2)
    r = runner.invoke(app, _args(model, [video], tmp_path / "out", "--cluster", "ray://127.0.0.1:1"))
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Ray Client" in lines[0] and "mslseg[cluster]" in lines[0], r.output
    assert not (tmp_path / "out").exists()

"""`mslseg infer --cluster` says at once what it waits for: Ray takes seconds to start or reach."""

import pytest
from typer.testing import CliRunner

from mslseg.cli.app import app
from mslseg.cli.infer_cluster import connecting_line
from mslseg.runtime.cluster.run import ray_target
from tests.runtime import models

runner = CliRunner()


def test_the_line_names_a_local_ray_or_the_address(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert connecting_line(ray_target("auto")) == "starting a local Ray (about 10 s)…"
    assert connecting_line(ray_target("local")) == "starting a local Ray (about 10 s)…"
    assert connecting_line(ray_target("ray://head:10001")) == "connecting to ray://head:10001…"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert connecting_line(ray_target("auto")) == "connecting to 10.0.0.5:6379…"


def test_the_line_comes_before_the_wait(tmp_path):
    pytest.importorskip("ray")
    try:
        import grpc  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("grpc is installed: Ray Client would try to connect")
    video = models.write_video(tmp_path / "a.mp4", n=2)
    r = runner.invoke(app, ["infer", str(video), "--model", str(models.onnx_model("uint8_labels")),
                            "--out", str(tmp_path / "out"), "--cluster", "ray://127.0.0.1:1"])
    lines = r.output.splitlines()
    assert r.exit_code == 1 and lines[0] == "connecting to ray://127.0.0.1:1…", r.output
    assert lines[1].startswith("error:") and "Ray Client" in lines[1], r.output

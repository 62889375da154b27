"""The Ray-free parts of a cluster run: its units are a local run's sources, area parts are exact."""

from __future__ import annotations

import numpy as np
import pytest

from mslseg.runtime.cluster import ClusterOptions, plan_workers
from mslseg.runtime.cluster.units import AreaRows, SourceUnit, append_part, open_unit, plan_units
from mslseg.runtime.errors import InputError
from mslseg.runtime.infer_job import unique_stems
from mslseg.runtime.io.result_writers import AreaTable
from mslseg.runtime.io.sources import FrameRange, open_sources
from tests.runtime import models


def test_units_are_the_sources_of_a_local_run_in_its_order(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for name in ("b.mp4", "a.mp4"):
        models.write_video(folder / name, n=4)
    for i, image in enumerate(models.frames(2)):
        import cv2

        cv2.imwrite(str(folder / f"img{i}.png"), image)
    (folder / ".hidden.mp4").write_bytes(b"")
    other = models.write_video(tmp_path / "a.mp4", n=3)  # same stem as mixed/a.mp4: a_2
    specs = [str(folder), str(other)]
    local = [s for spec in specs for s in open_sources(spec)]
    units = plan_units(specs)
    assert [(u.name, u.kind) for u in units] == [(s.name, s.kind) for s in local]
    assert unique_stems([u.stem for u in units]) == unique_stems([s.stem for s in local])
    opened = open_unit(units[-2], FrameRange(stride=2))  # the images, opened as a worker does
    assert opened.name == str(folder) and opened.expected == 1


def test_cameras_and_streams_are_refused(tmp_path):
    for spec in ("0", "rtsp://camera/stream"):
        with pytest.raises(InputError, match="without --cluster"):
            plan_units([spec])


def test_a_bad_video_is_a_unit_like_any_other(tmp_path):
    (tmp_path / "junk.mp4").write_bytes(b"garbage" * 100)
    assert plan_units([str(tmp_path / "junk.mp4")]) == [
        SourceUnit(str(tmp_path / "junk.mp4"), "video", (str(tmp_path / "junk.mp4"),))]


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_area_part_rows_are_byte_identical_to_direct_rows(tmp_path, fmt):
    rng = np.random.default_rng(0)
    rows = [(i, None if i == 2 else i / 7, f"f{i}.png" if i % 2 else "", rng.dirichlet(np.ones(4)))
            for i in range(5)]
    meta = models.meta()
    direct = AreaTable(tmp_path / "direct", meta, fmt)
    part = AreaRows()
    for row in rows:
        direct.write("src", *row)
        part.write("src", *row)
    via = AreaTable(tmp_path / "via", meta, fmt)
    assert append_part(via, "src", part.save(tmp_path / "p.npz")) == 5
    assert direct.close().read_bytes() == via.close().read_bytes()


def test_worker_count_follows_the_resources():
    resources = {"CPU": 8.0, "GPU": 2.0}
    assert plan_workers(resources, ClusterOptions(), 100)[0] == 8
    assert plan_workers(resources, ClusterOptions(gpus_per_worker=1), 100)[0] == 2
    assert plan_workers(resources, ClusterOptions(cpus_per_worker=3), 100)[0] == 2
    n, line = plan_workers(resources, ClusterOptions(workers=20), 100)
    assert n == 8 and "--workers 20 is more than fit" in line
    assert plan_workers(resources, ClusterOptions(), 3)[0] == 3
    with pytest.raises(InputError, match="--gpus-per-worker"):
        plan_workers({"CPU": 8.0}, ClusterOptions(gpus_per_worker=1), 10)


def test_only_the_cluster_driver_imports_ray():
    """DESIGN.md: [cluster] brings Ray for archive-scale inference; nothing else imports it."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    uses = sorted(str(p.relative_to(root)) for folder in ("mslseg", "runtime", "export") for p in (root / folder).rglob("*.py")
                  if re.search(r"^\s*(import ray\b|from ray\b)|require\(\"ray\"", p.read_text(encoding="utf-8"), re.M))
    assert uses == ["mslseg/cli/infer_cluster.py", "runtime/cluster/run.py"]

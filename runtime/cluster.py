"""`run_cluster`: `mslseg infer --cluster`: an archive's sources segmented by Ray workers.

A unit of work is one source (a video; the images of one argument); long videos are not split.
Each worker is a Ray actor holding one Segmenter (runtime/cluster_worker.py), loaded once. It
writes its source's files into the output folder exactly as a local run does (temporary names,
published when complete) and its area rows as a part; the driver appends the parts to the areas
table in source order, publishes it, and only then writes the done markers: the folder, the
markers and --resume are those of a local run, in either direction.

A worker that dies (killed, out of memory, its node lost) is replaced by a new actor and its unit
redone from the first frame, up to `retries` times; what it left under temporary names is removed.
A source that cannot be read is a problem in the summary; the archive goes on. `stop` (Ctrl-C,
SIGTERM) ends the units under way at the next batch, with their files closed as a prefix and no
marker, as a local run does. Ray is imported here only, and only when a cluster run is asked for.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mslseg.runtime.cluster_plan import SourceUnit
from mslseg.runtime.errors import InputError, require
from mslseg.runtime.infer_job import InferOptions, InferSummary, check_output_folder
from mslseg.runtime.sources import FrameRange


@dataclass(frozen=True)
class ClusterOptions:
    address: str = "auto"  # auto (RAY_ADDRESS, else a local Ray), ray://host:port (Ray Client), host:port
    workers: int | None = None  # None: as many as the cluster's resources fit
    cpus_per_worker: float = 1.0  # Ray num_cpus of each actor
    gpus_per_worker: float = 0.0  # Ray num_gpus of each actor
    retries: int = 2  # times a unit is redone after its worker died
    num_cpus: int | None = None  # a local Ray started here: the CPUs it offers (None: all of them)


@dataclass
class ClusterProgress:
    sources_done: int  # this run's units finished (and those complete from an earlier run)
    sources_total: int
    frames_done: int  # this run's frames, those of units under way included
    frames_total: int | None  # None while some source's length is unknown
    busy: list[dict[str, Any]]  # per unit under way: worker, pid, source, frames


@dataclass
class ClusterSummary(InferSummary):
    cluster: dict[str, Any] = field(default_factory=dict)  # address, workers, resources per worker, restarts
    per_source: list[dict[str, Any]] = field(default_factory=list)  # worker, seconds, cpu_s, fps, attempts

    def line(self) -> str:
        return f"{super().line()} on {len(self.cluster.get('workers', []))} worker(s)"

    def to_dict(self) -> dict[str, Any]:
        d = super().to_dict()
        d.pop("per_source")
        for source, extra in zip(d["sources"], self.per_source, strict=True):
            source.update(extra)
        return d


@dataclass(frozen=True)
class Connection:
    ray: Any  # the ray module
    where: str  # in words, for the plan line
    started: bool  # this process connected (and disconnects at the end)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def connect(address: str = "auto", num_cpus: int | None = None) -> Connection:
    """Connect to Ray: RAY_ADDRESS or a local Ray for "auto", Ray Client for ray://HOST:PORT, else
    the address as given. A connection this process already has is used as it is. ray.init sets a
    SIGTERM handler: install your own after this call."""
    ray = require("ray", "cluster", "--cluster")
    target = os.environ.get("RAY_ADDRESS") if address == "auto" else address
    if target and target.startswith("ray://"):
        require("grpc", "cluster", "Ray Client (--cluster ray://...)")  # plain `ray` lacks it; ray[default] has it
    if ray.is_initialized():
        return Connection(ray, "the Ray this process is connected to", False)
    quiet = {"logging_level": logging.ERROR, "log_to_driver": False}  # mslseg's lines, not Ray's
    try:
        if target:
            ray.init(address=target, **({} if target.startswith("ray://") else quiet))
            return Connection(ray, target, True)
        # "local": a new Ray even where `ray start` left a cluster address behind (/tmp/ray/ray_current_cluster)
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 _node_ip_address="127.0.0.1", **quiet)
    except ConnectionError as exc:
        raise InputError(f"cannot reach the Ray cluster at {target} ({exc}); start it (ray start --head) or give "
                         "--cluster the head's address (ray://HOST:10001); a cluster with Ray's token authentication "
                         "(what `ray start` sets up in recent Ray) also needs RAY_AUTH_MODE=token here") from None
    return Connection(ray, f"a local Ray on 127.0.0.1 ({num_cpus or os.cpu_count()} CPUs)", True)


def plan_workers(resources: dict[str, float], cluster: ClusterOptions, units: int) -> tuple[int, str]:
    """How many workers to start, and the sentence that says why."""
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    fits = [int(cpus // cluster.cpus_per_worker)] if cluster.cpus_per_worker > 0 else []
    if cluster.gpus_per_worker > 0:
        fits.append(int(gpus // cluster.gpus_per_worker))
    fit = min(fits) if fits else units
    have = f"{cpus:g} CPU(s), {gpus:g} GPU(s)"
    each = f"{cluster.cpus_per_worker:g} CPU(s)" + (f", {cluster.gpus_per_worker:g} GPU(s)"
                                                   if cluster.gpus_per_worker else "")
    if fit < 1:
        raise InputError(f"the cluster has {have}; a worker asks for {each}: lower --cpus-per-worker / "
                         "--gpus-per-worker or add nodes")
    asked = cluster.workers or fit
    n = max(1, min(asked, fit, units))
    why = f"the cluster has {have}, {each} each"
    if cluster.workers and cluster.workers > fit:
        why += f"; --workers {cluster.workers} is more than fit"
    if units < min(asked, fit):
        why += f"; {units} source(s) to do"
    return n, f"{n} worker(s): {why}"


def run_cluster(units: list[SourceUnit], model: Path, opts: InferOptions, cluster: ClusterOptions, *,
                segmenter_options: dict[str, Any], frames: FrameRange,
                stop: threading.Event | None = None,
                on_progress: Callable[[ClusterProgress], None] | None = None,
                on_plan: Callable[[str], None] | None = None,
                connection: Connection | None = None) -> ClusterSummary:
    """Segment `units` into `opts.out` on Ray workers (see the module docstring).

    connection: from `connect` (default: connect to `cluster.address` here, and disconnect at the end).
    on_plan: gets the line that says where and on how many workers; on_progress: a ClusterProgress
    about every half second.
    """
    if opts.show:
        raise InputError("--show opens a window on this machine, which a cluster run cannot; drop --show")
    check_output_folder(opts.out, opts.overwrite or opts.resume)
    stop = stop or threading.Event()
    own = connection is None
    connection = connection or connect(cluster.address, cluster.num_cpus)
    try:
        from mslseg.runtime.cluster_job import ClusterJob

        return ClusterJob(connection.ray, units, model, opts, cluster, segmenter_options, frames, stop, on_progress,
                    on_plan, connection.where).run()
    finally:
        if own:
            connection.close()

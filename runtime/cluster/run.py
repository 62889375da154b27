"""`run_cluster`: `mslseg infer --cluster`: an archive's sources segmented by Ray workers.

A unit of work is one source (a video; the images of one argument); long videos are not split.
Each worker is a Ray actor holding one Segmenter (runtime/cluster/worker.py), loaded once. It
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mslseg.runtime.cluster.options import ClusterOptions, ClusterProgress, ClusterSummary
from mslseg.runtime.cluster.units import SourceUnit
from mslseg.runtime.errors import InputError, require
from mslseg.runtime.infer_job import InferOptions, check_output_folder
from mslseg.runtime.io.sources import FrameRange


@dataclass(frozen=True)
class Connection:
    ray: Any  # the ray module
    where: str  # in words, for the plan line
    started: bool  # this process connected (and disconnects at the end)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def ray_target(address: str = "auto") -> str | None:
    """The address `connect` goes to: RAY_ADDRESS for "auto" (None: a new local Ray), else `address`."""
    return os.environ.get("RAY_ADDRESS") if address == "auto" else address


def connect(address: str = "auto", num_cpus: int | None = None) -> Connection:
    """Connect to Ray: RAY_ADDRESS or a local Ray for "auto", Ray Client for ray://HOST:PORT, else
    the address as given. A connection this process already has is used as it is. ray.init sets a
    SIGTERM handler: install your own after this call."""
    ray = require("ray", "cluster", "--cluster")
    target = ray_target(address)
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
        from mslseg.runtime.cluster.driver import ClusterJob

        return ClusterJob(connection.ray, units, model, opts, cluster, segmenter_options, frames, stop, on_progress,
                    on_plan, connection.where).run()
    finally:
        if own:
            connection.close()

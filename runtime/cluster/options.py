"""What a cluster run is asked for and reports: its options, progress, summary, and how many workers fit.

Shared by the run (run.py, which imports Ray) and its driver (driver.py), so neither imports the other's
module for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mslseg.runtime.errors import InputError
from mslseg.runtime.infer_job import InferSummary


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

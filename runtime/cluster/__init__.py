"""`mslseg infer --cluster`: an archive segmented by Ray workers.

Rooms: options.py (what a run is asked for and reports), units.py (which sources, how a worker opens one),
worker.py (one Segmenter per Ray actor, no Ray import), driver.py (hands out units, handles deaths),
run.py (connects to Ray, the only module that imports it, and runs the driver).
"""

from mslseg.runtime.cluster.options import ClusterOptions, ClusterProgress, ClusterSummary, plan_workers
from mslseg.runtime.cluster.run import Connection, connect, run_cluster

__all__ = ["ClusterOptions", "ClusterProgress", "ClusterSummary", "Connection", "connect", "plan_workers", "run_cluster"]

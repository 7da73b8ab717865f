"""Joining a Ray cluster: an existing one (`--address HOST:PORT`, `ray://...`, `auto`) or a local one.

Ray is the `cluster` extra: it is imported here, on first use, never by single-machine commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from jrsearch.retrieval.extras import require

LOCAL = ("", "local")


@dataclass
class ClusterInfo:
    address: str
    cpus: float
    gpus: float
    nodes: int
    started_here: bool  # a local cluster this process started (and stops with it)


def ray_module() -> ModuleType:
    return require("ray", "cluster", "jrsearch cluster")


def connect(address: str | None = None, num_cpus: int | None = None,
            object_store_mb: int | None = None) -> ClusterInfo:
    """Join the cluster at `address`; None or 'local' starts a local one, 'auto' joins the running
    one on this machine (or starts a local one when there is none)."""
    ray = ray_module()
    if not ray.is_initialized():
        # address="local": a new cluster even when another one runs on this machine (plain ray.init() would join it)
        local = {"address": "local", "num_cpus": num_cpus, "include_dashboard": False, "configure_logging": False,
                     "object_store_memory": object_store_mb * 2**20 if object_store_mb else None}
        if address in (None, *LOCAL):
            ray.init(**local)
        elif address == "auto":
            try:
                ray.init(address="auto", configure_logging=False)
            except ConnectionError:
                ray.init(**local)
        else:
            ray.init(address=address, configure_logging=False)
    resources = ray.cluster_resources()
    context = ray.get_runtime_context()
    return ClusterInfo(address=context.gcs_address, cpus=resources.get("CPU", 0.0), gpus=resources.get("GPU", 0.0),
                       nodes=len([n for n in ray.nodes() if n.get("Alive")]), started_here=address in (None, *LOCAL))

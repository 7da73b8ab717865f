"""Serving an INDEXDIR on a Ray cluster: one actor per serving shard, a router that fans out.

Each `ShardActor` opens its shard's on-disk index on the node it lands on (INDEXDIR must be at
the same path on every node: a shared filesystem, or a copy). The router sends each query to
every actor, waits up to `timeout_s`, and merges the top-k. A shard that does not answer (its
node died, its actor crashed) is never silently skipped: the router raises
`ShardUnavailableError`, or, when built with `allow_partial=True`, answers from the other shards
and lists the missing ones in `missing` (the web API returns them as `partial`).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from jrsearch.retrieval.cluster.index_dir import (
    IndexManifest,
    ServingShard,
    ShardUnavailableError,
    merge_topk,
    read_shard,
    search_shard,
)
from jrsearch.retrieval.cluster.session import ray_module

DEFAULT_TIMEOUT_S = 10.0


class ShardActor:
    """Holds one serving shard (made a Ray actor by `ShardRouter`)."""

    def __init__(self, root: str, shard: dict) -> None:
        import faiss

        faiss.omp_set_num_threads(1)  # one query row: threads cost more than they save
        self.index = read_shard(Path(root), ServingShard(**shard))

    def search(self, queries: np.ndarray, k: int, nprobe: int) -> tuple[np.ndarray, np.ndarray]:
        return search_shard(self.index, queries, k, nprobe)

    def ready(self) -> int:
        return int(self.index.ntotal)


class ShardRouter:
    """The `IndexDir` search interface over shard actors on the connected Ray cluster."""

    def __init__(self, root: Path, nprobe: int | None = None, allow_partial: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        ray = ray_module()
        self.root = root
        self.manifest = IndexManifest.read(root)
        self.nprobe = nprobe or self.manifest.nprobe
        self.allow_partial = allow_partial
        self.timeout_s = timeout_s
        remote = ray.remote(num_cpus=0.5, max_restarts=0)(ShardActor)
        self.actors = [remote.options(scheduling_strategy="SPREAD").remote(str(root.resolve()), vars(shard))
                       for shard in self.manifest.shards]
        ray.get([actor.ready.remote() for actor in self.actors])
        self.missing: list[int] = []  # shards the last search could not reach

    @property
    def ntotal(self) -> int:
        return self.manifest.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ray = ray_module()
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        k = max(1, min(k, self.ntotal))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        pending = [actor.search.remote(queries, k, self.nprobe) for actor in self.actors]
        missing: list[int] = []
        try:  # the usual case: one wait for all shards
            parts = ray.get(pending, timeout=self.timeout_s)
        except (RayActorError, RayTaskError, GetTimeoutError):
            parts = []
            for number, ref in enumerate(pending):  # which ones failed (the others are done or nearly)
                try:
                    parts.append(ray.get(ref, timeout=self.timeout_s))
                except (RayActorError, RayTaskError, GetTimeoutError):
                    missing.append(number)
        self.missing = missing
        if missing and (not self.allow_partial or not parts):
            raise ShardUnavailableError(
                f"serving shard(s) {', '.join(self.manifest.shards[m].index for m in missing)} of {self.root} did "
                f"not answer; restart `jrsearch serve --index {self.root} --address ...` (or pass --allow-partial "
                f"to answer from the other shards, flagged as partial)")
        return merge_topk(parts, k)

    def kill_shard(self, number: int, timeout_s: float = 30.0) -> None:
        """End one shard's actor (what a lost node does; for tests and drills) and wait until it is
        gone: `ray.kill` only asks, and a query sent right after could still reach it."""
        ray = ray_module()
        from ray.exceptions import RayActorError

        ray.kill(self.actors[number], no_restart=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                ray.get(self.actors[number].ready.remote(), timeout=timeout_s)
            except RayActorError:
                return
            time.sleep(0.05)
        raise TimeoutError(f"shard actor {number} still answers {timeout_s:g} s after it was killed")

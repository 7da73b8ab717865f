"""Serving an INDEXDIR on a Ray cluster: one actor per serving shard, a router that fans out.

Each `ShardActor` opens its shard's on-disk index on the node it lands on (INDEXDIR must be at
the same path on every node: a shared filesystem, or a copy). The router sends each query to
every actor, waits up to `timeout_s`, and merges the top-k. A shard that does not answer (its
node died, its actor crashed) is never silently skipped: the router raises
`ShardUnavailableError`, or, when built with `allow_partial=True`, answers from the other shards
and lists the missing ones in `missing` (the web API returns them as `partial`).

By default each query is one `search.remote` per actor and one `ray.get` for all. With
`compiled=True` (experimental; `serve --compiled-fanout`) the fan-out is a Ray Compiled Graph:
one DAG, input -> every shard's `search` -> all outputs, compiled once, so a query travels
through pre-allocated shared-memory channels instead of a task submission per shard. It cut the
Ray part of the latency on one node, but each actor then polls its channel (~0.5 core while
idle), and on a 2-node `ray.cluster_utils.Cluster` (Ray 2.60) its executions hung and a raylet
crashed: not the default until that works (docs/scale-out.md has the figures). A compiled graph
shuts itself down when one of its actors dies; the router then drops it and answers this query
and every later one through plain actor calls, which tell which shard is gone.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

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

if TYPE_CHECKING:
    from ray.dag.compiled_dag_node import CompiledDAG

DEFAULT_TIMEOUT_S = 10.0
COMPILE_TIMEOUT_S = 120.0  # the compiled graph's first execution


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

    def pid(self) -> int:
        """This actor's process (the cluster benchmark measures its CPU use)."""
        return os.getpid()


class ShardRouter:
    """The `IndexDir` search interface over shard actors on the connected Ray cluster."""

    def __init__(self, root: Path, nprobe: int | None = None, allow_partial: bool = False,
                 timeout_s: float = DEFAULT_TIMEOUT_S, compiled: bool = False) -> None:
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
        self._lock = threading.Lock()  # a compiled graph is not thread-safe; the serve app searches from threads
        self._graph = None
        self.graph_dropped: str | None = None  # why the compiled graph was given up, if it was
        if compiled:
            self._graph = self._compile()

    def _compile(self) -> CompiledDAG:
        """The compiled fan-out, run once: its first execution sets the channels up, which took 12 s
        on a loaded 2-core machine, longer than a query may wait."""
        ray = ray_module()
        from ray.dag import InputNode, MultiOutputNode

        with InputNode() as query:  # execute(queries, k)
            fan_out = MultiOutputNode([actor.search.bind(query[0], query[1], self.nprobe) for actor in self.actors])
        graph = fan_out.experimental_compile()
        ray.get(graph.execute(np.zeros((1, self.manifest.dim), np.float32), 1), timeout=COMPILE_TIMEOUT_S)
        return graph

    @property
    def compiled(self) -> bool:
        """Whether searches still go through the compiled graph (False once a shard was lost)."""
        return self._graph is not None

    @property
    def ntotal(self) -> int:
        return self.manifest.ntotal

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.ntotal))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock:
            if self._graph is not None:
                parts = self._search_compiled(self._graph, queries, k)
                if parts is not None:
                    self.missing = []
                    return merge_topk(parts, k)
            return self._search_calls(queries, k)

    def _search_compiled(self, graph: CompiledDAG, queries: np.ndarray, k: int
                         ) -> list[tuple[np.ndarray, np.ndarray]] | None:
        """All shards' answers through the compiled graph, or None when it failed (the caller then
        asks each actor in turn, which names the lost shards)."""
        ray = ray_module()
        from ray.exceptions import RayError, RayTaskError

        try:
            return ray.get(graph.execute(queries, k), timeout=self.timeout_s)
        except RayTaskError:
            return None  # a search raised: the graph is still usable
        except RayError as error:  # an actor died, a channel closed or timed out: the graph is shut down or unusable
            self._graph, self.graph_dropped = None, f"{type(error).__name__}: {str(error)[:300]}"
            with contextlib.suppress(Exception):
                graph.teardown()
            return None

    def _search_calls(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        ray = ray_module()
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

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

    def close(self) -> None:
        """Tear the compiled graph down and end the shard actors. A compiled graph's actors poll
        their channels, using CPU while idle, so a router that is done with should be closed."""
        ray = ray_module()
        with self._lock:
            graph, self._graph = self._graph, None
            if graph is not None:
                with contextlib.suppress(Exception):
                    graph.teardown()
            for actor in self.actors:
                ray.kill(actor, no_restart=True)

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

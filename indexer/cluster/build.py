"""`jrsearch cluster build`: an embedding dataset -> an INDEXDIR, on Ray tasks.

1. train: one task (on a GPU when the cluster has one) trains the empty IVF-PQ index on a
   uniform random sample of the dataset, read shard by shard from the memory-mapped files;
2. add: one task per dataset shard fills a copy of the trained index with that shard's vectors
   (ids are global row numbers) and writes it to INDEXDIR/parts/;
3. merge: the parts are merged into `serving_shards` on-disk IVF indexes
   (`faiss.contrib.ondisk.merge_ondisk`): each is a small `.index` file (quantizer, OPQ matrix,
   list sizes) plus an `.ivfdata` file of inverted lists that is memory-mapped, not read into
   RAM. One serving shard is a merged index; several are searched side by side and their top-k
   merged (every shard shares the trained quantizer, so shards probe the same lists a merged
   index would and the merged top-k equals the merged index's).

`build_single` builds the same index in one process without Ray: the baseline that the
distributed build is checked and benchmarked against.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jrsearch.retrieval.cluster.dataset import EmbeddingDataset, write_bytes_atomically
from jrsearch.retrieval.cluster.index_dir import MANIFEST, IndexManifest, ServingShard
from jrsearch.retrieval.cluster.session import connect, ray_module
from jrsearch.retrieval.fileio import write_atomic
from jrsearch.retrieval.index import DEFAULT_NPROBE, ID_BYTES, Layout, VectorIndex, choose_factory

ADD_CHUNK = 100_000  # vectors converted to float32 at a time while adding
SERVING_SHARD_BYTES = 64 * 2**30  # one serving node's share of index bytes (the auto layout)


def choose_cluster_factory(n: int, dim: int, budget: int = SERVING_SHARD_BYTES) -> str:
    """The library's own choice (`retrieval.index.choose_factory`) for an index the serving nodes
    give `budget` bytes of RAM, always with inverted lists: they are what is merged on disk and
    split into serving shards."""
    return choose_factory(n, dim, budget, exact_max=0)


def auto_serving_shards(n: int, dim: int, factory: str, budget_bytes: int = SERVING_SHARD_BYTES) -> int:
    """Serving shards so that each holds at most `budget_bytes` of codes and ids."""
    return max(1, math.ceil(n * (Layout.parse(factory).code_bytes(dim) + ID_BYTES) / budget_bytes))


@dataclass
class BuildOptions:
    factory: str | None = None  # None: choose_cluster_factory(vectors, dim, memory_budget)
    memory_budget: int = SERVING_SHARD_BYTES  # RAM the serving nodes give the index, together
    serving_shards: int | None = None  # None: by size (auto_serving_shards)
    nprobe: int = DEFAULT_NPROBE
    seed: int = 0
    threads: int | None = None  # faiss threads for training (None: the worker's CPUs)
    address: str | None = None
    num_cpus: int | None = None


@dataclass
class BuildReport:
    factory: str = ""
    vectors: int = 0
    trained_on: int = 0
    serving_shards: int = 0
    seconds: dict[str, float] = field(default_factory=dict)  # train, add, merge, total
    index_bytes: int = 0

    def to_json(self) -> dict:
        return {"factory": self.factory, "vectors": self.vectors, "trained_on": self.trained_on,
                "serving_shards": self.serving_shards, "index_bytes": self.index_bytes,
                "seconds": {k: round(v, 3) for k, v in self.seconds.items()}}


def train_index(dataset_url: str, factory: str, seed: int, threads: int | None, gpu: bool = False) -> bytes:
    """The trained, empty index (serialized), trained as the library trains one
    (`VectorIndex.train`) on a uniform random sample of the dataset."""
    import faiss

    if threads:
        faiss.omp_set_num_threads(threads)
    dataset = EmbeddingDataset.open(dataset_url)
    index = VectorIndex(faiss.index_factory(dataset.dim, factory, faiss.METRIC_INNER_PRODUCT), factory)
    index.train(dataset.sample(_trained_count(dataset, factory), seed), seed=seed, use_gpu=gpu)
    return faiss.serialize_index(index.index).tobytes()


def _trained_count(dataset: EmbeddingDataset, factory: str) -> int:
    import faiss

    return VectorIndex.train_size(faiss.index_factory(dataset.dim, factory, faiss.METRIC_INNER_PRODUCT), dataset.ntotal)


def add_shard(trained: bytes, dataset_url: str, shard: int, path: str, threads: int = 1) -> int:
    """Fill a copy of the trained index with one dataset shard; write it to `path`. Returns rows."""
    import faiss

    faiss.omp_set_num_threads(threads)
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    dataset = EmbeddingDataset.open(dataset_url)
    vectors, ids = dataset.vectors(shard), dataset.ids(shard)
    for start in range(0, len(ids), ADD_CHUNK):
        index.add_with_ids(np.ascontiguousarray(vectors[start:start + ADD_CHUNK], dtype=np.float32),
                           ids[start:start + ADD_CHUNK])
    _write_index(index, path)
    return int(index.ntotal)


def merge_parts(trained: bytes, parts: list[str], out: Path, name: str) -> ServingShard:
    """Merge filled parts into one on-disk IVF index: OUT/NAME.index + OUT/NAME.ivfdata."""
    import faiss
    from faiss.contrib.ondisk import merge_ondisk

    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    ivfdata = out / f"{name}.ivfdata"
    if ivfdata.exists():
        ivfdata.unlink()  # a rerun after a crash: the lists are rewritten from the parts
    merge_ondisk(index, parts, str(ivfdata))
    _write_index(index, str(out / f"{name}.index"))
    return ServingShard(index=f"{name}.index", ivfdata=f"{name}.ivfdata", vectors=int(index.ntotal))


def _write_index(index, path: str) -> None:
    import faiss

    write_atomic(Path(path), lambda tmp: faiss.write_index(index, str(tmp)))


def _groups(n_parts: int, k: int) -> list[list[int]]:
    """Split part numbers into k contiguous groups of near-equal size."""
    k = max(1, min(k, n_parts))
    bounds = np.linspace(0, n_parts, k + 1).round().astype(int)
    return [list(range(bounds[g], bounds[g + 1])) for g in range(k)]


def run_build(dataset_url: str, out: Path, options: BuildOptions | None = None) -> BuildReport:
    """The distributed build on the cluster at `options.address` (a local one if None)."""
    options = options or BuildOptions()
    ray = ray_module()
    started = time.perf_counter()
    dataset = EmbeddingDataset.open(dataset_url)
    factory = options.factory or choose_cluster_factory(dataset.ntotal, dataset.dim, options.memory_budget)
    info = connect(options.address, options.num_cpus)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parts").mkdir(exist_ok=True)
    report = BuildReport(factory=factory, vectors=dataset.ntotal, trained_on=_trained_count(dataset, factory))

    gpu = info.gpus > 0
    train = ray.remote(num_cpus=1, num_gpus=1 if gpu else 0)(train_index)
    threads = options.threads or max(1, int(info.cpus // max(1, info.nodes)))
    trained = train.remote(dataset.url, factory, options.seed, threads, gpu)
    ray.wait([trained], fetch_local=False)
    report.seconds["train"] = time.perf_counter() - started

    add = ray.remote(num_cpus=1, max_retries=3)(add_shard)
    parts = [str(out / "parts" / f"part_{s:05d}.index") for s in range(len(dataset.emb_files))]
    ray.get([add.remote(trained, dataset.url, s, parts[s]) for s in range(len(parts))])
    report.seconds["add"] = time.perf_counter() - started - report.seconds["train"]

    k = options.serving_shards or auto_serving_shards(dataset.ntotal, dataset.dim, factory)
    merge = ray.remote(num_cpus=1, max_retries=3)(merge_parts)
    groups = _groups(len(parts), k)
    names = ["merged"] if len(groups) == 1 else [f"shard_{g:03d}" for g in range(len(groups))]
    shards = ray.get([merge.remote(trained, [parts[p] for p in group], out, name)
                      for group, name in zip(groups, names, strict=True)])
    report.seconds["merge"] = time.perf_counter() - started - report.seconds["train"] - report.seconds["add"]
    for part in parts:
        os.unlink(part)
    (out / "parts").rmdir()
    _finish(out, dataset, factory, shards, options, report, started)
    return report


def build_single(dataset_url: str, out: Path, options: BuildOptions | None = None) -> BuildReport:
    """The same index built in this process: train, add every shard, write one in-RAM index."""
    import faiss

    options = options or BuildOptions()
    started = time.perf_counter()
    dataset = EmbeddingDataset.open(dataset_url)
    factory = options.factory or choose_cluster_factory(dataset.ntotal, dataset.dim, options.memory_budget)
    report = BuildReport(factory=factory, vectors=dataset.ntotal, trained_on=_trained_count(dataset, factory))
    trained = train_index(dataset_url, factory, options.seed, options.threads)
    report.seconds["train"] = time.perf_counter() - started
    index = faiss.deserialize_index(np.frombuffer(trained, dtype=np.uint8))
    for shard in range(len(dataset.emb_files)):
        vectors, ids = dataset.vectors(shard), dataset.ids(shard)
        for start in range(0, len(ids), ADD_CHUNK):
            index.add_with_ids(np.ascontiguousarray(vectors[start:start + ADD_CHUNK], dtype=np.float32),
                               ids[start:start + ADD_CHUNK])
    out.mkdir(parents=True, exist_ok=True)
    _write_index(index, str(out / "merged.index"))
    report.seconds["add"] = time.perf_counter() - started - report.seconds["train"]
    _finish(out, dataset, factory, [ServingShard(index="merged.index", ivfdata=None, vectors=int(index.ntotal))],
            options, report, started)
    return report


def _finish(out: Path, dataset: EmbeddingDataset, factory: str, shards: list[ServingShard], options: BuildOptions,
            report: BuildReport, started: float) -> None:
    manifest = IndexManifest(factory=factory, dim=dataset.dim, ntotal=dataset.ntotal, nprobe=options.nprobe,
                             dataset=_absolute(dataset.url), model=dataset.plan.model.name,
                             pretrained=dataset.plan.model.pretrained, trained_on=report.trained_on, shards=shards)
    write_bytes_atomically(_local_fs(), str(out / MANIFEST), json.dumps(manifest.to_json(), indent=2).encode())
    report.serving_shards = len(shards)
    report.index_bytes = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    report.seconds["total"] = time.perf_counter() - started


def _absolute(url: str) -> str:
    return url if "://" in url else str(Path(url).resolve())


def _local_fs():
    import fsspec

    return fsspec.filesystem("file")

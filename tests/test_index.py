"""The vector index on its own: choice by size and budget, re-ranking through a source, growth, files."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import clustered

from jrsearch.retrieval.index import (
    ArraySource,
    Layout,
    VectorIndex,
    choose_factory,
    choose_nlist,
    footprint,
    memory_budget,
)


def recall_at(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.mean([len(set(g) & set(w)) / len(w) for g, w in zip(got, want, strict=True)]))


def exact_top(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ vectors.T
    return ids[np.argsort(-scores, axis=1)[:, :k]]


def test_factory_follows_size_and_memory_budget():
    assert choose_factory(50_000, 512) == "IDMap,Flat"
    assert choose_factory(200_000, 512, budget=1 << 30) == "IVF2048,Flat"  # 411 MB of floats fits 1 GiB
    assert choose_factory(1_000_000, 512, budget=1 << 30) == "IVF4096,SQ8"  # floats would be 2 GB
    assert choose_factory(10_000_000, 512, budget=1 << 30) == "OPQ64,IVF16384_HNSW32,PQ64"  # ~72 B/vector
    assert choose_factory(10_000_000, 512, budget=4 << 30) == "OPQ128,IVF16384_HNSW32,PQ128"
    for n in (60_000, 1_000_000, 10_000_000):
        nlist = choose_nlist(n)
        assert 2 * np.sqrt(n) <= nlist <= 8 * np.sqrt(n) and n / nlist >= 39


def test_footprint_is_codes_and_ids_plus_fixed_parts():
    at_10m = footprint("OPQ64,IVF16384_HNSW32,PQ64", 10_000_000, 512)
    assert 72 * 10_000_000 <= at_10m.memory_bytes <= 80 * 10_000_000 and at_10m.memory_mapped
    assert at_10m.code_table_bytes == 72 * 10_000_000  # each code again, by id, with its id
    assert footprint("IVF1024,SQ8", 1_000_000, 512).code_table_bytes == 0
    assert footprint("IDMap,Flat", 1000, 512).memory_bytes == 1000 * (2048 + 8)
    assert Layout.parse("IDMap2,IVF4096,PQ64,RFlat").codec == "PQ64"  # libraries made before re-ranking moved out


def test_memory_budget_from_environment(monkeypatch):
    monkeypatch.setenv("JRSEARCH_INDEX_MEMORY", "512M")
    assert memory_budget() == 512 << 20
    monkeypatch.setenv("JRSEARCH_INDEX_MEMORY", "2.5GiB")
    assert memory_budget() == int(2.5 * (1 << 30))
    monkeypatch.setenv("JRSEARCH_INDEX_MEMORY", "lots")
    assert memory_budget() == 1 << 30


@pytest.fixture(scope="module")
def collection():
    dim, n = 64, 40_000
    vectors = clustered(n, dim, 300, spread=0.35)
    ids = np.arange(n, dtype=np.int64) * 3 + 7  # sparse ids, as after deletions
    rng = np.random.default_rng(1)
    queries = vectors[rng.choice(n, 100, replace=False)] + 0.05 * rng.normal(size=(100, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    return ids, vectors, queries, exact_top(vectors, ids, queries, 10)


@pytest.mark.parametrize("factory", ["IVF256,SQ8", "OPQ8,IVF256,PQ8"])
def test_rerank_reads_exact_vectors_from_the_source(collection, factory):
    ids, vectors, queries, want = collection
    source = ArraySource(ids, vectors.astype(np.float16))  # float16, as the library's shards
    index = VectorIndex.build_from(source, factory)
    assert index.ntotal == len(ids) and index.layout.lossy
    codes_only = recall_at(index.search(queries, 10, rerank=0)[1], want)
    scores, got = index.search(queries, 10)  # default depth, through index.source
    reranked = recall_at(got, want)
    assert reranked >= 0.9 and reranked >= codes_only
    exact = (queries[:, None, :] * source.get(got[:, :1]).reshape(len(got), 1, -1)).sum(-1)[:, 0]
    np.testing.assert_allclose(scores[:, 0], exact, rtol=1e-5)  # re-ranked scores are the exact ones
    assert np.all(np.diff(scores, axis=1) <= 0)


def test_rerank_drops_ids_the_source_no_longer_has(collection):
    ids, vectors, queries, _ = collection
    index = VectorIndex.build_from(ArraySource(ids, vectors), "IVF256,SQ8")
    best = index.search(queries[:1], 1)[1][0, 0]
    keep = ids != best
    _, got = index.search(queries[:1], 10, source=ArraySource(ids[keep], vectors[keep]))
    assert best not in got[0] and np.all(got[0] >= 0)


def test_gpu_assignment_path_equals_the_cpu_add(collection):
    """`add(assigner=...)` is the GPU build's path (nearest centroid elsewhere, then add_core); here
    the assigner is a CPU flat index, so the codes must be what add_with_ids makes."""
    import faiss

    ids, vectors, queries, _ = collection
    source = ArraySource(ids, vectors)
    cpu = VectorIndex.build_from(source, "OPQ8,IVF256,PQ8")
    assigner = faiss.IndexFlatL2(cpu.dim)
    assigner.add(cpu._centroids())
    assigned = VectorIndex(faiss.clone_index(cpu.index), cpu.factory, source=source)
    assigned.index.reset()
    for batch_ids, batch in source.batches(10_000):
        assigned.add(batch, batch_ids, assigner=assigner)
    assert assigned.ntotal == cpu.ntotal
    same = np.mean(cpu.search(queries, 10, rerank=0)[1] == assigned.search(queries, 10, rerank=0)[1])
    assert same >= 0.98  # ties between equidistant centroids may go either way


def test_growth_adds_without_retraining_until_lists_are_far_off(collection):
    ids, vectors, queries, want = collection
    first = VectorIndex.build_from(ArraySource(ids[:10_000], vectors[:10_000]), "IVF256,Flat")
    first.add(vectors[10_000:], ids[10_000:])
    assert recall_at(first.search(queries, 10)[1], want) >= 0.9
    assert not first.outgrown(60_000)  # ideal 1024 lists: within 4x of 256
    assert first.outgrown(600_000)  # ideal 4096 lists: 16x
    assert first.outgrown(1000)  # small enough for exact search
    assert VectorIndex.build_from(ArraySource(ids, vectors), "IDMap,Flat").outgrown(60_000)


def test_saved_index_opens_memory_mapped_read_only_until_changed(collection, tmp_path):
    ids, vectors, queries, _ = collection
    source = ArraySource(ids, vectors)
    index = VectorIndex.build_from(source, "IVF256,SQ8")
    index.save(tmp_path / "image.faiss")
    assert not list(tmp_path.glob("*.tmp"))
    loaded = VectorIndex.load(tmp_path / "image.faiss", "IVF256,SQ8", source=source)
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])
    assert loaded.remove(ids[:5])  # reads the file into RAM first: a mapped list cannot change
    loaded.add(vectors[:2], ids[:2])
    assert loaded.ntotal == len(ids) - 3
    loaded.save(tmp_path / "image.faiss")
    again = VectorIndex.load(tmp_path / "image.faiss", "IVF256,SQ8", source=source)
    got = again.search(queries, 50)[1]
    assert again.ntotal == len(ids) - 3 and not set(ids[2:5]) & set(got.ravel())


@pytest.mark.slow
def test_200k_clustered_recall_footprint_and_correctness(tmp_path):
    """The scale benchmark at 200k x 512-d (clustered): recall@10 vs exact with default settings,
    RAM and disk per vector, ids intact, removals honoured. Budget scaled so that 200k gets the
    code 10M gets by default (PQ64 with OPQ and float16 re-ranking)."""
    n, dim = 200_000, 512
    vectors = clustered(n, dim, 10_000, seed=3, spread=0.6).astype(np.float16)
    ids = np.arange(n, dtype=np.int64) + 1
    source = ArraySource(ids, vectors)
    budget = n * 120  # 24 MB: PQ64 codes + ids (14.4 MB) + quantizer, OPQ and codebooks (5.5 MB)
    factory = choose_factory(n, dim, budget)
    assert factory == "OPQ64,IVF2048,PQ64"
    index = VectorIndex.build_from(source, factory, budget=budget)
    index.save(tmp_path / "image.faiss")
    disk = (tmp_path / "image.faiss").stat().st_size
    expected = footprint(factory, n, dim)
    assert expected.memory_bytes / n <= 120 and abs(disk - expected.memory_bytes) <= 0.02 * disk
    assert disk / n <= 64 + 8 + 30  # codes + ids + quantizer/OPQ/codebooks (27 B/vector at 200k, 0.5 at 10M)

    loaded = VectorIndex.load(tmp_path / "image.faiss", factory, source=source)
    rng = np.random.default_rng(4)
    queries = source.get(ids[rng.choice(n, 300, replace=False)])
    queries += 0.1 * rng.normal(size=queries.shape).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.argsort(-(queries @ vectors.T.astype(np.float32)), axis=1)[:, :10] + 1
    got = loaded.search(queries, 10)[1]
    assert recall_at(got, exact) >= 0.95
    assert set(np.unique(got)) <= set(ids.tolist())
    assert loaded.remove(exact[:, 0])
    assert not set(exact[:, 0]) & set(loaded.search(queries, 10)[1].ravel())

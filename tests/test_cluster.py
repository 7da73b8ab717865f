"""`jrsearch cluster`: embed, build and serve on a real local Ray cluster (no mocks)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_image

ray = pytest.importorskip("ray", reason="the cluster extra is not installed: pip install -e '.[cluster]'")

from jrsearch.benchmarks.cluster import synthetic  # noqa: E402
from jrsearch.indexer.cluster.build import BuildOptions, build_single, run_build  # noqa: E402
from jrsearch.indexer.cluster.embed import EmbedOptions, run_embed  # noqa: E402
from jrsearch.retrieval.cluster.dataset import EmbeddingDataset, item_id  # noqa: E402
from jrsearch.retrieval.cluster.index_dir import IndexDir  # noqa: E402
from jrsearch.retrieval.encoders import TINY_TEST_MODEL  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FACTORY = "IVF128,PQ16"  # small enough to train in seconds on two busy cores


@pytest.fixture(scope="module")
def local_cluster():
    """One local Ray cluster for this module's tests, as `jrsearch cluster` starts without --address.
    It stops with the module, so that its raylet's warnings (a nearly full disk, say) never reach the
    output of later tests."""
    if not ray.is_initialized():
        ray.init(address="local", num_cpus=2, include_dashboard=False, configure_logging=False,
                 object_store_memory=300 * 2**20)  # "local": never join another cluster running on this machine
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def make_photos(root: Path, n: int) -> Path:
    for i in range(n):
        make_image(root / f"d{i % 3}" / f"img{i:04d}.jpg", seed=1000 + i)
    return root


def synthetic_dataset(url: Path, n: int, dim: int, shards: int, seed: int = 0) -> EmbeddingDataset:
    """Clustered unit vectors written as `cluster embed` writes them (float16 shards + parquet)."""
    synthetic(url, n, dim, shards, seed=seed, centres=500, noise=0.4)
    return EmbeddingDataset.open(str(url))


def test_single_machine_commands_do_not_import_ray():
    code = ("import sys, jrsearch.cli.main, jrsearch.cli.serve, jrsearch.cli.quick, jrsearch.indexer.pipeline, "
            "jrsearch.retrieval.engine, jrsearch.retrieval.library; "
            "bad = [m for m in sys.modules if m == 'ray' or m.startswith('ray.')]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=120)


@pytest.mark.slow
def test_embed_matches_single_process_index_and_resumes(tmp_path, local_cluster, tiny_encoder):
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.engine import SearchEngine
    from jrsearch.retrieval.library import Library

    photos = make_photos(tmp_path / "photos", 100)
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "dataset"
    report = run_embed([str(photos)], str(out), TINY_TEST_MODEL, EmbedOptions(shard_size=40, address=local_cluster))
    assert (report.shards_total, report.shards_written, report.embedded) == (3, 3, 100)
    assert [p for p, _ in report.failed] == [str(photos / "broken.jpg")]

    dataset = EmbeddingDataset.open(str(out))
    assert dataset.ntotal == 100 and dataset.vectors(0).dtype == np.float16
    assert sorted(Path(p).name for p in dataset.emb_files) == ["img_emb_0.npy", "img_emb_1.npy", "img_emb_2.npy"]
    meta = dataset.metadata(list(range(100)))
    assert len({m["image_path"] for m in meta.values()}) == 100

    library = Library.open(tmp_path / "lib", create=True)
    with library.writing():
        run_index(library, tiny_encoder, [photos])
    engine = SearchEngine(library, encoder=tiny_encoder)
    for shard in range(3):
        for row, half in zip(dataset.ids(shard), dataset.vectors(shard), strict=True):
            vector = np.asarray(half, np.float32)
            best = engine.search(vector / np.linalg.norm(vector), top_k=1)[0]
            assert best.path == meta[int(row)]["image_path"]
            assert best.score >= 0.9999  # cosine to `jrsearch index`'s vector of the same file

    again = run_embed([str(photos)], str(out), TINY_TEST_MODEL, EmbedOptions(shard_size=40, address=local_cluster))
    assert (again.shards_skipped, again.shards_written) == (3, 0)
    (out / "metadata" / "metadata_1.parquet").unlink()  # as if the job died before committing shard 1
    resumed = run_embed([str(photos)], str(out), TINY_TEST_MODEL, EmbedOptions(shard_size=40, address=local_cluster))
    assert (resumed.shards_skipped, resumed.shards_written, resumed.embedded) == (2, 1, 40)
    assert EmbeddingDataset.open(str(out)).metadata(list(range(100))) == meta


@pytest.mark.slow
def test_embed_reads_webdataset_tars_and_parquet_lists(tmp_path, local_cluster):
    import io
    import tarfile

    import pyarrow as pa
    import pyarrow.parquet as pq

    photos = make_photos(tmp_path / "photos", 6)
    paths = sorted(photos.rglob("*.jpg"))
    listed = pa.table({"url": [str(p) for p in paths[:3]], "caption": ["a", "b", "c"]})
    pq.write_table(listed, tmp_path / "list.parquet")
    with tarfile.open(tmp_path / "shard-000.tar", "w") as tar:
        for n, path in enumerate(paths[3:]):
            for name, data in ((f"{n:05d}.jpg", path.read_bytes()), (f"{n:05d}.txt", f"tar caption {n}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = tmp_path / "dataset"
    report = run_embed([str(tmp_path / "list.parquet"), str(tmp_path / "shard-000.tar")], str(out), TINY_TEST_MODEL,
                       EmbedOptions(shard_size=10, address=local_cluster))
    assert (report.shards_total, report.embedded, report.failed) == (2, 6, [])
    rows = EmbeddingDataset.open(str(out)).metadata(list(range(6)))
    assert [rows[i]["caption"] for i in range(6)] == ["a", "b", "c", "tar caption 0", "tar caption 1", "tar caption 2"]
    assert rows[3]["image_path"].endswith("shard-000.tar#00000.jpg")


@pytest.mark.slow
def test_distributed_build_equals_single_process_build(tmp_path, local_cluster):
    dataset = synthetic_dataset(tmp_path / "vectors", 50_000, 64, 4)
    options = BuildOptions(factory=FACTORY, serving_shards=1, address=local_cluster)
    distributed = run_build(str(tmp_path / "vectors"), tmp_path / "dist", options)
    single = build_single(str(tmp_path / "vectors"), tmp_path / "single", BuildOptions(factory=FACTORY))
    assert distributed.vectors == single.vectors == 50_000
    assert (tmp_path / "dist" / "merged.ivfdata").is_file()  # lists on disk, memory-mapped when served
    queries = dataset.sample(300, seed=7)
    got = IndexDir(tmp_path / "dist").search(queries, 10)
    want = IndexDir(tmp_path / "single").search(queries, 10)
    np.testing.assert_array_equal(got[1], want[1])
    nearest = np.argmax(queries @ np.concatenate([dataset.vectors(s) for s in range(4)]).astype(np.float32).T, axis=1)
    found = np.mean([n in row for n, row in zip(nearest, got[1], strict=True)])
    assert found > 0.8  # a real index: the exact nearest neighbour is in the top 10


def _search_page(client, text: str) -> list[tuple[float, int, str]]:
    """Results as (score, id, path), equal scores in id order (shards may break PQ ties otherwise)."""
    body = client.get("/api/search", params={"q": text, "top_k": 8}).json()
    return sorted((-round(r["score"], 5), r["item_id"], r["path"]) for r in body["results"])


@pytest.mark.slow
def test_sharded_serving_equals_merged_and_flags_lost_shards(tmp_path, local_cluster):
    from fastapi.testclient import TestClient

    from jrsearch.cli.web.app import create_app
    from jrsearch.retrieval.cluster.search import ClusterService

    synthetic_dataset(tmp_path / "vectors", 8_000, 64, 4, seed=3)
    run_build(str(tmp_path / "vectors"), tmp_path / "merged", BuildOptions(factory="IVF64,PQ16", serving_shards=1))
    run_build(str(tmp_path / "vectors"), tmp_path / "sharded", BuildOptions(factory="IVF64,PQ16", serving_shards=2))
    assert {p.name for p in (tmp_path / "sharded").glob("*.ivfdata")} == {"shard_000.ivfdata", "shard_001.ivfdata"}

    opened: list[ClusterService] = []  # closed at the end: live shard actors hold the cluster's CPUs

    def app(root: Path, **kwargs):
        search = ClusterService(root, **kwargs)
        opened.append(search)
        return search, TestClient(create_app(search, thumbnail_dir=tmp_path / "t"))

    try:
        _, merged = app(tmp_path / "merged")
        sharded_search, sharded = app(tmp_path / "sharded", address=local_cluster)
        queries = ["a dog", "red square", "blue", "a photo of a cat", "x"]
        for q in queries:
            want = _search_page(merged, q)
            assert len(want) == 8 and want == _search_page(sharded, q)
        first = merged.get("/api/search", params={"q": "a dog"}).json()["results"][0]
        item = merged.get(f"/api/items/{first['item_id']}").json()
        assert item["path"] == first["path"] and item["kind"] == "image"
        assert merged.get("/api/status").json()["indexes"]["image"]["vectors"] == 8_000

        sharded_search.index.kill_shard(1)
        lost = sharded.get("/api/search", params={"q": "a dog"})
        assert lost.status_code == 503 and "shard_001.index" in lost.json()["detail"]
        sharded_search.close()

        partial_search, partial = app(tmp_path / "sharded", address=local_cluster, allow_partial=True, compiled=True)
        partial_search.index.kill_shard(0)
        body = partial.get("/api/search", params={"q": "a dog", "top_k": 8}).json()
        assert body["partial"] == {"missing_shards": ["shard_000.index"], "vectors_missing": 4_000}
        assert body["results"] and all(r["item_id"] >= 4_000 for r in body["results"])  # only shard 1's rows
    finally:
        for search in opened:
            search.close()


def test_cluster_build_chooses_its_index_as_the_library_does(tmp_path, local_cluster):
    """One way to choose an index: the library's chooser, with the serving nodes' RAM as the budget
    and inverted lists at any size (they are merged and sharded); the default build uses it."""
    from jrsearch.indexer.cluster.build import SERVING_SHARD_BYTES, auto_serving_shards, choose_cluster_factory
    from jrsearch.retrieval.index import EXACT_MAX, choose_factory

    for n, dim in ((EXACT_MAX + 1, 512), (1_000_000, 512), (10**8, 512), (10**9, 512), (10**9, 768)):
        assert choose_cluster_factory(n, dim) == choose_factory(n, dim, SERVING_SHARD_BYTES)
    assert choose_cluster_factory(1_000, 64).startswith("IVF")  # the library would search 1k vectors exactly
    big = choose_cluster_factory(10**9, 512, 512 * 2**30)  # more serving RAM: richer codes, split over nodes
    assert big != choose_cluster_factory(10**9, 512) and auto_serving_shards(10**9, 512, big) > 1

    dataset = synthetic_dataset(tmp_path / "vectors", 4_000, 64, 2, seed=7)
    report = run_build(str(tmp_path / "vectors"), tmp_path / "index", BuildOptions())
    assert report.factory == choose_cluster_factory(4_000, 64) and report.serving_shards == 1
    queries = dataset.vectors(1)[:200].astype(np.float32)
    _, ids = IndexDir(tmp_path / "index").search(queries, 1)
    assert (ids[:, 0] == np.arange(2_000, 2_200)).mean() > 0.95  # exact codes: each vector finds itself


def test_cluster_build_refuses_an_unreadable_memory_size(tmp_path):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    result = CliRunner().invoke(app, ["cluster", "build", str(tmp_path), "--out", str(tmp_path / "i"),
                                      "--memory", "lots"])
    assert result.exit_code == 1 and "--memory 'lots' is not a size" in result.stderr


@pytest.mark.slow
def test_compiled_router_equals_plain_calls_and_names_a_lost_shard(tmp_path, local_cluster):
    """The compiled-graph fan-out answers what plain actor calls answer, for one query and a batch
    larger than a channel's first buffer; once a shard dies it falls back to the calls, which name it."""
    from jrsearch.retrieval.cluster.index_dir import ShardUnavailableError
    from jrsearch.retrieval.cluster.router import ShardRouter

    dataset = synthetic_dataset(tmp_path / "vectors", 6_000, 64, 2, seed=5)
    run_build(str(tmp_path / "vectors"), tmp_path / "sharded", BuildOptions(factory="IVF64,PQ16", serving_shards=2))
    queries = dataset.sample(5_000, seed=6)  # 1.3 MB of float32: more than one default channel buffer
    plain = ShardRouter(tmp_path / "sharded", compiled=False)
    try:
        want = [plain.search(batch, 10) for batch in (queries[:1], queries[1:4], queries)]
    finally:
        plain.close()
    compiled = ShardRouter(tmp_path / "sharded", compiled=True)
    try:
        assert compiled.compiled and not plain.compiled
        for batch, (scores, ids) in zip((queries[:1], queries[1:4], queries), want, strict=True):
            got = compiled.search(batch, 10)
            assert np.array_equal(got[1], ids) and np.allclose(got[0], scores)
        assert compiled.compiled, compiled.graph_dropped  # still on the compiled path after every search

        compiled.kill_shard(0)
        with pytest.raises(ShardUnavailableError, match=r"shard_000\.index"):
            compiled.search(queries[:1], 10)
        assert not compiled.compiled and compiled.missing == [0]
        with pytest.raises(ShardUnavailableError, match=r"shard_000\.index"):  # and it stays an error
            compiled.search(queries[:1], 10)
    finally:
        compiled.close()

    partial = ShardRouter(tmp_path / "sharded", allow_partial=True, compiled=True)
    try:
        partial.kill_shard(1)
        scores, ids = partial.search(queries[:3], 10)
        assert partial.missing == [1] and (ids < 3_000).all() and (ids >= 0).all()  # only shard 0's rows, flagged
    finally:
        partial.close()


@pytest.mark.slow
def test_embed_survives_losing_a_node(tmp_path):
    """A 2-node cluster; the worker node is removed mid-job; every image lands exactly once.

    The head keeps 2 CPUs: what is left after the loss must still hold one embed actor and one
    decode task, or the job waits for resources for ever (as it would on a real cluster)."""
    from ray.cluster_utils import Cluster

    photos = make_photos(tmp_path / "photos", 240)
    cluster = Cluster(initialize_head=True, connect=False,
                      head_node_args={"num_cpus": 2, "include_dashboard": False, "object_store_memory": 150 * 2**20})
    worker = cluster.add_node(num_cpus=2, object_store_memory=150 * 2**20)
    out = tmp_path / "dataset"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    job = subprocess.Popen([sys.executable, "-m", "jrsearch.cli.main", "cluster", "embed", str(photos),
                            "--out", str(out),
                            "--model", "tiny-test", "--shard-size", "20", "--address", cluster.address, "--json"],
                           cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while not list((out / "metadata").glob("*.parquet")) and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.2)
        assert job.poll() is None, "the job ended before the node could be removed: " + job.stderr.read()[-2000:]
        cluster.remove_node(worker)
        stdout, stderr = job.communicate(timeout=240)
        assert job.returncode == 0, stderr[-3000:]
        assert json.loads(stdout)["embedded"] == 240  # stdout is the JSON alone, whatever Ray printed
    finally:
        if job.poll() is None:
            job.kill()
        cluster.shutdown()
    dataset = EmbeddingDataset.open(str(out))
    ids = [row["id"] for row in dataset.metadata(list(range(dataset.ntotal))).values()]
    assert dataset.ntotal == 240 and len(ids) == 240
    assert sorted(ids) == sorted(item_id(s, p) for s in range(12) for p in range(20))  # none lost, none twice


def test_an_indexdir_is_searched_through_its_service_by_the_api_and_the_cli(tmp_path):
    import json

    from typer.testing import CliRunner

    from jrsearch.cli.main import app
    from jrsearch.retrieval.cluster.search import ClusterService
    from jrsearch.retrieval.request import Filters, SearchRequest
    from jrsearch.retrieval.service import UnsupportedQuery

    synthetic_dataset(tmp_path / "vectors", 2_000, 64, 2, seed=5)
    build_single(str(tmp_path / "vectors"), tmp_path / "index", BuildOptions())
    service = ClusterService(tmp_path / "index")
    try:
        vector = service.embed("text", "a dog")
        found = service.search(vector, SearchRequest(top_k=5))
        assert len(found) == 5 and found.partial is None and {r.kind for r in found} == {"image"}
        assert len(service.search(vector, SearchRequest("text"))) == 0  # an INDEXDIR holds images only
        under = service.search(vector, SearchRequest(top_k=5, filters=Filters.make("/data/s1")))
        assert len(under) == 5 and all(r.path.startswith("/data/s1/") for r in under)
        item = service.item(found[0].item_id)
        assert item is not None and (item.path, item.kind, item.width) == (found[0].path, "image", 8)
        with pytest.raises(UnsupportedQuery, match="images only"):
            service.embed("audio", tmp_path / "x.wav")
    finally:
        service.close()
    ran = CliRunner().invoke(app, ["query", "a dog", "--index", str(tmp_path / "index"), "--json", "-k", "5"])
    assert ran.exit_code == 0, ran.output
    assert [r["path"] for r in json.loads(ran.stdout)] == [r.path for r in found]
    refused = CliRunner().invoke(app, ["query", "--audio", "x.wav", "--index", str(tmp_path / "index")])
    assert refused.exit_code == 1 and "images only" in refused.output


def test_json_stdout_is_kept_clean_of_what_ray_and_its_processes_print():
    code = ("import os, sys\n"
            "from jrsearch.cli.cluster import _stdout_to_stderr\n"
            "with _stdout_to_stderr(True):\n"
            "    print('(raylet) a worker died')\n"
            "    os.system('echo a child process line')\n"
            "print('{\"ok\": true}')\n")
    ran = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert json.loads(ran.stdout) == {"ok": True}
    assert "a worker died" in ran.stderr and "a child process line" in ran.stderr


@pytest.mark.parametrize("damage", ["truncated npy", "bad parquet"])
def test_cluster_build_names_a_damaged_shard_in_one_line(tmp_path, damage):
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    synthetic_dataset(tmp_path / "vectors", 400, 16, 2)
    dataset = tmp_path / "vectors"
    npy, parquet = dataset / "img_emb" / "img_emb_1.npy", dataset / "metadata" / "metadata_1.parquet"
    if damage == "truncated npy":
        npy.write_bytes(npy.read_bytes()[:-100])
    else:
        parquet.write_bytes(b"PAR1 not really a parquet file")
    result = CliRunner().invoke(app, ["cluster", "build", str(tmp_path / "vectors"), "--out", str(tmp_path / "i")])
    damaged = npy if damage == "truncated npy" else parquet
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1 and str(damaged) in result.stderr
    assert "run the same `jrsearch cluster embed` again" in result.stderr

"""`jrsearch cluster embed`: SOURCES -> an embedding dataset, on Ray Data.

    work rows (a chunk of a shard) ─flat_map─► decoded rows (CPU tasks: read, decode, model transform)
        ─map_batches─► embed actors (one per GPU in fp16; CPU actors where there is no GPU)
        ─► this process: rows gathered per shard; a shard with all its rows is written atomically

Ray retries what a lost node was running (tasks, and actors restart), so every row arrives; rows
are keyed by (shard, position) here, so a row delivered twice is stored once. Shards already
written are not planned again: a rerun of the same command resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jrsearch.indexer.cluster.sources import plan_sources
from jrsearch.retrieval.cluster.dataset import META_COLUMNS, DatasetError, DatasetPlan, DatasetWriter
from jrsearch.retrieval.cluster.model import load_model
from jrsearch.retrieval.cluster.session import ClusterInfo, connect, ray_module
from jrsearch.retrieval.types import ModelSpec

GPU_BATCH, CPU_BATCH = 256, 64


@dataclass
class EmbedOptions:
    shard_size: int = 100_000
    address: str | None = None
    num_cpus: int | None = None  # for a local cluster started here
    actors: int | None = None  # embed actors (default: one per GPU, else one per 4 CPUs)
    actor_cpus: float = 1.0  # CPUs (torch threads) per CPU actor
    batch_size: int | None = None
    precision: str = "auto"


@dataclass
class EmbedReport:
    shards_total: int = 0
    shards_skipped: int = 0  # already written by an earlier run
    shards_written: int = 0
    embedded: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    duplicates: int = 0  # rows Ray delivered twice (a retried task), stored once
    seconds: float = 0.0
    actors: str = ""

    def to_json(self) -> dict:
        return {"shards_total": self.shards_total, "shards_skipped": self.shards_skipped,
                "shards_written": self.shards_written, "embedded": self.embedded,
                "failed": [{"path": p, "error": e} for p, e in self.failed], "duplicates": self.duplicates,
                "seconds": round(self.seconds, 3),
                "images_per_s": round(self.embedded / self.seconds, 1) if self.seconds else None,
                "actors": self.actors}


ProgressFn = Callable[[int, int, int, float], None]  # shards done, shards total, items, seconds


class EmbedActor:
    """Holds the model on one worker (a GPU when it has one) and embeds decoded batches."""

    def __init__(self, name: str, pretrained: str, device: str, precision: str, threads: int) -> None:
        import torch

        torch.set_num_threads(max(1, threads))
        self.model = load_model(ModelSpec(name, pretrained), device=device, precision=precision)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ok = batch["ok"].astype(bool)
        vectors = np.zeros((len(ok), self.model.dim), np.float16)
        if ok.any():
            vectors[ok] = self.model.embed_pixels(np.stack(batch["pixels"][ok])).astype(np.float16)
        out = {k: v for k, v in batch.items() if k != "pixels"}
        out["embedding"] = vectors
        return out


def run_embed(sources: list[str], out: str, spec: ModelSpec, options: EmbedOptions | None = None,
              progress: ProgressFn | None = None) -> EmbedReport:
    options = options or EmbedOptions()
    started = time.perf_counter()
    plan = plan_sources(sources)
    model = load_model(spec, device="cpu")  # here only for the pixel transform and the dimension
    shards = plan.shard_count(options.shard_size)
    writer = DatasetWriter(out, DatasetPlan(spec, model.dim, shards, options.shard_size, list(sources),
                                            len(plan.listed)))
    done = writer.done()
    report = EmbedReport(shards_total=shards, shards_skipped=len(done & set(range(shards))))
    chunks = plan.chunks(options.shard_size, done)
    if chunks:
        info = connect(options.address, options.num_cpus)
        dataset = _pipeline(chunks, model.pixel_transform(), model.image_size, spec, info, options, report)
        _gather(dataset, writer, report, progress, started)
    report.seconds = time.perf_counter() - started
    return report


def _pipeline(chunks: list[dict], transform: Any, image_size: int, spec: ModelSpec, info: ClusterInfo,
              options: EmbedOptions, report: EmbedReport):
    ray = ray_module()
    from jrsearch.indexer.cluster.sources import decode_chunk

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the CLI draws its own: shards done, items/s
    context.enable_operator_progress_bars = False
    context.print_on_execution_start = False
    gpus = int(info.gpus)
    if gpus:
        actors, device = options.actors or gpus, "cuda"
        precision = "fp16" if options.precision == "auto" else options.precision
        resources: dict[str, Any] = {"num_gpus": 1}
    else:
        actors = options.actors or max(1, int(info.cpus) // 4)
        if info.cpus < actors * options.actor_cpus + 1:
            raise DatasetError(f"the cluster has {info.cpus:g} CPUs: {actors} embed actor(s) of {options.actor_cpus:g} "
                               f"CPUs and at least one decode task need more; pass --actors or --actor-cpus")
        device, precision = "cpu", "fp32" if options.precision == "auto" else options.precision
        resources = {"num_cpus": options.actor_cpus}
    report.actors = f"{actors} x {device} ({precision})"
    dataset = ray.data.from_items(chunks, override_num_blocks=len(chunks))
    dataset = dataset.flat_map(decode_chunk, fn_args=(transform, image_size), num_cpus=1)
    return dataset.map_batches(
        EmbedActor, fn_constructor_args=(spec.name, spec.pretrained, device, precision, int(options.actor_cpus)),
        batch_size=options.batch_size or (GPU_BATCH if gpus else CPU_BATCH), concurrency=actors,
        batch_format="numpy", **resources)


def _gather(dataset, writer: DatasetWriter, report: EmbedReport, progress: ProgressFn | None,
            started: float) -> None:
    """Rows -> per-shard buffers; a shard is written as soon as all of its rows are in."""
    pending: dict[int, dict[int, dict[str, Any]]] = {}
    expected: dict[int, int] = {}
    items = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for i in range(len(batch["shard"])):
            shard, pos = int(batch["shard"][i]), int(batch["pos"][i])
            rows = pending.setdefault(shard, {})
            if pos in rows:
                report.duplicates += 1
                continue
            rows[pos] = {k: batch[k][i] for k in batch}
            expected[shard] = int(batch["expected"][i])
            items += 1
            if len(rows) == expected[shard]:
                _write(writer, shard, pending.pop(shard), report)
        if progress:
            progress(report.shards_skipped + report.shards_written, report.shards_total, items,
                     time.perf_counter() - started)
    if pending:  # a shard that never got all its rows: a bug, not a lost node (Ray retries those)
        missing = {s: expected[s] - len(r) for s, r in pending.items()}
        raise RuntimeError(f"cluster embed: rows missing after the job ended: {missing}")


def _write(writer: DatasetWriter, shard: int, rows: dict[int, dict[str, Any]], report: EmbedReport) -> None:
    ordered = [rows[p] for p in sorted(rows)]
    good = [r for r in ordered if r["ok"]]
    failed = [(str(r["image_path"]), str(r["error"])) for r in ordered if not r["ok"]]
    vectors = np.stack([r["embedding"] for r in good]) if good else np.zeros((0, writer.plan.dim), np.float16)
    metadata = {name: [_plain(r[name]) for r in good] for name in META_COLUMNS}
    for name in ("caption", "taken_at", "taken_source", "camera"):  # "" and NaN (unknown) -> null
        metadata[name] = [text or None for text in metadata[name]]
    for name in ("taken_ts", "latitude", "longitude"):
        metadata[name] = [None if value != value else value for value in metadata[name]]
    metadata["mtime_ns"] = [m if m >= 0 else None for m in metadata["mtime_ns"]]
    writer.write_shard(shard, vectors, metadata, {"items": len(ordered), "embedded": len(good),
                                                  "failed": [{"path": p, "error": e} for p, e in failed]})
    report.shards_written += 1
    report.embedded += len(good)
    report.failed += failed


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

"""One cross-modal retrieval benchmark run: a split, its images and a model in; every query's rank,
the table (ours beside the published figures), Markdown and JSON out.

The images go through the same code users run (`retrieval.imageio.open_image`, the encoder's own
transform and towers), and with `index=True` the ranking also goes through the FAISS index type
the engine would build, so its recall cost shows beside the exact ranking.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from jrsearch.benchmarks.embedding_cache import EmbeddingCache, file_key, text_part
from jrsearch.benchmarks.splits import RetrievalSplit
from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.errors import JrsearchError, MediaError
from jrsearch.retrieval.imageio import open_image
from jrsearch.retrieval.index import DEFAULT_NPROBE, VectorIndex, choose_factory, gpu_count
from jrsearch.retrieval.metrics import (
    DEFAULT_KS,
    CrossModalRanks,
    RankSummary,
    cross_modal_ranks,
    mean_summary,
    ranks_from_hits,
    split_folds,
)
from jrsearch.retrieval.types import ModelSpec

REFERENCE_FILE = Path(__file__).with_name("reference_figures.json")
TITLES = {"coco": "COCO", "flickr30k": "Flickr30K"}
COLUMNS = ("R@1", "R@5", "R@10", "Med r", "Mean r")
TEXT_BATCH = 256
INDEX_DEPTH = 1024  # results asked of the index first; queries it did not answer are asked again in full
INDEX_QUERY_BLOCK = 2048  # faiss's flat search is several times faster on large query blocks
FULL_DEPTH_BLOCK = 128  # queries per full-depth search (its results are len(gallery) wide)
EXACT = "exact"

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class BenchOptions:
    benchmark: str  # "coco" or "flickr30k"
    split_label: str  # "1k" or "5k": what the table is called
    fold_size: int | None = None  # 1000 for COCO 1K (five folds of the 5K split); None: all images at once
    allow_partial: bool = False
    index: bool = False  # also rank through a FAISS index
    index_factory: str | None = None  # force an index type (default: the engine's choice for the size)
    nprobe: int = DEFAULT_NPROBE
    batch_size: int = 64
    workers: int = 2


@dataclass
class ImageProblem:
    path: str
    reason: str


@dataclass
class FoldResult:
    """One evaluation unit (a 1K fold, or the whole split) ranked one way."""

    fold: int | None
    ranked_by: str  # "exact", or "index: <gallery factories>"
    image_ids: list[str]
    caption_ids: list[str]
    ranks: CrossModalRanks
    image_to_text: RankSummary
    text_to_image: RankSummary

    def to_json(self) -> dict:
        return {"fold": self.fold, "ranked_by": self.ranked_by, "images": len(self.image_ids),
                "captions": len(self.caption_ids), "image_to_text": self.image_to_text.to_json(),
                "text_to_image": self.text_to_image.to_json(),
                "ranks": {"image_ids": self.image_ids, "image_to_text": self.ranks.image_to_text.tolist(),
                          "caption_ids": self.caption_ids, "text_to_image": self.ranks.text_to_image.tolist()}}


@dataclass
class TableRow:
    model: str
    ranked_by: str  # "exact", "index: ...", or "published"
    image_to_text: dict[str, float | None]  # COLUMNS -> value; None where a source does not give it
    text_to_image: dict[str, float | None]
    partial: bool = False
    source: str = ""  # citation for published rows
    language: str = ""  # multilingual benchmarks (XTD10): the captions' language, or "mean"

    @classmethod
    def from_summaries(cls, model: str, ranked_by: str, i2t: RankSummary, t2i: RankSummary,
                       partial: bool, language: str = "") -> TableRow:
        return cls(model, ranked_by, _cells(i2t), _cells(t2i), partial, language=language)

    def to_json(self) -> dict:
        rounded = lambda cells: {c: None if v is None else round(v, 4) for c, v in cells.items()}  # noqa: E731
        out = {"model": self.model, "ranked_by": self.ranked_by, "partial": self.partial, "source": self.source,
               "image_to_text": rounded(self.image_to_text), "text_to_image": rounded(self.text_to_image)}
        return {"language": self.language, **out} if self.language else out


def _cells(summary: RankSummary) -> dict[str, float | None]:
    cells: dict[str, float | None] = {f"R@{k}": summary.recall[k] for k in DEFAULT_KS}
    cells.update({"Med r": summary.median_rank, "Mean r": summary.mean_rank})
    return cells


@dataclass
class BenchReport:
    options: BenchOptions
    split: RetrievalSplit
    model: str
    pretrained: str
    precision: str
    device: str
    backend: str  # "onnx" or "torch": what ran the model
    images_evaluated: int
    captions_evaluated: int
    missing: list[str]
    unreadable: list[ImageProblem]
    rows: list[TableRow]
    folds: list[FoldResult]
    sources: dict = field(default_factory=dict)  # citations of the published rows
    seconds: dict = field(default_factory=dict)
    date: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    versions: dict = field(default_factory=lambda: software_versions())

    @property
    def partial(self) -> bool:
        return bool(self.missing or self.unreadable)

    @property
    def title(self) -> str:
        return f"{TITLES.get(self.options.benchmark, self.options.benchmark)} {self.options.split_label.upper()}"

    def counts_line(self) -> str:
        n_images, n_captions = len(self.split.images), len(self.split.captions)
        return (f"{self.images_evaluated:,} of {n_images:,} images evaluated ({len(self.missing):,} missing, "
                f"{len(self.unreadable):,} unreadable); {self.captions_evaluated:,} of {n_captions:,} captions")

    def file_stem(self) -> str:
        label = "".join(c if c.isalnum() or c in "-." else "_" for c in model_label(self.model, self.pretrained))
        return f"{self.options.benchmark}-{self.options.split_label}-{label}" + ("-PARTIAL" if self.partial else "")

    def to_json(self) -> dict:
        return {
            "benchmark": self.options.benchmark, "split": self.options.split_label, "split_name": self.split.name,
            "split_file": str(self.split.source), "model": self.model, "pretrained": self.pretrained,
            "precision": self.precision, "device": self.device, "backend": self.backend, "partial": self.partial,
            "images": {"in_split": len(self.split.images), "evaluated": self.images_evaluated,
                       "missing": self.missing, "unreadable": [vars(p) for p in self.unreadable]},
            "captions": {"in_split": len(self.split.captions), "evaluated": self.captions_evaluated},
            "fold_size": self.options.fold_size,
            "rows": [row.to_json() for row in self.rows],
            "folds": [fold.to_json() for fold in self.folds],
            "published_sources": self.sources, "date": self.date, "versions": self.versions,
            "seconds": {k: round(v, 3) for k, v in self.seconds.items()},
        }

    def to_markdown(self) -> str:
        lines = [f"# {self.title} cross-modal retrieval — {model_label(self.model, self.pretrained)}", ""]
        if self.partial:
            lines += [f"**PARTIAL — not comparable to published figures:** {self.counts_line()}.", ""]
        lines += [*markdown_table(self.rows), ""]
        folds = f"mean of {len({f.fold for f in self.folds})} folds of {self.options.fold_size:,} images" \
            if self.options.fold_size else "all images at once"
        lines += [f"- {self.counts_line()}; {folds}.",
                  f"- Split: `{self.split.name}` from `{self.split.source}`.",
                  "- Ranks are 1-based; a tie with a wrong item counts against the model; Med r is floored.",
                  f"- Run {self.date}, {self.precision} on {self.device} ({self.backend}); "
                  + ", ".join(f"{k} {v}" for k, v in self.versions.items()) + "."]
        lines += [f"- Published: {source['title']} ({source['url']}). {source.get('note', '')}".rstrip()
                  for source in self.sources.values()]
        if not self.sources:
            lines.append(f"- No published {self.title} figures on file (benchmarks/reference_figures.json).")
        return "\n".join(lines) + "\n"


def model_label(name: str, pretrained: str) -> str:
    """`name/tag`, or `name/checkpoint-file-name` for a local checkpoint (`ModelSpec.label`)."""
    return ModelSpec(name, pretrained).label(short=True)


def markdown_table(rows: list[TableRow]) -> list[str]:
    """The seed's table: Model | Ranked by | Image-to-Text R@1 R@5 R@10 Med r Mean r | Text-to-Image ..."""
    languages = any(r.language for r in rows)  # a Language column first for multilingual tables
    header = ["Language"] * languages + ["Model", "Ranked by"] \
        + [f"Image-to-Text {c}" if i == 0 else c for i, c in enumerate(COLUMNS)] \
        + [f"Text-to-Image {c}" if i == 0 else c for i, c in enumerate(COLUMNS)]
    body = [[r.language] * languages + [("PARTIAL " if r.partial else "") + r.model, r.ranked_by]
            + [_fmt(r.image_to_text.get(c)) for c in COLUMNS] + [_fmt(r.text_to_image.get(c)) for c in COLUMNS]
            for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"  # noqa: E731
    return [line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in body]


def _fmt(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def software_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import faiss

    out = {"python": platform.python_version()}
    for dist in ("jrsearch", "open_clip_torch", "torch", "numpy"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = "not installed"
    out["faiss"] = faiss.__version__
    return out


def published_rows(benchmark: str, split_label: str) -> tuple[list[TableRow], dict]:
    """Published zero-shot figures for this table, and the sources they cite."""
    data = json.loads(REFERENCE_FILE.read_text(encoding="utf-8"))
    rows = [TableRow(model_label(f["model"], f["pretrained"]), "published",
                     {c: f["image_to_text"].get(c) for c in COLUMNS}, {c: f["text_to_image"].get(c) for c in COLUMNS},
                     source=f["source"])
            for f in data["figures"] if f["benchmark"] == benchmark and f["split"] == split_label]
    return rows, {key: data["sources"][key] for key in sorted({r.source for r in rows})}


def refuse_partial(split: RetrievalSplit, images_dir: Path, missing: list[str], unreadable: list[ImageProblem]) -> None:
    """Stop: a table over part of the split must never look like the real one."""
    problems = missing + [f"{p.path} ({p.reason})" for p in unreadable]
    raise JrsearchError(
        f"{len(missing):,} of {len(split.images):,} images are missing and {len(unreadable):,} unreadable under "
        f"{images_dir} (first: {problems[0]}); fix --images, or pass --allow-partial for a table marked PARTIAL")


def run_benchmark(split: RetrievalSplit, images_dir: Path, encoder: Encoder, cache: EmbeddingCache,
                  options: BenchOptions, progress: Progress | None = None, precision: str = "auto") -> BenchReport:
    """Embed (or read from the cache) the split's images and captions, rank, and build the report."""
    progress = progress or (lambda stage, done, total: None)
    paths = [str(image.locate(images_dir)) for image in split.images]
    missing = [p for p in paths if not Path(p).is_file()]
    absent = set(missing)
    present = [Path(p) for p in dict.fromkeys(paths) if p not in absent]
    if missing and not options.allow_partial:
        refuse_partial(split, images_dir, missing, [])
    seconds: dict[str, float] = {}

    try:  # whatever was embedded is kept, also when the run stops here or is interrupted
        started = time.perf_counter()
        vectors, unreadable = embed_images(encoder, present, cache, options, progress)
        seconds["embed_images"] = time.perf_counter() - started
        if unreadable and not options.allow_partial:
            refuse_partial(split, images_dir, missing, unreadable)
        image_rows = np.array([i for i, p in enumerate(paths) if p in vectors], dtype=np.int64)
        if len(image_rows) == 0:
            raise JrsearchError(f"none of the {len(split.images):,} images of {split.name} could be read "
                                f"under {images_dir}")
        image_vectors = np.stack([vectors[paths[i]] for i in image_rows])

        started = time.perf_counter()
        caption_rows = np.flatnonzero(np.isin(split.caption_image, image_rows))
        text_vectors = embed_texts(encoder, split, caption_rows, cache, progress)
        seconds["embed_texts"] = time.perf_counter() - started
    finally:
        cache.save()

    results = rank_folds(split, image_rows, caption_rows, image_vectors, text_vectors, options, seconds)
    label = model_label(encoder.spec.name, encoder.spec.pretrained)
    rows = []
    for ranked_by in dict.fromkeys(r.ranked_by for r in results):  # one row per ranking: the mean over folds
        mine = [r for r in results if r.ranked_by == ranked_by]
        rows.append(TableRow.from_summaries(label, ranked_by, mean_summary([r.image_to_text for r in mine]),
                                            mean_summary([r.text_to_image for r in mine]), bool(missing or unreadable)))
    published, sources = published_rows(options.benchmark, options.split_label)
    return BenchReport(options, split, encoder.spec.name, encoder.spec.pretrained, precision, encoder.device,
                       encoder.backend,
                       len(image_rows), len(caption_rows), missing, unreadable, rows + published, results,
                       sources, seconds)


def rank_folds(split: RetrievalSplit, image_rows: np.ndarray, caption_rows: np.ndarray, image_vectors: np.ndarray,
               text_vectors: np.ndarray, options: BenchOptions, seconds: dict[str, float]) -> list[FoldResult]:
    """Rank every fold exactly, and through an index too with `options.index`; times go into `seconds`.

    `image_rows` / `caption_rows` say which of the split's images and captions the vectors are.
    """
    caption_image = np.searchsorted(image_rows, split.caption_image[caption_rows])  # a caption's image's vector row
    folds = split_folds(image_rows, caption_image, options.fold_size or len(split.images))
    methods = {"metrics_exact": lambda i, t, c: (cross_modal_ranks(i, t, c), EXACT)}
    if options.index or options.index_factory:
        methods["metrics_index"] = lambda i, t, c: index_ranks(i, t, c, options)
    results: list[FoldResult] = []
    for timer, method in methods.items():
        started = time.perf_counter()
        for fold in folds:  # fold.images is sorted, so searchsorted turns labels into fold-local ones
            ranks, ranked_by = method(image_vectors[fold.images], text_vectors[fold.captions],
                                      np.searchsorted(fold.images, caption_image[fold.captions]))
            i2t, t2i = ranks.summaries()
            results.append(FoldResult(
                fold.number if options.fold_size else None, ranked_by,
                [split.images[i].image_id for i in image_rows[fold.images]],
                [split.caption_ids[j] for j in caption_rows[fold.captions]], ranks, i2t, t2i))
        seconds[timer] = time.perf_counter() - started
    return results


def index_ranks(image_vectors: np.ndarray, text_vectors: np.ndarray, caption_image: np.ndarray,
                options: BenchOptions) -> tuple[CrossModalRanks, str]:
    """Both directions ranked by searching a FAISS index over each gallery, as the engine would."""
    images = np.arange(len(image_vectors))
    i2t, text_factory = _search_ranks(image_vectors, text_vectors, images, caption_image, options)
    t2i, image_factory = _search_ranks(text_vectors, image_vectors, caption_image, images, options)
    return CrossModalRanks(i2t, t2i), f"index: texts {text_factory}, images {image_factory}"


def _search_ranks(queries: np.ndarray, gallery: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray,
                  options: BenchOptions) -> tuple[np.ndarray, str]:
    dim = gallery.shape[1]
    factory = options.index_factory or choose_factory(len(gallery), dim)
    try:
        index = VectorIndex.build(gallery, np.arange(len(gallery)), dim, factory, nprobe=options.nprobe)
    except RuntimeError as exc:
        raise JrsearchError(f"cannot build index '{factory}' over {len(gallery):,} vectors: "
                            f"{str(exc).strip().splitlines()[-1]}") from None
    first_page = index.to_gpu() if gpu_count() else index  # GPU searches stop at 2,048 results: full depth on CPU
    ranks = np.empty(len(queries), dtype=np.int64)
    for start in range(0, len(queries), INDEX_QUERY_BLOCK):
        rows = np.arange(start, min(start + INDEX_QUERY_BLOCK, len(queries)))
        hits = first_page.search(queries[rows], INDEX_DEPTH)[1]
        ranks[rows] = ranks_from_hits(hits, query_labels[rows], gallery_labels)
        # Not within a full first page: the index may hold more for these queries, so ask for everything.
        # (A page with empty slots is all an approximate index would return: those stay unfound.)
        again = (rows[(ranks[rows] > len(gallery)) & (hits[:, -1] >= 0)] if len(gallery) > INDEX_DEPTH
                 else np.empty(0, dtype=np.int64))
        for block in range(0, len(again), FULL_DEPTH_BLOCK):
            retry = again[block:block + FULL_DEPTH_BLOCK]
            hits = index.search(queries[retry], len(gallery))[1]
            ranks[retry] = ranks_from_hits(hits, query_labels[retry], gallery_labels)
    return ranks, factory


def embed_images(encoder: Encoder, paths: list[Path], cache: EmbeddingCache, options: BenchOptions,
                 progress: Progress) -> tuple[dict[str, np.ndarray], list[ImageProblem]]:
    """Vectors by path (from the cache, else embedded), and the images that could not be read.

    Decoding runs on a thread pool one batch ahead of the model: while batch b is embedded, the
    workers decode batch b + 1.
    """
    keys = {str(p): file_key(p) for p in paths}
    vectors = {path: cache.get(key) for path, key in keys.items() if key in cache}
    todo = [p for p in paths if str(p) not in vectors]
    problems: list[ImageProblem] = []
    progress("images", len(vectors), len(paths))

    def decode(path: Path):
        try:
            return encoder.preprocess(open_image(path, draft_size=encoder.image_size))
        except MediaError as exc:
            return ImageProblem(str(path), exc.reason)
        except OSError as exc:
            return ImageProblem(str(path), exc.strerror or str(exc))

    batches = [todo[i:i + options.batch_size] for i in range(0, len(todo), options.batch_size)]
    with ThreadPoolExecutor(max_workers=max(1, options.workers), thread_name_prefix="bench-decode") as pool:
        ahead = pool.map(decode, batches[0]) if batches else iter(())
        for b, batch in enumerate(batches):
            decoded = list(ahead)
            if b + 1 < len(batches):
                ahead = pool.map(decode, batches[b + 1])
            problems += [d for d in decoded if isinstance(d, ImageProblem)]
            ok = [(p, d) for p, d in zip(batch, decoded, strict=True) if not isinstance(d, ImageProblem)]
            if ok:
                embedded = encoder.encode_images([d for _, d in ok])
                cache.put([keys[str(p)] for p, _ in ok], embedded)
                vectors.update({str(p): v for (p, _), v in zip(ok, embedded, strict=True)})
            progress("images", len(vectors) + len(problems), len(paths))
    return vectors, problems


def embed_texts(encoder: Encoder, split: RetrievalSplit, rows: np.ndarray, cache: EmbeddingCache,
                progress: Progress) -> np.ndarray:
    """(len(rows), dim) caption vectors, in `rows` order, from the cache where it has them."""
    source = file_key(split.source)
    keys = [f"{source}#{text_part(int(j), split.captions[j])}" for j in rows]
    todo = [n for n, key in enumerate(keys) if key not in cache]
    for start in range(0, len(todo), TEXT_BATCH):
        batch = todo[start:start + TEXT_BATCH]
        cache.put([keys[n] for n in batch], encoder.encode_texts([split.captions[rows[n]] for n in batch]))
        progress("captions", len(rows) - len(todo) + start + len(batch), len(rows))
    if not todo:
        progress("captions", len(rows), len(rows))
    return np.stack([cache.get(key) for key in keys]) if keys else np.empty((0, encoder.dim), np.float32)

"""`jrsearch bench`: retrieval benchmarks (COCO 1K / 5K, Flickr30K 1K, XTD10) as a table, Markdown and JSON."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from jrsearch.cli.common import MODEL_CHOICE, JsonOpt, handles_errors, model_options, resolve_model
from jrsearch.retrieval.types import ModelChoice

if TYPE_CHECKING:  # imported inside the commands, so that --help stays fast
    from jrsearch.benchmarks.retrieval_bench import BenchOptions
    from jrsearch.benchmarks.splits import RetrievalSplit

bench_app = typer.Typer(no_args_is_help=True, help="Retrieval benchmarks: Recall@K and median/mean rank tables.")


class CocoSplit(str, enum.Enum):
    ONE_K = "1k"
    FIVE_K = "5k"


ImagesOpt = Annotated[Path, typer.Option("--images", help="Folder with the split's images (COCO: val2014/).",
                                         exists=True, file_okay=False)]
CaptionsOpt = Annotated[Path | None, typer.Option(
    "--captions", help="Split file: Karpathy dataset_*.json, COCO captions_val2014.json (with --ids), or a "
                       "captions .tsv (default: looked for next to --images).", exists=True, dir_okay=False)]
OutOpt = Annotated[Path, typer.Option("--out", help="Folder for the Markdown and JSON results.")]
CacheOpt = Annotated[Path | None, typer.Option(
    "--cache-dir", help="Embedding cache (default: the user cache dir).", show_default=False)]
PartialOpt = Annotated[bool, typer.Option(
    "--allow-partial", help="Score the images that are present; every row is marked PARTIAL.")]
IndexOpt = Annotated[bool, typer.Option(
    "--index", help="Also rank through the FAISS index the engine would build, beside the exact ranking.")]
FactoryOpt = Annotated[str | None, typer.Option(
    "--index-factory", help="Rank through this faiss index_factory type instead (implies --index), "
                            "e.g. 'IVF64,PQ16' to see the recall cost of compression.")]
NprobeOpt = Annotated[int, typer.Option("--nprobe", min=1, help="IVF lists visited per query with --index.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Images per model batch.")]
WorkersOpt = Annotated[int, typer.Option("--workers", min=1, help="Image decode threads.")]


@bench_app.command()
@handles_errors
@model_options()
def coco(
    images: ImagesOpt,
    split: Annotated[CocoSplit, typer.Option("--split", help="1k: mean of five 1K folds; 5k: all 5,000 images.")]
    = CocoSplit.ONE_K,
    captions: CaptionsOpt = None,
    ids: Annotated[Path | None, typer.Option(
        "--ids", help="With captions_val2014.json: the split's COCO image ids, one per line, in order.",
        exists=True, dir_okay=False)] = None,
    choice: ModelChoice = MODEL_CHOICE,
    out: OutOpt = Path("results"), cache_dir: CacheOpt = None, allow_partial: PartialOpt = False,
    index: IndexOpt = False, index_factory: FactoryOpt = None, nprobe: NprobeOpt = 32,
    batch_size: BatchOpt = 64, workers: WorkersOpt = 2, as_json: JsonOpt = False,
) -> None:
    """COCO Karpathy test: image-to-text and text-to-image R@1/5/10, median and mean rank."""
    from jrsearch.benchmarks.retrieval_bench import BenchOptions
    from jrsearch.benchmarks.splits import find_split_file, load_split

    source = captions or find_split_file(images, ("dataset_coco.json", "captions.tsv"))
    options = BenchOptions("coco", split.value, 1000 if split is CocoSplit.ONE_K else None, allow_partial,
                           index, index_factory, nprobe, batch_size, workers)
    _run(load_split(source, ids), images, options, choice, out, cache_dir, as_json)


@bench_app.command()
@handles_errors
@model_options()
def flickr30k(
    images: ImagesOpt,
    captions: CaptionsOpt = None,
    choice: ModelChoice = MODEL_CHOICE,
    out: OutOpt = Path("results"), cache_dir: CacheOpt = None, allow_partial: PartialOpt = False,
    index: IndexOpt = False, index_factory: FactoryOpt = None, nprobe: NprobeOpt = 32,
    batch_size: BatchOpt = 64, workers: WorkersOpt = 2, as_json: JsonOpt = False,
) -> None:
    """Flickr30K Karpathy 1K test: the same table and code path as COCO."""
    from jrsearch.benchmarks.retrieval_bench import BenchOptions
    from jrsearch.benchmarks.splits import find_split_file, load_split

    source = captions or find_split_file(images, ("dataset_flickr30k.json",))
    options = BenchOptions("flickr30k", "1k", None, allow_partial, index, index_factory, nprobe, batch_size, workers)
    _run(load_split(source), images, options, choice, out, cache_dir, as_json)


XTD10_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "xtd10"


@bench_app.command()
@handles_errors
@model_options()
def xtd10(
    images: Annotated[Path, typer.Option("--images", help="Folder with COCO train2014 images (COCO_train2014_*.jpg).",
                                         exists=True, file_okay=False)],
    captions: Annotated[Path, typer.Option(
        "--captions", help="XTD10 folder holding XTD10/, MIC/ and STAIR/ (default: ../shared/data/xtd10 beside "
                           "the repository).", file_okay=False)] = XTD10_DIR,
    lang: Annotated[str, typer.Option("--lang", help="all, or a comma-separated list of en,de,fr,es,it,jp,ko,pl,ru,"
                                                     "tr,zh.")] = "all",
    choice: ModelChoice = MODEL_CHOICE,
    out: OutOpt = Path("results"), cache_dir: CacheOpt = None, allow_partial: PartialOpt = False,
    index: IndexOpt = False, index_factory: FactoryOpt = None, nprobe: NprobeOpt = 32,
    batch_size: BatchOpt = 64, workers: WorkersOpt = 2, as_json: JsonOpt = False,
) -> None:
    """XTD10: per language, image-to-text and text-to-image R@1/5/10 and ranks over 1,000 images, and the mean."""
    from jrsearch.benchmarks.retrieval_bench import BenchOptions
    from jrsearch.benchmarks.splits import load_xtd10
    from jrsearch.benchmarks.xtd10_bench import parse_languages, run_xtd10

    languages = parse_languages(lang)
    images = images.resolve()
    _check_images(load_xtd10(captions, languages[0]), images, allow_partial)  # every language has the same images
    options = BenchOptions("xtd10", "", None, allow_partial, index, index_factory, nprobe, batch_size, workers)
    _run_report(lambda encoder, cache, progress: run_xtd10(captions, languages, images, encoder, cache, options,
                                                           progress, choice.precision),
                choice, out, cache_dir, as_json)


def _run(split: RetrievalSplit, images: Path, options: BenchOptions, choice: ModelChoice, out: Path,
         cache_dir: Path | None, as_json: bool) -> None:
    """Check the images, load the model, run, print the table and write Markdown + JSON."""
    from jrsearch.benchmarks.retrieval_bench import run_benchmark

    images = images.resolve()
    _check_images(split, images, options.allow_partial)
    _run_report(lambda encoder, cache, progress: run_benchmark(split, images, encoder, cache, options, progress,
                                                               choice.precision),
                choice, out, cache_dir, as_json)


def _check_images(split: RetrievalSplit, images: Path, allow_partial: bool) -> None:
    """Refuse missing images before spending seconds on loading the model."""
    from jrsearch.benchmarks.retrieval_bench import refuse_partial

    missing = [image for image in split.images if not image.locate(images).is_file()]
    if missing and not allow_partial:
        refuse_partial(split, images, [str(m.locate(images)) for m in missing], [])


def _run_report(run: Callable, choice: ModelChoice, out: Path, cache_dir: Path | None, as_json: bool) -> None:
    """Load the model and cache, `run(encoder, cache, progress)` under a progress bar, print and write the report."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

    from jrsearch.benchmarks.embedding_cache import EmbeddingCache, default_cache_dir, model_setting
    from jrsearch.cli.render import err
    from jrsearch.retrieval.encoders import load_encoder

    spec = resolve_model(None, choice)
    encoder = load_encoder(spec, device=choice.device, precision=choice.precision, backend=choice.backend)
    for note in encoder.notes:
        err.print(f"note: {note}")
    cache = EmbeddingCache(cache_dir or default_cache_dir(), model_setting(encoder, choice.precision))
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err, disable=as_json, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(f"embedding {stage}", total=total)
            bar.update(tasks[stage], completed=done, total=total)

        report = run(encoder, cache, progress)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / report.file_stem()
    markdown = report.to_markdown()
    Path(f"{stem}.md").write_text(markdown, encoding="utf-8")
    Path(f"{stem}.json").write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n",
                                    encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
        return
    typer.echo(markdown)
    reports = list(getattr(report, "reports", {}).values()) or [report]  # XTD10: one report per language
    unreadable = {p.path: p for r in reports for p in r.unreadable}
    missing = list(dict.fromkeys(m for r in reports for m in r.missing))
    for problem in list(unreadable.values())[:10]:
        typer.echo(f"unreadable: {problem.path}: {problem.reason}", err=True)
    if missing:
        typer.echo(f"missing: {len(missing):,} images (listed in the JSON), e.g. {missing[0]}", err=True)
    typer.echo(f"wrote {stem}.md and {stem}.json", err=True)

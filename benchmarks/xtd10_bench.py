"""XTD10 multilingual retrieval: one `run_benchmark` per language over the same 1,000 images, one table.

Every language goes through `benchmarks.retrieval_bench.run_benchmark` (the same image decoding,
model towers, ranking and optional FAISS index as `bench coco`); the images are embedded once
(the embedding cache holds them after the first language). The report has, per language and
as the mean over languages, image-to-text and text-to-image R@1/5/10, median and mean rank, the
published figures beside them, and the counts of every language checked.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from jrsearch.benchmarks.embedding_cache import EmbeddingCache
from jrsearch.benchmarks.retrieval_bench import (
    BenchOptions,
    BenchReport,
    Progress,
    TableRow,
    markdown_table,
    model_label,
    published_rows,
    run_benchmark,
    software_versions,
)
from jrsearch.benchmarks.splits import XTD10_FILES, XTD10_IMAGES, load_xtd10
from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.errors import JrsearchError
from jrsearch.retrieval.metrics import mean_summary

BENCHMARK = "xtd10"
MEAN = "mean"


def parse_languages(value: str) -> list[str]:
    """`all` or a comma-separated list such as `en,de,zh` -> languages in XTD10's order."""
    if value.strip().lower() == "all":
        return list(XTD10_FILES)
    wanted = [lang.strip().lower() for lang in value.split(",") if lang.strip()]
    unknown = [lang for lang in wanted if lang not in XTD10_FILES]
    if unknown or not wanted:
        raise JrsearchError(f"unknown XTD10 language(s) {', '.join(unknown) or '(none given)'}; "
                            f"use all or some of {','.join(XTD10_FILES)}")
    return [lang for lang in XTD10_FILES if lang in wanted]


@dataclass
class Xtd10Report:
    languages: list[str]
    reports: dict[str, BenchReport]  # language -> its run
    rows: list[TableRow]  # ours per language and the mean, then the published ones
    sources: dict
    date: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    versions: dict = field(default_factory=lambda: software_versions())

    @property
    def first(self) -> BenchReport:
        return self.reports[self.languages[0]]

    @property
    def partial(self) -> bool:
        return any(report.partial for report in self.reports.values())

    def file_stem(self) -> str:
        first = self.first
        label = "".join(c if c.isalnum() or c in "-." else "_" for c in model_label(first.model, first.pretrained))
        langs = "all" if self.languages == list(XTD10_FILES) else "-".join(self.languages)
        return f"{BENCHMARK}-{langs}-{label}" + ("-PARTIAL" if self.partial else "")

    def counts(self) -> dict[str, dict[str, int]]:
        return {lang: {"images": r.images_evaluated, "captions": r.captions_evaluated,
                       "missing": len(r.missing), "unreadable": len(r.unreadable)} for lang, r in self.reports.items()}

    def to_json(self) -> dict:
        first = self.first
        return {"benchmark": BENCHMARK, "languages": self.languages, "model": first.model,
                "pretrained": first.pretrained, "precision": first.precision, "device": first.device,
                "backend": first.backend,
                "partial": self.partial, "counts": self.counts(), "rows": [row.to_json() for row in self.rows],
                "per_language": {lang: report.to_json() for lang, report in self.reports.items()},
                "published_sources": self.sources, "date": self.date, "versions": self.versions}

    def to_markdown(self) -> str:
        first = self.first
        lines = [f"# XTD10 multilingual retrieval — {model_label(first.model, first.pretrained)}", ""]
        if self.partial:
            lines += ["**PARTIAL — not comparable to published figures:** "
                      + "; ".join(f"{lang}: {r.counts_line()}" for lang, r in self.reports.items() if r.partial), ""]
        lines += [*markdown_table(self.rows), ""]
        complete = [lang for lang, c in self.counts().items()
                    if c["images"] == XTD10_IMAGES and c["captions"] == XTD10_IMAGES]
        lines += [f"- {len(complete)} of {len(self.languages)} languages complete ({XTD10_IMAGES:,} images, "
                  f"{XTD10_IMAGES:,} captions each, one caption per image); `{MEAN}` is the mean over the "
                  f"{len(self.languages)} languages run.",
                  f"- Captions: `{first.split.source.parent.parent}`; images: "
                  f"{first.images_evaluated:,} of {len(first.split.images):,} found.",
                  "- Ranks are 1-based; a tie with a wrong item counts against the model; Med r is floored.",
                  f"- Run {self.date}, {first.precision} on {first.device} ({first.backend}); "
                  + ", ".join(f"{k} {v}" for k, v in self.versions.items()) + "."]
        lines += [f"- Published: {source['title']} ({source['url']}). {source.get('note', '')}".rstrip()
                  for source in self.sources.values()]
        return "\n".join(lines) + "\n"


def run_xtd10(captions_dir: Path, languages: list[str], images_dir: Path, encoder: Encoder, cache: EmbeddingCache,
              options: BenchOptions, progress: Progress | None = None, precision: str = "auto") -> Xtd10Report:
    """Every language's split loaded (counts checked) before any embedding, then one run per language."""
    splits = {lang: load_xtd10(captions_dir, lang) for lang in languages}
    reports: dict[str, BenchReport] = {}
    for lang, split in splits.items():
        lang_options = BenchOptions(BENCHMARK, lang, None, options.allow_partial, options.index,
                                    options.index_factory, options.nprobe, options.batch_size, options.workers)
        reports[lang] = run_benchmark(split, images_dir, encoder, cache, lang_options,
                                      _labelled(progress, lang) if progress else None, precision)
    ours: list[TableRow] = []
    for lang, report in reports.items():
        ours += [_with_language(row, lang) for row in report.rows if row.ranked_by != "published"]
    for ranked_by in dict.fromkeys(row.ranked_by for row in ours) if len(languages) > 1 else ():
        folds = [fold for report in reports.values() for fold in report.folds if fold.ranked_by == ranked_by]
        ours.append(TableRow.from_summaries(ours[0].model, ranked_by, mean_summary([f.image_to_text for f in folds]),
                                            mean_summary([f.text_to_image for f in folds]),
                                            any(r.partial for r in reports.values()), language=MEAN))
    published, sources = [], {}
    for lang in [*languages, MEAN] if len(languages) > 1 else languages:
        rows, found = published_rows(BENCHMARK, lang)
        published += [_with_language(row, lang) for row in rows]
        sources.update(found)
    return Xtd10Report(languages, reports, ours + published, sources)


def _labelled(progress: Progress, language: str) -> Progress:
    """Progress stages named with the language ("captions (de)")."""
    return lambda stage, done, total: progress(f"{stage} ({language})", done, total)


def _with_language(row: TableRow, language: str) -> TableRow:
    row.language = language
    return row

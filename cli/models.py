"""`jrsearch models`: each open_clip model and tag with its published quality, embedding size,
whether it runs on the fast CPU path, and what it cost on this project's machines where measured."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from jrsearch.cli.common import handles_errors


def _figure(value: float | None, scale: float = 100.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:.{digits}f}"


@handles_errors
def models(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model, as a list.")] = False,
    fast_only: Annotated[bool, typer.Option("--fast", help="Only models that run on the fast CPU path.")] = False,
) -> None:
    """List open_clip models: ImageNet zero-shot and COCO/Flickr text->image R@5 (open_clip's published
    tables), embedding size, fast CPU path, and measured CPU-seconds per image and per query."""
    from rich.console import Console
    from rich.table import Table

    from jrsearch.retrieval.model_table import entries, sources

    rows = [e for e in entries() if not fast_only or e.fast_path in ("expected", "measured")]
    if as_json:
        typer.echo(json.dumps([e.to_json() for e in rows], indent=1))
        return
    table = Table("model", "pretrained", "ImageNet %", "COCO R@5 %", "Flickr R@5 %", "dim", "fast path",
                  "CPU-s/image", "CPU-s/query", "export s", "export RSS MiB", box=None, pad_edge=False)
    for e in rows:
        table.add_row(e.model, e.pretrained, _figure(e.imagenet), _figure(e.coco_t2i_r5), _figure(e.flickr_t2i_r5),
                      str(e.embed_dim), e.fast_path, _figure(e.cpu_s_per_image, 1, 3),
                      _figure(e.cpu_s_per_query, 1, 4), _figure(e.export_s, 1, 0), _figure(e.export_peak_rss_mib, 1, 0))
    console = Console(width=200)
    console.print(table)
    for name, text in sources().items():
        console.print(f"source ({name}): {text}", soft_wrap=True)
    console.print("measured: `python -m jrsearch.benchmarks.models` (random weights, this project's 2-core VM)",
                  soft_wrap=True)

"""Tables, progress bars and summaries for people (JSON output is built in the commands)."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jrsearch.retrieval.paths import display_path
from jrsearch.retrieval.types import ResultSet, SearchResult

if TYPE_CHECKING:  # the pipeline pulls in SQLAlchemy; a cold `jrsearch query` must not pay for it
    from rich.progress import TaskID

    from jrsearch.indexer.pipeline import IndexReport
    from jrsearch.retrieval.duplicates import DuplicateGroup

out = Console(soft_wrap=True)  # lines are not broken at the width: piped, a path stays whole
err = Console(stderr=True)


class RichProgress:
    """A progress bar with rate and ETA on stderr, fed by the indexing pipeline."""

    def __init__(self, enabled: bool = True) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bar = Progress(TextColumn("indexing"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
                             TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                             TimeRemainingColumn(), console=err, disable=not enabled, transient=False)
        self._task: TaskID | None = None

    def __enter__(self) -> RichProgress:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._bar.__exit__(*exc)

    def start(self, total: int) -> None:
        self._task = self._bar.add_task("index", total=total, rate="")

    def advance(self, n: int = 1) -> None:
        assert self._task is not None, "start() comes first"
        self._bar.advance(self._task, n)
        task = self._bar.tasks[0]
        if task.speed:
            self._bar.update(self._task, rate=f"{task.speed:.1f} files/s")


def print_index_report(report: IndexReport) -> None:
    out.print(f"indexed {indexed_text(report.kinds, report.captions)}, unchanged {report.unchanged}, "
              f"removed {report.removed}, failed {len(report.failed)}"
              + (f", skipped {report.skipped} (see the notes)" if report.skipped else "")
              + f" in {report.seconds:.1f} s", markup=False, highlight=False)
    for path, error in report.failed[:20]:
        out.print(f"  failed: {display_path(path)}: {error}", markup=False, highlight=False)
    if len(report.failed) > 20:
        out.print(f"  ... and {len(report.failed) - 20} more (jrsearch status --failures)")


# What a kind's files are called in a count (a plugin's kind: "N note files").
KIND_NOUNS = {"image": "image", "video": "video", "audio": "sound", "text": "text file"}


def counted(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def indexed_text(kinds: dict[str, int], captions: dict[str, int]) -> str:
    """Files indexed by kind, a text corpus as its captions: "3 videos, 6 captions from caps.txt"."""
    parts = [counted(n, KIND_NOUNS.get(kind, f"{kind} file")) for kind, n in kinds.items()
             if n and not (kind == "text" and captions)]
    if captions:
        names = [os.path.basename(display_path(p)) for p in captions]
        source = names[0] if len(names) == 1 else counted(len(names), "file")
        parts.append(f"{counted(sum(captions.values()), 'caption')} from {source}")
    return ", ".join(parts) or "0 files"


def print_result_set(results: Sequence[SearchResult], as_json: bool, paths_only: bool = False) -> None:
    """`jrsearch query`'s answer: a table, or JSON (a list; with `{"results", "partial"}` where
    shards of an INDEXDIR did not answer), and a warning on stderr for partial results."""
    partial = results.partial if isinstance(results, ResultSet) else None
    if as_json:
        payload: dict[str, Any] | list[dict[str, Any]] = [r.to_json() for r in results]
        if partial is not None:
            payload = {"results": payload, "partial": {"missing_shards": partial.missing_shards}}
        typer.echo(json.dumps(payload, indent=2))
        return
    print_results(results, paths_only)
    if partial is not None:
        typer.echo(f"warning: partial results: shard(s) {', '.join(partial.missing_shards)} did not answer",
                   err=True)


def print_results(results: Sequence[SearchResult], paths_only: bool = False) -> None:
    """Both query paths' answer for people: a table on a terminal; piped, one line per result
    (tab-separated, never wrapped, under a `#` header line); `paths_only`, the paths alone."""
    if paths_only:
        sys.stdout.write("".join(f"{one_line(display_path(r.path))}\n" for r in results))
        return
    if not results:
        (out if out.is_terminal else err).print("no results")
        return
    columns, rows = result_rows(results)
    if not out.is_terminal:
        sys.stdout.write("".join("\t".join(map(one_line, row)) + "\n" for row in [columns, *rows]))
        return
    table = Table(box=None, show_header=True, header_style="bold")
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*(escape(cell) for cell in row))  # the files' text, not rich markup
    out.print(table)


def result_rows(results: Sequence[SearchResult]) -> tuple[list[str], list[list[str]]]:
    """The answer's column names and rows: what the files say of themselves (date taken, camera)
    each in a column only where a result has it."""
    taken = any(r.taken_at for r in results)
    camera = any(r.camera for r in results)
    columns = ["#", "score", "path", "detail", *(["taken"] if taken else []), *(["camera"] if camera else [])]
    rows = []
    for r in results:
        detail = ""
        if r.text is not None:
            detail = f"line {r.line}: {r.text}"
        elif r.start_s is not None:
            detail = f"{r.start_s:.1f}-{r.end_s:.1f} s"
        row = [str(r.rank), f"{r.score:.4f}", display_path(r.path) + copies_text(r.copies), detail]
        if taken:
            row.append(taken_text(r.taken_at, r.taken_source))
        if camera:
            row.append(r.camera or "")
        rows.append(row)
    return columns, rows


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(text: str) -> str:
    """`text` with its control characters (tabs, line breaks) written as \\xNN, as `display_path`
    writes undecodable bytes: a piped result stays one line and its columns stay apart."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def print_duplicate_groups(groups: Sequence[DuplicateGroup]) -> None:
    """`jrsearch duplicates`: each group's paths, then each pair's similarity."""
    if not groups:
        out.print("no duplicates")
        return
    for number, group in enumerate(groups, 1):
        out.print(f"group {number}: {len(group.paths)} files" + (" (exact copies)" if group.exact else ""))
        for path in group.paths:
            out.print(f"  {display_path(path)}", markup=False, highlight=False, soft_wrap=True)
        for a, b, similarity in group.pairs:
            out.print(f"    {similarity:.4f}  {display_path(a)} ~ {display_path(b)}", markup=False, highlight=False,
                      soft_wrap=True)


def copies_text(copies: Sequence[str]) -> str:
    """Under a result's path, its exact copies: "3 copies, also: a.jpg, b.jpg" ("" without any)."""
    if not copies:
        return ""
    return f"\n{len(copies) + 1} copies, also: " + ", ".join(display_path(p) for p in copies)


def taken_text(taken_at: str | None, taken_source: str | None = None) -> str:
    """A date taken as people read it: `2024-06-01 12:30` (the file's own clock; ISO 8601 in --json);
    `modified 2024-06-01 12:30` where the file holds no date and its modification time stands in."""
    if not taken_at:
        return ""
    day, _, time = taken_at.partition("T")
    return f"{'modified ' if taken_source == 'mtime' else ''}{day} {time[:5]}".strip()


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def print_status(info: dict) -> None:
    out.print(f"library   {info['library']}")
    model = f"{info['model']}/{info['pretrained']}" if info["pretrained"] else str(info["model"])
    out.print(f"model     {model} (dim {info['dim']})")
    if info.get("audio_model"):
        out.print(f"audio     {info['audio_model']['path']} ({info['audio_model']['kind']})")
    for kind, counts in sorted(info["items"].items()):
        captions = f" ({counted(info['texts'], 'caption')})" if kind == "text" and info.get("texts") else ""
        out.print(f"{kind:9} " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) + captions)
    if "with_date_taken" in info or "with_place" in info:
        out.print(f"metadata  {info.get('with_date_taken', 0)} with a date taken, "
                  f"{info.get('with_place', 0)} with a place")
    for kind, idx in sorted(info["indexes"].items()):
        fresh = "" if idx["up_to_date"] else " (stale: rebuilt on next use)"
        out.print(f"index     {kind}: {idx['factory'] or '-'} with {idx['vectors']} vectors{fresh}")
        if idx.get("memory_bytes"):
            mapped = ", memory-mapped" if idx.get("memory_mapped") else ""
            out.print(f"          RAM {_mib(idx['memory_bytes'])} once warm{mapped}; "
                      f"disk {_mib(idx['disk_bytes'])} index + {_mib(idx.get('vector_bytes', 0))} vectors")
            if idx.get("code_table_bytes"):
                out.print(f"          code table {_mib(idx['code_table_bytes'])} (memory-mapped, for filters)")
    out.print(f"on disk   {info['bytes_on_disk'] / 2**20:.1f} MiB")
    for damaged in info.get("damaged", []):
        out.print(f"damaged   {damaged} (`jrsearch check --repair` repairs it)", markup=False, highlight=False)
    for failure in info.get("failures", []):
        out.print(f"failed    {failure['path']}: {failure['error']}", markup=False, highlight=False)
    if info.get("failures"):
        out.print("(fixed a file, or changed a limit? `jrsearch index DIR --retry-failed` tries failures again)")

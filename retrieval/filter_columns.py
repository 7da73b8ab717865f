"""The filter columns beside each index, and the filtered search both query paths run over them.

    LIBRARY/index/KIND.columns/   `filtered_search.MetadataColumns` of KIND's vectors (.npy files,
                                  memory-mapped) and meta.json: the generation they describe and
                                  the sorted folder list

Row i describes vector `ids[i]` (ids ascending, as in the index): `path_rank` is the rank of its
item's folder (the parent folder's bytes + "/") in the sorted folder list, so every folder under
`--under DIR` is one contiguous rank range, found by two bisects; `taken` is the date taken in
whole POSIX seconds (floor), `lat`/`lon` degrees, `camera` a code into the dictionary of
"make model" names (`catalog.camera_name`).

Staleness: the folder is written by `IndexSet.save` with the index file, labelled with the store
generation of the kind (`index_state.generation`, bumped by every commit that changes the kind's
vectors: a file's metadata and path only change with its vectors). A folder whose generation is not
the store's, or that is missing or unreadable, is stale: writers (and the long-lived service,
in memory) rebuild it from SQLite (`Catalog.filter_rows`); the cold path cannot answer quickly and
falls back to the normal path. The 3 -> 4 migration removes every folder (the data predates it).

Reading is numpy + stdlib (the cold query path loads it).
"""

from __future__ import annotations

import bisect
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from jrsearch.retrieval.filtered_search import (
    TAKEN_UNKNOWN,
    ColumnFilter,
    ExactRows,
    MetadataColumns,
    column_plan,
)
from jrsearch.retrieval.paths import INDEX_DIR, columns_path
from jrsearch.retrieval.ranking import CopyFetcher, RowFetcher, widening_search
from jrsearch.retrieval.request import Filters
from jrsearch.retrieval.vectors import ShardSource

if TYPE_CHECKING:
    from jrsearch.retrieval.catalog import Catalog, FilterRows
    from jrsearch.retrieval.index import VectorIndex
    from jrsearch.retrieval.types import SearchResult

FORMAT = 4  # meta.json's "format": a folder of another format is stale (3: taken_by_rank; 4: int32 row orders)
TAKEN_MAX = int(np.iinfo(np.int64).max)
SEP = os.sep.encode()


@dataclass(frozen=True)
class FilterColumns:
    """A kind's columns, the sorted folder keys their `path_rank` indexes, and their generation."""

    columns: MetadataColumns
    folders: list[bytes]
    generation: int

    def spec(self, filters: Filters) -> ColumnFilter:
        """The column filter of `filters`' folder and metadata conditions (glob stays a post-filter)."""
        rank_ranges = None
        if filters.under is not None:
            prefix = os.fsencode(filters.under)
            if not prefix.endswith(SEP):
                prefix += SEP
            end = prefix[:-1] + bytes([prefix[-1] + 1])  # the first key past every one starting with prefix
            rank_ranges = ((bisect.bisect_left(self.folders, prefix), bisect.bisect_left(self.folders, end)),)
        taken_range = None
        if filters.after is not None or filters.before is not None:
            lo = math.ceil(filters.after) if filters.after is not None else TAKEN_UNKNOWN + 1
            hi = math.ceil(filters.before) if filters.before is not None else TAKEN_MAX
            taken_range = (lo, hi)
        cameras = None
        if filters.camera is not None:
            needle = filters.camera.lower()
            cameras = tuple(code for code, name in enumerate(self.columns.cameras) if needle in name.lower())
        return ColumnFilter(rank_ranges=rank_ranges, taken_range=taken_range, near=filters.near, cameras=cameras)


def folder_key(path: bytes) -> bytes:
    """The key a file's folder is ranked by: the parent folder's bytes, ending in the separator."""
    head = path[:path.rfind(SEP) + 1]  # os.path.dirname's answer, without its cost (millions of paths)
    if not head:
        return SEP
    if head.endswith(SEP + SEP) and head.strip(SEP):
        return head.rstrip(SEP) + SEP  # "a/b//c" is in "a/b/", as dirname says
    return head


def build_columns(rows: FilterRows, generation: int) -> FilterColumns:
    """Columns from the store's rows (`Catalog.filter_rows`, ids ascending)."""
    keys = [folder_key(path) for path in rows.paths]
    folders = sorted(set(keys))
    rank_of = {key: rank for rank, key in enumerate(folders)}
    names = sorted({name for name in rows.cameras if name})
    code_of: dict[str | None, int] = {name: code for code, name in enumerate(names)}
    code_of[None] = code_of[""] = -1
    taken = np.full(len(rows.ids), TAKEN_UNKNOWN, dtype=np.int64)
    known = ~np.isnan(rows.taken)
    taken[known] = np.floor(rows.taken[known]).astype(np.int64)
    n = len(rows.ids)
    columns = MetadataColumns.build(
        rows.ids, np.fromiter(map(rank_of.__getitem__, keys), dtype=np.int32, count=n), taken, rows.lat, rows.lon,
        np.fromiter(map(code_of.__getitem__, rows.cameras), dtype=np.int32, count=n), names)
    return FilterColumns(columns, folders, generation)


def save_columns(root: Path, kind: str, columns: FilterColumns) -> None:
    """Write the folder; best effort (a cache: without it, filtered searches build the columns from
    the store): where it cannot be written (a full disk), none is left."""
    folders = [os.fsdecode(key) for key in columns.folders]  # surrogate escapes keep any bytes
    try:
        columns.columns.save(columns_path(root, kind), {"format": FORMAT, "generation": columns.generation,
                                                         "folders": folders})
    except OSError:
        remove_columns(root, kind)


def _saved_meta(root: Path, kind: str) -> tuple[int, list[str]] | None:
    """The saved folder's generation and folder list (its meta.json), None where there is none
    readable of this FORMAT, or a file in it does not have the size its checksums record."""
    from jrsearch.retrieval.checksums import check_folder

    if check_folder(columns_path(root, kind)).damaged:
        return None
    try:
        meta = json.loads((columns_path(root, kind) / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            return None
        return int(meta["generation"]), list(meta["folders"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def saved_generation(root: Path, kind: str) -> int | None:
    """The generation the saved folder describes, None where there is none readable."""
    meta = _saved_meta(root, kind)
    return meta[0] if meta is not None else None


def load_columns(root: Path, kind: str, generation: int) -> FilterColumns | None:
    """The saved folder if it describes `generation` (memory-mapped); None where stale or unreadable."""
    meta = _saved_meta(root, kind)
    if meta is None or meta[0] != generation:
        return None
    try:
        folders = [os.fsencode(name) for name in meta[1]]
        return FilterColumns(MetadataColumns.load(columns_path(root, kind)), folders, generation)
    except Exception:  # any damage np.load or json can meet means "unreadable"
        return None


def remove_columns(root: Path, kind: str | None = None) -> None:
    """Remove `kind`'s saved folder, or every kind's (their data predates a migration), with any
    half-written copy."""
    folder = root / INDEX_DIR
    if folder.is_dir():
        for path in folder.glob(f"{kind}.columns*" if kind else "*.columns*"):
            shutil.rmtree(path, ignore_errors=True)


def rebuild_saved_columns(root: Path, catalog: Catalog) -> None:
    """Replace every kind's saved folder with columns built from the store now (a writer holding
    the lock, e.g. at the end of a migration); best effort: a kind that cannot be written has none."""
    remove_columns(root)
    for kind, state in catalog.index_states().items():
        save_columns(root, kind, build_columns(catalog.filter_rows(kind), state.generation))


def exact_rows(index: VectorIndex) -> ExactRows:
    """How filtered search reads the exact vectors of ids: the index's shards as stored (float16),
    through its slot runs (`vectors.ShardSource.get_stored`), or whatever source it has."""
    source = index.source
    if isinstance(source, ShardSource):
        return source.get_stored
    if source is None:
        raise ValueError("an index without a vector source cannot answer a filtered search")
    get = source.get

    def float32_rows(ids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        return get(ids)  # float32: `out` (a float16 buffer) is not for these

    return float32_rows


def filtered_ranked_search(index: VectorIndex | None, columns: FilterColumns, query: np.ndarray, top_k: int,
                           filters: Filters, fetch_rows: RowFetcher, nprobe: int | None = None,
                           rerank: int | None = None, fetch_copies: CopyFetcher | None = None) -> list[SearchResult]:
    """`ranking.ranked_search` for filters the columns resolve to vector ids (`Filters.by_columns`):
    `filtered_search` among them (exact over their float16 rows when few, the index with an ID
    selector when many), ranked one per item/text, the glob applied after."""
    if index is None:
        return []
    plan, matching = column_plan(index, columns.columns, columns.spec(filters), exact_rows(index))
    if matching == 0:
        return []
    return widening_search(lambda k: plan(query, k, nprobe, rerank)[:2], matching, top_k,
                           filters if filters.glob else None, fetch_rows, fetch_copies)

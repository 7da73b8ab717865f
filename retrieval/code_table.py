"""Every vector's PQ code in id order: approximate scores for any set of ids from 64 bytes a vector,
not its 1 KB float16 row.

A filter that keeps thousands to ~100k of 10M vectors is too many to score exactly (the float16
rows are gathered from memory at ~0.4 us each) and too few for the index's ID selector (its lists
hold mostly vectors the filter drops). The inverted lists keep codes by list, so they cannot be read
by id; this table keeps a second PQ code per vector, by id, not relative to a list centroid (so any
subset is scored by one flat ADC scan), in the space the index's OPQ rotation makes. The filtered
plan scores the matching ids' codes here and re-ranks the best `depth` on their float16 rows
(`filtered_search.filtered_plan`).

    INDEX_FILE.codes/   pq.faiss (the trained, empty IndexPQ), ids.npy (int64, ascending),
                        codes.npy ((n, m) uint8, row i the code of ids[i]), meta.json: the format
                        and the index file's checksum record this table was written with

A table whose record is not the index file's (a crash between the two writes) is not loaded: the
plan then scores those filters as before, and the next save writes both again.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import numpy as np

from jrsearch.retrieval.checksums import check_folder, sidecar, write_folder_checked
from jrsearch.retrieval.faiss_import import code_storage, load_faiss, search_stored
from jrsearch.retrieval.fileio import read_json_object

FORMAT = 1
CODE_CHUNK = 131_072  # codes gathered and scanned at a time: 8 MB at 64 bytes (100k of 10M: 4.1 ms, 5.3 in 32k chunks)
PQ_BITS = 8
TRAIN_ITERATIONS = 10


def codes_path(index_file: Path) -> Path:
    return index_file.with_name(index_file.name + ".codes")


class CodeTable:
    """PQ codes of vectors by id (inner product, `quantizer` a trained faiss IndexPQ holding none)."""

    def __init__(self, quantizer: Any, ids: np.ndarray | None = None, codes: np.ndarray | None = None) -> None:
        self.quantizer = quantizer
        width = int(quantizer.code_size)
        self._ids = np.zeros(0, np.int64) if ids is None else ids
        self._codes = np.zeros((0, width), np.uint8) if codes is None else codes
        if len(self._ids) != len(self._codes) or self._codes.shape[1] != width:
            raise ValueError(f"{len(self._ids)} ids and codes of shape {self._codes.shape} (width {width})")
        self._appended: list[tuple[np.ndarray, np.ndarray]] = []  # joined on the next read, not per add
        self._blocks = threading.local()  # one scan buffer per thread (serve's requests run in threads)

    @property
    def ids(self) -> np.ndarray:
        self._join()
        return self._ids

    @property
    def codes(self) -> np.ndarray:
        self._join()
        return self._codes

    def _join(self) -> None:
        if self._appended:
            ids, codes = zip(*self._appended, strict=True)
            self._ids, self._codes = np.concatenate([self._ids, *ids]), np.concatenate([self._codes, *codes])
            self._appended = []

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def train(cls, sample: np.ndarray, m: int, seed: int = 0) -> CodeTable:
        """An empty table whose quantizer (m sub-quantizers) is trained on `sample` (in the index's
        rotated space)."""
        faiss = load_faiss()
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        quantizer = faiss.IndexPQ(sample.shape[1], m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
        quantizer.pq.cp.niter = TRAIN_ITERATIONS
        quantizer.pq.cp.seed = seed
        quantizer.train(sample)
        return cls(quantizer)

    def add(self, rotated: np.ndarray, ids: np.ndarray) -> None:
        """Encode vectors (rotated like the index's) under their ids; an id already here is replaced."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return
        codes = self.quantizer.sa_encode(np.ascontiguousarray(rotated, dtype=np.float32))
        last = self._appended[-1][0][-1] if self._appended else self._ids[-1] if len(self._ids) else -1
        if int(ids[0]) > int(last) and bool(np.all(ids[1:] > ids[:-1])):
            self._appended.append((ids, codes))  # the usual case: new ids come after every old one
            return
        keep = ~np.isin(self.ids, ids)
        merged_ids = np.concatenate([self.ids[keep], ids])
        merged_codes = np.concatenate([self.codes[keep], codes])
        order = np.argsort(merged_ids, kind="stable")
        self._ids, self._codes = merged_ids[order], merged_codes[order]

    def remove(self, ids: np.ndarray) -> None:
        keep = ~np.isin(self.ids, np.asarray(ids, dtype=np.int64))
        if not keep.all():
            self._ids, self._codes = self.ids[keep], self.codes[keep]

    def best(self, rotated_query: np.ndarray, ids: np.ndarray, depth: int) -> np.ndarray:
        """The (at most) `depth` ids of `ids` (unique, any order) whose codes score highest against
        the query, plus every id the table does not hold (scored exactly by the caller)."""
        query = np.ascontiguousarray(rotated_query, dtype=np.float32).reshape(1, -1)
        rows = self._rows(ids)
        known = rows >= 0
        missing = ids[~known]
        if not known.all():
            ids, rows = ids[known], rows[known]
        block = getattr(self._blocks, "block", None)
        if block is None:
            block = self._blocks.block = _CodeBlock(self.quantizer, CODE_CHUNK)
        best_scores, best_ids = np.zeros(0, np.float32), np.zeros(0, np.int64)
        for start in range(0, len(rows), CODE_CHUNK):
            scores, top = block.top(query, self.codes, rows[start:start + CODE_CHUNK], depth)
            best_scores = np.concatenate([best_scores, scores])
            best_ids = np.concatenate([best_ids, ids[start:start + CODE_CHUNK][top]])
            if len(best_ids) > depth:
                keep = np.argpartition(-best_scores, depth - 1)[:depth]
                best_scores, best_ids = best_scores[keep], best_ids[keep]
        return np.concatenate([best_ids, missing])

    def _rows(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in the table, -1 where it has none."""
        n = len(self.ids)
        if n == 0:
            return np.full(len(ids), -1, np.int64)
        if int(self.ids[-1]) - int(self.ids[0]) == n - 1:  # no gaps: the row is the id's offset
            rows = np.asarray(ids, dtype=np.int64) - int(self.ids[0])
            return np.where((rows >= 0) & (rows < n), rows, -1)
        rows = np.searchsorted(self.ids, ids).clip(0, n - 1)
        return np.where(self.ids[rows] == ids, rows, -1)

    # -- files ------------------------------------------------------------------------------

    def save(self, index_file: Path) -> None:
        """Write the table beside `index_file` (already written, its checksum beside it), labelled
        with that file's checksum record."""
        faiss = load_faiss()
        label = read_json_object(sidecar(index_file))

        def fill(tmp: Path) -> None:
            faiss.write_index(self.quantizer, str(tmp / "pq.faiss"))
            np.save(tmp / "ids.npy", np.ascontiguousarray(self.ids))
            np.save(tmp / "codes.npy", np.ascontiguousarray(self.codes))
            (tmp / "meta.json").write_text(json.dumps({"format": FORMAT, "index": label}))

        write_folder_checked(codes_path(index_file), fill)

    @classmethod
    def load(cls, index_file: Path) -> CodeTable | None:
        """The table saved beside `index_file` (codes memory-mapped), None where there is none, it is
        damaged, or it was written with another version of that file."""
        folder = codes_path(index_file)
        if not folder.is_dir() or check_folder(folder).damaged:
            return None
        try:
            meta = json.loads((folder / "meta.json").read_text())
            label = read_json_object(sidecar(index_file))
            if meta.get("format") != FORMAT or not label or meta.get("index") != label:
                return None
            quantizer = load_faiss().read_index(str(folder / "pq.faiss"))
            ids = np.load(folder / "ids.npy", mmap_mode="r")
            return cls(quantizer, ids, np.load(folder / "codes.npy", mmap_mode="r"))
        except Exception:  # anything json, faiss or np.load can meet in a damaged folder: no table
            return None


class _CodeBlock:
    """A faiss IndexPQ whose code storage is gathered into: codes scanned where they lie."""

    def __init__(self, quantizer: Any, capacity: int) -> None:
        faiss = load_faiss()
        self.index = faiss.IndexPQ(quantizer.d, quantizer.pq.M, quantizer.pq.nbits, faiss.METRIC_INNER_PRODUCT)
        self.index.pq = quantizer.pq
        self.index.is_trained = True
        self.rows = code_storage(self.index, capacity, int(quantizer.code_size))

    def top(self, query: np.ndarray, codes: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, positions in `rows`) of the best min(k, len(rows)) codes, unordered."""
        np.take(codes, rows, axis=0, out=self.rows[:len(rows)])
        return search_stored(self.index, query, len(rows), k)

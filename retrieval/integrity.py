"""`jrsearch check`: every stored part of a library checked against what was written, in the manner
of `git fsck` and SQLite's `PRAGMA integrity_check`, and repaired where it can be.

    catalog      library.db: `PRAGMA integrity_check` (every page)
    shards       vectors/KIND/*.f16 against the catalog: committed rows present, each written
                 region's CRC-32 (`vectors.ShardDamage`)
    indexes      index/KIND.faiss: checksum, vector count against the catalog, a sample of stored
                 vectors searched for (each must find itself, scores in range); KIND.slots.npz
                 and KIND.columns/ checksums, and a PQ index's code table (KIND.faiss.codes/)
    model cache  the model's exports (ONNX towers, int8 copies, the numpy text tower): checksums

Repair (`check_library(repair=True)`) rebuilds what is derived (index files, slot runs, filter
columns; a damaged model-cache export is removed, and re-exported the next time the model loads)
and marks files with damaged vectors for re-indexing (`ShardStore.repair`); the caller then
indexes those files again (`CheckReport.reindex`: the indexer is not this layer's to call).
Damage nothing here can repair (library.db) is one finding naming the file and the remedy.
Parts written before checksums are "unknown", never damage.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jrsearch.retrieval.catalog import integrity_problems
from jrsearch.retrieval.checksums import FileCheck, Verdict, check_file, check_folder
from jrsearch.retrieval.code_table import codes_path
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.paths import DB_NAME, columns_path, slot_runs_path

SAMPLE = 64  # stored vectors searched for, per index
SCORE_MAX = 1.5  # unit vectors: no inner product (even from lossy codes) comes near this
MISSES_ALLOWED = 0.1  # share of sampled vectors a lossy index may fail to return in its top 10


@dataclass(frozen=True)
class Finding:
    """One damaged (or unknown) part, what is wrong, and what was or is to be done."""

    part: str  # catalog, shards, index, model cache
    path: str
    state: str  # damaged, repaired, unknown
    detail: str
    remedy: str = ""

    def line(self) -> str:
        return f"{self.state}: {self.path}: {self.detail}" + (f"; {self.remedy}" if self.remedy else "")


@dataclass
class CheckReport:
    library: str
    checked: dict[str, int] = field(default_factory=dict)  # parts checked, by what they are
    findings: list[Finding] = field(default_factory=list)
    reindex: list[str] = field(default_factory=list)  # files marked to embed again (by repair)
    reexport: bool = False  # a model-cache export was removed: load the model to export it again

    @property
    def sound(self) -> bool:
        """Nothing damaged is left (a repaired part counts as sound)."""
        return not any(f.state == "damaged" for f in self.findings)

    def to_json(self) -> dict[str, Any]:
        return {"library": self.library, "sound": self.sound, "checked": self.checked,
                "findings": [asdict(f) for f in self.findings], "reindex": self.reindex}


def check_library(root: Path, repair: bool = False, sample: int = SAMPLE) -> CheckReport:
    """Check every part of the library at `root`; with `repair`, rebuild and mark what is damaged."""
    report = CheckReport(str(root))
    db = root / DB_NAME
    problems = integrity_problems(db)
    report.checked["catalog"] = 1
    if problems:
        report.findings.append(Finding(
            "catalog", str(db), "damaged", "; ".join(problems[:3]) + (f" (+{len(problems) - 3} more)"
                                                                       if len(problems) > 3 else ""),
            "it cannot be rebuilt from the other files: restore it from a backup, or index the folders into a "
            "new library (--library NEW_DIR)"))
        return report  # everything else is checked against it
    library = Library.open(root)
    try:
        if repair:
            with library.writing():  # also removes temp files a killed save left
                _check(library, report, repair, sample)
        else:
            _check(library, report, repair, sample)
    finally:
        library.close()
    return report


def _check(library: Library, report: CheckReport, repair: bool, sample: int) -> None:
    _check_shards(library, report, repair)
    sound_shards = not any(f.part == "shards" and f.state == "damaged" for f in report.findings)
    for kind in library.kinds():
        _check_index(library, kind, report, repair, sample if sound_shards else 0)
    if repair and any(f.part == "index" and f.state == "repaired" for f in report.findings):
        library.save_indexes()
    _check_model_cache(library, report, repair)


def _check_shards(library: Library, report: CheckReport, repair: bool) -> None:
    damages = library.shards.damage(full=True)
    report.checked["shards"] = len(damages)
    unchecked = sum(d.unchecked_rows for _, _, d in damages)
    if unchecked:
        report.findings.append(Finding("shards", str(library.root / "vectors"), "unknown",
                                       f"{unchecked} vectors were written before checksums (not checked)"))
    damaged = [(kind, shard, d) for kind, shard, d in damages if d.damaged]
    if repair:  # `writing()` has already marked what shards cut short lost
        library.shards.repair(damaged)
        for damage, paths in library.shards.marked:
            report.reindex += paths
            report.findings.append(Finding("shards", str(damage.path), "repaired", damage.reason,
                                           f"{len(paths)} file(s) marked to embed again from their source files"))
        return
    for _, _, damage in damaged:
        report.findings.append(Finding("shards", str(damage.path), "damaged", damage.reason,
                                       "run `jrsearch check --repair` to embed the affected files again"))


def _check_index(library: Library, kind: str, report: CheckReport, repair: bool, sample: int) -> None:
    from jrsearch.retrieval.filter_columns import remove_columns

    indexes = library.indexes
    with library.store.read() as catalog:
        state = catalog.index_state(kind)
        live = catalog.live_vectors(kind)
    if state is None:
        return
    report.checked["indexes"] = report.checked.get("indexes", 0) + 1
    path = indexes.path(kind)
    problem = ""
    if state.current and path.is_file():
        check = check_file(path, full=True)
        problem = check.reason if check.damaged else ""
        if not problem:
            problem = _index_problem(library, kind, live, sample)
    damaged_parts = [(path, problem)] if problem else []
    table = codes_path(path)
    for extra in (check_file(slot_runs_path(library.root, kind), full=True),
                  check_folder(columns_path(library.root, kind), full=True), check_folder(table, full=True)):
        if extra.damaged and extra.reason != "it is missing":
            damaged_parts.append((extra.path, extra.reason))
    for part, why in damaged_parts:
        if repair:
            if part == path:
                indexes.retrain(kind)
            elif table in part.parents:
                shutil.rmtree(table, ignore_errors=True)  # the save encodes it again from the shards
            else:
                _remove(part)
                remove_columns(library.root, kind)
                slot_runs_path(library.root, kind).unlink(missing_ok=True)
                indexes.retrain(kind)  # the save then writes slot runs and columns afresh
        report.findings.append(Finding("index", str(part), "repaired" if repair else "damaged", why,
                                       "rebuilt from the vector shards" if repair
                                       else "run `jrsearch check --repair` to rebuild it from the vector shards"))


def _index_problem(library: Library, kind: str, live: int, sample: int) -> str:
    """'' where the index holds the catalog's vectors, else what is wrong."""
    try:
        index = library.indexes.saved(kind)
    except RuntimeError as exc:
        return f"faiss cannot read it ({exc})"
    if index is None:
        return "it cannot be read"
    if index.ntotal != live:
        return f"it holds {index.ntotal} vectors, the catalog {live}"
    if not sample:  # the shards it would be compared with are damaged themselves
        return ""
    source = library.shards.source(kind)
    ids = np.fromiter((i for batch, _ in source.batches(1 << 16) for i in batch), dtype=np.int64)
    if not len(ids):
        return ""
    chosen = np.random.default_rng(0).choice(ids, min(sample, len(ids)), replace=False)
    vectors = source.get(chosen)
    scores, found = index.search(vectors, 10, nprobe=max(index.layout.nlist, 1), rerank=0)
    if not np.isfinite(scores).all() or (np.abs(scores) > SCORE_MAX).any():
        return f"it returns impossible scores (up to {np.nanmax(np.abs(scores)):.3g}): damaged vectors"
    misses = int(sum(i not in row for i, row in zip(chosen.tolist(), found.tolist(), strict=True)))
    if misses > MISSES_ALLOWED * len(chosen) if index.layout.lossy else misses:
        return f"{misses} of {len(chosen)} sampled vectors are not found where the catalog has them"
    return ""


def _check_model_cache(library: Library, report: CheckReport, repair: bool) -> None:
    from jrsearch.retrieval import model_cache

    model = library.model()
    folder = model_cache.find(model.spec) if model is not None else None
    if folder is None:
        return
    checks: list[FileCheck] = [check_folder(part, full=True) for part in sorted(folder.iterdir()) if part.is_dir()]
    checks += [check_file(onnx, full=True) for onnx in sorted(folder.rglob("*.onnx"))
               if check_file(onnx).verdict is not Verdict.UNKNOWN]
    report.checked["model cache exports"] = len(checks)
    for check in checks:
        if not check.damaged:
            continue
        export = next(p for p in (check.path, *check.path.parents) if p.parent == folder)
        if repair:
            _remove(export)
            report.reexport = True
        report.findings.append(Finding(
            "model cache", str(check.path), "repaired" if repair else "damaged", check.reason,
            f"{export} removed: exported again when the model next loads" if repair
            else "run `jrsearch check --repair` to export it again"))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

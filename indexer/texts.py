"""Text corpora: one caption/document per line (.txt), per JSON record (.jsonl) or per TSV row
(.tsv); one vector per record, modality "text", each with its line number and text."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import numpy as np

from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.commit import commit, stored_fields
from jrsearch.indexer.decode import Decoded, decoded_in_order, read_file, same_content
from jrsearch.indexer.handler import KindHandler, KindInfo
from jrsearch.indexer.run import IndexRun
from jrsearch.retrieval.errors import FailureCode
from jrsearch.retrieval.library import TextRecord
from jrsearch.retrieval.types import MediaKind

MAX_TEXT_BYTES = 512 * 1024 * 1024
MAX_TEXT_CHARS = 2000  # a document longer than this is cut; CLIP reads ~77 tokens anyway
MAX_JSON_LINE_CHARS = 1 << 20  # a .jsonl record longer than this is refused, not parsed
TEXT_BATCH = 256
EXTENSIONS = frozenset({".txt", ".jsonl", ".tsv"})


def decode_text_corpus(candidate: Candidate) -> Decoded:
    """The records of one corpus file as `payload`: a list of (line, text)."""
    if candidate.size > MAX_TEXT_BYTES:
        return Decoded(candidate).fail(f"text file over {MAX_TEXT_BYTES // 2**20} MiB; split it",
                                       FailureCode.TOO_LARGE)
    data, out = read_file(candidate)
    if data is None or same_content(out):
        return out
    if not data.strip():
        return out.fail("empty file", FailureCode.EMPTY)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return out.fail(f"not UTF-8 text (byte {exc.start})")
    try:
        out.payload = [(n, t[:MAX_TEXT_CHARS]) for n, t in _records(candidate.path.suffix.lower(), text) if t.strip()]
    except ValueError as exc:
        return out.fail(str(exc))
    if not out.payload:
        out.fail("no text records found", FailureCode.NO_CONTENT)
    return out


def _records(suffix: str, text: str) -> Iterator[tuple[int, str]]:
    """(line, text) of each record; ValueError naming the line for one that cannot be read
    (bad JSON, nested too deeply, a line or field over its bound)."""
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            if len(line) > MAX_JSON_LINE_CHARS:
                raise ValueError(f"line {n}: {len(line):,} characters, over the {MAX_JSON_LINE_CHARS:,} "
                                 f"a JSON record may have; split it")
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n}: invalid JSON ({exc.msg})") from None
            except RecursionError:
                raise ValueError(f"line {n}: JSON nested too deeply to read") from None
            value = record.get("text", record.get("caption")) if isinstance(record, dict) else record
            if not isinstance(value, str):
                raise ValueError(f"line {n}: expected a string or an object with a 'text' or 'caption' field")
            yield n, value
    elif suffix == ".tsv":
        reader = csv.reader(io.StringIO(text), delimiter="\t")  # fields bounded by csv.field_size_limit()
        try:
            rows = list(reader)
        except csv.Error as exc:
            raise ValueError(f"line {reader.line_num}: not a TSV row Python can read ({exc}); "
                             f"a field may hold at most {csv.field_size_limit():,} characters") from None
        header = [h.strip().lower() for h in rows[0]] if rows else []
        column = next((header.index(c) for c in ("text", "caption") if c in header), None)
        start = 1 if column is not None else 0
        for n, row in enumerate(rows[start:], start + 1):
            if column is None and row:
                yield n, row[-1]
            elif column is not None and column < len(row):  # a short row holds no text
                yield n, row[column]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            yield n, line.strip()


def text_record(decoded: Decoded) -> TextRecord:
    return TextRecord(**stored_fields(decoded), texts=decoded.payload if decoded.failure is None else [])


class TextHandler(KindHandler):
    """Corpora are indexed only when named on the command line: notes in a photo folder are not captions."""

    info = KindInfo(MediaKind.TEXT, EXTENSIONS, only_when_named=True)

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        encoder, options = run.encoder, run.options
        for decoded in decoded_in_order(decode_text_corpus, todo, options.batch_size, options.workers):
            if decoded.payload:
                texts = [t for _, t in decoded.payload]
                decoded.vectors = np.concatenate([encoder.encode_texts(texts[i:i + TEXT_BATCH])
                                                  for i in range(0, len(texts), TEXT_BATCH)])
            commit(run, [decoded], text_record)
            run.progress.advance(1)


TEXTS = TextHandler()

"""Decoders: a file in, model-ready input (or a reason it failed) out. Run in worker threads."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any, Callable

from indexer.changes import Candidate, content_hash
from retrieval.errors import MediaError
from retrieval.imageio import open_image

MAX_IMAGE_BYTES = 256 * 1024 * 1024  # the largest real photos (RAW-sized TIFFs) stay well below
MAX_TEXT_BYTES = 512 * 1024 * 1024
MAX_TEXT_CHARS = 2000  # a document longer than this is cut; CLIP reads ~77 tokens anyway


@dataclass
class Decoded:
    candidate: Candidate
    content_hash: str | None = None
    error: str | None = None
    payload: Any = None  # a preprocessed image (numpy), or for texts a list of (line, text)
    width: int | None = None
    height: int | None = None
    vectors: Any = None  # (n, dim) float32, filled in by the model
    extra: dict = field(default_factory=dict)  # more FileRecord fields (segments, duration_s, ...)


def read_file(candidate: Candidate) -> tuple[bytes | None, Decoded]:
    """Read once, hash; an unchanged hash (a touched file) needs no decoding at all."""
    try:
        data = candidate.path.read_bytes()
    except OSError as exc:
        return None, Decoded(candidate, error=f"cannot read: {exc.strerror}")
    digest = content_hash(data)
    return data, Decoded(candidate, content_hash=digest)


def decode_image(candidate: Candidate, transform: Callable, draft_size: int) -> Decoded:
    if candidate.size > MAX_IMAGE_BYTES:
        return Decoded(candidate, error=f"file too large ({candidate.size:,} bytes, limit {MAX_IMAGE_BYTES:,}); not read as an image")
    data, out = read_file(candidate)
    if data is None or _same_content(candidate, out):
        return out
    try:
        image = open_image(data, name=str(candidate.path), draft_size=draft_size)
    except MediaError as exc:
        out.error = str(exc).split(": ", 1)[-1]
        return out
    out.width, out.height = image.info["full_size"]
    out.payload = transform(image)
    return out


def decode_text_corpus(candidate: Candidate) -> Decoded:
    """One caption/document per line (.txt), per JSON record (.jsonl) or per TSV row (.tsv)."""
    if candidate.size > MAX_TEXT_BYTES:
        return Decoded(candidate, error=f"text file over {MAX_TEXT_BYTES // 2**20} MiB; split it")
    data, out = read_file(candidate)
    if data is None or _same_content(candidate, out):
        return out
    if not data.strip():
        out.error = "empty file"
        return out
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        out.error = f"not UTF-8 text (byte {exc.start})"
        return out
    try:
        out.payload = [(n, t[:MAX_TEXT_CHARS]) for n, t in _records(candidate.path.suffix.lower(), text) if t.strip()]
    except ValueError as exc:
        out.error = str(exc)
        return out
    if not out.payload:
        out.error = "no text records found"
    return out


def _records(suffix: str, text: str):
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {n}: invalid JSON ({exc.msg})") from None
            value = record.get("text", record.get("caption")) if isinstance(record, dict) else record
            if not isinstance(value, str):
                raise ValueError(f"line {n}: expected a string or an object with a 'text' or 'caption' field")
            yield n, value
    elif suffix == ".tsv":
        rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
        header = [h.strip().lower() for h in rows[0]] if rows else []
        column = next((header.index(c) for c in ("text", "caption") if c in header), None)
        start = 1 if column is not None else 0
        for n, row in enumerate(rows[start:], start + 1):
            if row:
                yield n, row[column if column is not None else -1]
    else:
        for n, line in enumerate(text.splitlines(), 1):
            yield n, line.strip()


def _same_content(candidate: Candidate, out: Decoded) -> bool:
    known = candidate.known
    return known is not None and known.status == "indexed" and known.content_hash == out.content_hash

"""Content hashing: blake2b with a 20-byte digest, the hash every stored content hash in a library uses."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import BinaryIO

DIGEST_SIZE = 20
BLOCK = 1 << 20


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=DIGEST_SIZE).hexdigest()


def hash_stream(handle: BinaryIO) -> str:
    """`content_hash` of what `handle` holds, read in blocks (bounded memory)."""
    digest = hashlib.blake2b(digest_size=DIGEST_SIZE)
    for block in iter(lambda: handle.read(BLOCK), b""):
        digest.update(block)
    return digest.hexdigest()


def file_hash(path: Path) -> str:
    """`content_hash` of a file's bytes."""
    with open(path, "rb") as handle:
        return hash_stream(handle)

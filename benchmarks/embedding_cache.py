"""Embeddings kept on disk between benchmark runs, so a re-run (another split, metric or index
type) costs seconds instead of re-embedding 5,000 images and 25,000 captions.

One `.npz` file per model setting (model, pretrained tag, precision, device kind) holds string
keys and float32 rows. A key names the file a vector came from with its size and mtime (and, for
a caption, its row and a digest of its text), so an edited file is embedded again. The file is
rewritten atomically: a reader sees the old cache or the new one, never half of one. (Two runs of
the same model at once: the one that finishes last writes its view; a lost entry is only re-embedded.)
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np

from jrsearch.retrieval.encoders import Encoder
from jrsearch.retrieval.fileio import write_atomic


def default_cache_dir() -> Path:
    from platformdirs import user_cache_path

    return user_cache_path("jrsearch") / "bench-embeddings"


def model_setting(encoder: Encoder, precision: str) -> str:
    """What makes vectors comparable: model, weights (a checkpoint file by size and mtime), precision, device."""
    setting = f"{encoder.spec.label()}|{precision}|{encoder.device.split(':')[0]}|{encoder.backend}"
    weights = Path(encoder.spec.pretrained)
    if encoder.spec.pretrained and weights.is_file():  # a checkpoint rewritten in place must not reuse old vectors
        setting += "|" + file_key(weights)
    return setting


def file_key(path: Path, part: str = "") -> str:
    """`path|size|mtime_ns`, plus `#part` for one of several vectors from the same file."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    return f"{key}#{part}" if part else key


def text_part(row: int, text: str) -> str:
    return f"{row}:{hashlib.sha1(text.encode('utf-8')).hexdigest()[:12]}"


class EmbeddingCache:
    """A key -> vector map for one model setting, loaded whole and saved whole."""

    def __init__(self, root: Path, setting: str) -> None:
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", setting)[:80]
        self.path = root / f"{slug}-{hashlib.sha1(setting.encode()).hexdigest()[:10]}.npz"
        self._vectors: dict[str, np.ndarray] = {}
        self._dirty = False
        if self.path.is_file():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    self._vectors = dict(zip(data["keys"].tolist(), data["vectors"], strict=True))
            except (OSError, ValueError, KeyError):
                self._vectors = {}  # a damaged cache is only a slower run: rebuild it

    def __len__(self) -> int:
        return len(self._vectors)

    def __contains__(self, key: str) -> bool:
        return key in self._vectors

    def get(self, key: str) -> np.ndarray:
        return self._vectors[key]

    def put(self, keys: list[str], vectors: np.ndarray) -> None:
        for key, vector in zip(keys, vectors, strict=True):
            self._vectors[key] = np.asarray(vector, dtype=np.float32)
        self._dirty = self._dirty or bool(keys)

    def save(self) -> None:
        if not self._dirty:
            return
        keys = list(self._vectors)

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a handle: np.savez would add ".npz" to a bare temp name
                np.savez(handle, keys=np.array(keys, dtype=str), vectors=np.stack([self._vectors[k] for k in keys]))

        write_atomic(self.path, write)
        self._dirty = False

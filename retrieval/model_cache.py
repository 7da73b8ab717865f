"""Per-model exports in the user cache: ONNX towers, int8 variants, the numpy text tower.

One folder per model and weights, shared by every library:

    CACHE/models/<name>-<key>/meta.json      what the folder holds (written last)
    CACHE/models/<name>-<key>/image.onnx ...
    CACHE/models/refs.json                   "how to find <key> without loading the weights"

`<key>` is a hash of the model name and the weights' content (a checkpoint file's bytes, or for
random init the seed and the open_clip/torch versions that drew them). Hashing a checkpoint
takes a second, loading it into torch several, so the key of a spec is remembered in
`refs.json` next to the weights file's size and mtime: a later process finds the folder with
one `stat` and no torch. A ref whose file changed is ignored (and replaced by the next load).

CACHE is platformdirs' user cache dir, or `JRSEARCH_CACHE` when set.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from jrsearch.retrieval.fileio import write_json_atomic
from jrsearch.retrieval.hashing import file_hash
from jrsearch.retrieval.settings import CACHE
from jrsearch.retrieval.types import ModelSpec

CACHE_ENV = CACHE.name
REFS = "refs.json"
SHIPPED_CONFIGS = Path(__file__).parent / "encoders" / "model_configs"


def cache_root() -> Path:
    override = CACHE.get()
    if override:
        return Path(override).expanduser() / "models"
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("jrsearch")) / "models"


def _version(package: str) -> str:
    from importlib import metadata  # 8 ms: only when a model is exported, never on the cold query

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def weights_file(spec: ModelSpec) -> Path | None:
    """The local checkpoint a spec names, or None (random init, or a pretrained tag)."""
    if not spec.pretrained:
        return None
    path = Path(spec.pretrained).expanduser()
    return path if path.is_file() else None


def _stamp(path: Path | None) -> list[int] | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def _ref_name(spec: ModelSpec) -> str:
    return f"{spec.name}|{spec.pretrained}"


def _random_init_id(spec: ModelSpec) -> str:
    """What fixes the weights of a random-init model: seed 0, the config, and the libraries' versions."""
    config = SHIPPED_CONFIGS / f"{spec.name}.json"
    shipped = hashlib.sha256(config.read_bytes()).hexdigest() if config.is_file() else ""
    return f"random-seed0|open_clip {_version('open_clip_torch')}|torch {_version('torch')}|{shipped}"


def model_key(spec: ModelSpec, weights: Path | None) -> str:
    """The cache key of `spec` loaded from `weights` (None: random init). Hashes the file once."""
    identity = _random_init_id(spec) if weights is None else file_hash(weights)
    return hashlib.sha256(f"{spec.name}\n{identity}".encode()).hexdigest()[:20]


def folder_for(key: str, spec: ModelSpec) -> Path:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", spec.name)[:60]
    return cache_root() / f"{safe}-{key}"


def _read_refs() -> dict:
    try:
        refs = json.loads((cache_root() / REFS).read_text())
        return refs if isinstance(refs, dict) else {}
    except (OSError, ValueError):
        return {}


def find(spec: ModelSpec) -> Path | None:
    """The cache folder of `spec` if a previous load recorded it and its weights are unchanged (no torch)."""
    ref = _read_refs().get(_ref_name(spec))
    if not isinstance(ref, dict):
        return None
    if not spec.pretrained:
        if ref.get("random_init") != _random_init_id(spec):
            return None
    else:
        weights = ref.get("weights")
        if not weights or _stamp(Path(weights)) != ref.get("stamp"):
            return None
        explicit = weights_file(spec)
        if explicit is not None and str(explicit.resolve()) != weights:
            return None
    folder = folder_for(str(ref.get("key", "")), spec)
    return folder if (folder / "meta.json").is_file() else None


def remember(spec: ModelSpec, weights: Path | None, key: str) -> None:
    """Record how `spec` maps to `key` (best effort: a read-only cache only costs a re-hash)."""
    ref: dict = {"key": key}
    if weights is None:
        ref["random_init"] = _random_init_id(spec)
    else:
        resolved = weights.resolve()
        ref.update(weights=str(resolved), stamp=_stamp(resolved))
    refs = _read_refs()
    refs[_ref_name(spec)] = ref
    write_json_atomic(cache_root() / REFS, refs)


def read_meta(folder: Path) -> dict | None:
    try:
        meta = json.loads((folder / "meta.json").read_text())
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None

"""Model names checked before any work, without importing torch or open_clip: an unknown
`--model` or `--pretrained` tag is one line with the close matches, and a model that must be
exported on this machine (which needs torch) says which extra to install, before anything is
indexed.

The names are open_clip's model configs (the JSON files of the installed open_clip, read as a
folder listing) and jrsearch's shipped configs; the pretrained tags, and the names where
open_clip is not installed, come from `encoders/open_clip_names.json`, written from open_clip's
`list_pretrained()` (tests/test_model_check.py holds it to the installed open_clip).
"""

from __future__ import annotations

import difflib
import json
import sys
from functools import cache
from pathlib import Path

from jrsearch.retrieval.errors import MissingExtraError, ModelUnavailableError
from jrsearch.retrieval.extras import install_hint, installed
from jrsearch.retrieval.types import ModelChoice, ModelSpec

ENCODERS = Path(__file__).parent / "encoders"
NAMES_FILE = ENCODERS / "open_clip_names.json"
SHIPPED_CONFIGS = ENCODERS / "model_configs"
CLOSE = 4  # close matches named
TOWERS_EXAMPLE = "immich-app/ViT-B-32__openai"


@cache
def _pretrained_tags() -> dict[str, list[str]]:
    models = json.loads(NAMES_FILE.read_text(encoding="utf-8"))["models"]
    return {str(name): [str(tag) for tag in tags] for name, tags in models.items()}


def known_models() -> frozenset[str]:
    """open_clip's architectures (its installed configs, else the kept list), jrsearch's shipped ones,
    and any config registered in this process (`register_model_configs`, as the benchmarks do)."""
    loaded = sys.modules.get("open_clip")
    return _installed_models() | (frozenset(loaded.list_models()) if loaded else frozenset())


@cache
def _installed_models() -> frozenset[str]:
    import importlib.util

    names = {path.stem for path in SHIPPED_CONFIGS.glob("*.json")}
    found = importlib.util.find_spec("open_clip") if installed("open_clip") else None
    folders = [Path(p) / "model_configs" for p in (found.submodule_search_locations or [])] if found else []
    configs = {path.stem for folder in folders for path in folder.glob("*.json")}
    return frozenset(names | (configs or set(_pretrained_tags())))


def _close(name: str, choices: list[str]) -> list[str]:
    by_lower = {choice.lower(): choice for choice in choices}
    return [by_lower[m] for m in difflib.get_close_matches(name.lower(), list(by_lower), n=CLOSE, cutoff=0.5)]


def _names_a_family(name: str) -> bool:
    """Names that are not open_clip architectures: towers (a folder, a hub repo), `hf-hub:` models,
    and other registered families (`family:...`)."""
    from jrsearch.retrieval.encoders.onnx_towers import is_repo_id

    return Path(name).is_dir() or is_repo_id(name) or ":" in name


def check_choice(choice: ModelChoice) -> None:
    """`ModelUnavailableError` for an unknown `--model` or `--pretrained` tag, naming close matches."""
    name = choice.model
    if name is None or _names_a_family(name):
        return
    if name not in known_models():
        close = _close(name, sorted(known_models()))
        hint = f"did you mean {' or '.join(close)}?" if close else "see open_clip.list_models()"
        raise ModelUnavailableError(f"unknown model '{name}'; {hint} (or --model tiny-test, or a folder of "
                                    f"ONNX towers such as {TOWERS_EXAMPLE})")
    tag = choice.pretrained
    tags = _pretrained_tags().get(name, [])
    if (tag is None or choice.checkpoint is not None or tag.lower() == "none" or not tags
            or tag.lower() in {t.lower() for t in tags} or Path(tag).expanduser().exists()):
        return
    close = _close(tag, tags)
    hint = f"did you mean {' or '.join(close)}?" if close else f"its tags include {', '.join(tags[:CLOSE])}"
    raise ModelUnavailableError(f"unknown pretrained tag '{tag}' for {name}; {hint} "
                                f"(or --pretrained none for random weights)")


def check_loadable(spec: ModelSpec, device: str | None, backend: str) -> None:
    """Before any work with open_clip model `spec`: pre-exported towers are fetched (or one line
    says why not); otherwise `MissingExtraError` where running it needs torch (its first export on
    this machine, the torch backend, a GPU) and torch is not installed."""
    from jrsearch.retrieval import model_cache
    from jrsearch.retrieval.encoders.onnx_towers import is_towers_spec, towers_folder

    if is_towers_spec(spec):
        towers_folder(spec)
        return
    if installed("torch") and installed("open_clip"):
        return
    if backend == "torch" or (device and not device.startswith("cpu")):
        why = f"--backend torch or --device {device}" if backend == "torch" else f"--device {device}"
    elif model_cache.find(spec) is None:
        why = f"the first use of {spec.label()} on this machine (its one-time export to ONNX)"
    else:
        return
    raise MissingExtraError(f"{why} needs torch and open_clip, which are not installed: {install_hint('torch')}; "
                            f"or use pre-exported ONNX towers (--model {TOWERS_EXAMPLE} or --model DIR)")

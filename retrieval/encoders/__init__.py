"""The models: the `Tower` protocol, and one registry from model family to its modalities and
constructor.

The rest of jrsearch asks for a model by `ModelSpec` through `load_tower` (or its typed views
`load_encoder` for the joint image-text model and `load_audio_tower`); it never imports torch,
open_clip or onnxruntime itself, and learns what a model embeds from `modalities_of(spec)`
without loading it. Towers take numpy and return numpy: images go through `encoder.preprocess`
(PIL -> (3, h, w) float32, in decode workers), sound through `tower.windows`, and both are
batched inside `encode`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from jrsearch.retrieval.encoders.audio import AUDIO_FAMILY, audio_spec
from jrsearch.retrieval.encoders.protocol import AudioTower, Encoder, Tower
from jrsearch.retrieval.errors import ModelUnavailableError
from jrsearch.retrieval.plugins import ENCODERS_GROUP, PluginRegistry
from jrsearch.retrieval.types import ModelSpec

DEFAULT_MODEL = ModelSpec("ViT-B-32", "laion2b_s34b_b79k")
TINY_TEST_MODEL = ModelSpec("tiny-test", "")
TINY_MULTILINGUAL_MODEL = ModelSpec("tiny-multilingual", "")  # a 2-layer XLM-R text tower, random weights
SHIPPED_MODELS = {spec.name: spec for spec in (TINY_TEST_MODEL, TINY_MULTILINGUAL_MODEL)}

__all__ = ["AUDIO", "AUDIO_FAMILY", "DEFAULT_MODEL", "ENCODER_FACTORIES", "OPEN_CLIP", "SHIPPED_MODELS",
           "TINY_MULTILINGUAL_MODEL", "TINY_TEST_MODEL", "AudioTower", "Encoder", "Family", "Tower", "audio_spec",
           "check_runnable",
           "load_audio_tower", "load_encoder", "load_tower", "modalities_of", "register_family"]


@dataclass(frozen=True)
class Family:
    """A kind of model: the modalities it embeds and its constructor(spec, device, precision, backend)."""

    modalities: tuple[str, ...]
    load: Callable[[ModelSpec, str | None, str, str], Tower]


def _open_clip(spec: ModelSpec, device: str | None, precision: str, backend: str) -> Tower:
    from jrsearch.retrieval.encoders.onnx_towers import is_towers_spec, load_towers

    if is_towers_spec(spec):  # pre-exported ONNX towers (a folder, a hub repo): no torch
        return load_towers(spec, device, precision, backend)
    from jrsearch.retrieval.encoders.backend import load_open_clip

    return load_open_clip(spec, device=device, precision=precision, backend=backend)


def _audio(spec: ModelSpec, device: str | None, precision: str, backend: str) -> Tower:
    from jrsearch.retrieval.encoders.audio import load_audio_encoder

    return load_audio_encoder(Path(spec.pretrained), device=device or "cpu")


OPEN_CLIP = Family(("text", "image"), _open_clip)
AUDIO = Family(("audio",), _audio)


def _accept(name: str, family: object, registered: Mapping[str, Family]) -> Family:
    if not isinstance(family, Family):
        raise TypeError(f"model family {name!r}: {family!r} is not an encoders.Family")
    if name in registered:
        raise ValueError(f"a model family named {name!r} is already registered")
    return family


# Model family (the spec name's part before ":", or the whole name) -> what it embeds and how it
# loads, from the `jrsearch.encoders` entry points (retrieval/plugins.py; OPEN_CLIP and AUDIO are
# jrsearch's own). Every other name is an open_clip model (ONNX Runtime on a CPU, torch on a GPU).
ENCODER_FACTORIES: PluginRegistry[Family] = PluginRegistry(ENCODERS_GROUP, _accept)


def register_family(name: str, family: Family) -> Family:
    """Add a model family directly (code that declares no entry point); refuses a taken name."""
    return ENCODER_FACTORIES.register(name, family)


def _family(spec: ModelSpec) -> Family:
    return ENCODER_FACTORIES.get(spec.name.split(":", 1)[0]) or ENCODER_FACTORIES["open_clip"]


def modalities_of(spec: ModelSpec) -> tuple[str, ...]:
    """What the model named by `spec` embeds, without loading it."""
    return _family(spec).modalities


def check_runnable(spec: ModelSpec, device: str | None = None, backend: str = "auto") -> None:
    """Raise `MissingExtraError` now where loading `spec` would need torch and it is not installed."""
    if _family(spec) is OPEN_CLIP:
        from jrsearch.retrieval.model_check import check_loadable

        check_loadable(spec, device, backend)


def load_tower(spec: ModelSpec, device: str | None = None, precision: str = "auto", backend: str = "auto") -> Tower:
    """Load the model named by `spec` (raises `ModelUnavailableError` with a remedy)."""
    return _family(spec).load(spec, device, precision, backend)


def load_encoder(spec: ModelSpec, device: str | None = None, precision: str = "auto",
                 backend: str = "auto") -> Encoder:
    """`load_tower` for a joint image-text model (what builds a library's image and text vectors)."""
    if "image" not in modalities_of(spec):
        raise ModelUnavailableError(f"{spec.label()} embeds {', '.join(modalities_of(spec))}, not images; "
                                    f"pass an image-text model (--model NAME)")
    return cast(Encoder, load_tower(spec, device, precision, backend))


def load_audio_tower(spec: ModelSpec, device: str | None = None) -> AudioTower:
    """`load_tower` for a sound tower (what builds a library's audio vectors)."""
    if modalities_of(spec) != ("audio",):
        raise ModelUnavailableError(f"{spec.label()} is not an audio tower; pass a checkpoint from "
                                    f"`jrsearch train audio` (--audio-model PATH)")
    return cast(AudioTower, load_tower(spec, device))


class LazyEncoder:
    """An encoder that loads on first use: a run with nothing to embed never opens a model.
    Thread-safe: the decode workers that first touch it wait for one load."""

    def __init__(self, spec: ModelSpec, load: Callable[[], Encoder]) -> None:
        self.spec = spec
        self._load = load
        self._encoder: Encoder | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> Encoder | None:
        return self._encoder

    def get(self) -> Encoder:
        with self._lock:
            if self._encoder is None:
                self._encoder = self._load()
            return self._encoder

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.get(), name)

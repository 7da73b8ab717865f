"""A library's towers by modality: its joint image-text model and, where it has one, its audio
tower. What a library can embed, and so be searched by, is the union of their modalities
(`encoders.modalities_of`, known without loading anything).

A library records the audio checkpoint (path and content hash) the first time sound is indexed
with `--audio-model`; later index runs and audio queries load the same tower, and a different
one is refused, just as a different image model is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

from jrsearch.retrieval.encoders import AudioTower, Encoder, Tower, audio_spec, load_audio_tower, modalities_of
from jrsearch.retrieval.errors import ModelMismatchError, ModelUnavailableError, QueryError
from jrsearch.retrieval.hashing import file_hash
from jrsearch.retrieval.library import AudioModelRecord, Library
from jrsearch.retrieval.types import ModelSpec


class LibraryTowers:
    """The towers of `library`, each loaded on first use. The joint model comes from `joint` (its
    holder chose device, precision and backend); the others load from the registry, checked
    against the joint model's space. `audio_model` is a checkpoint given for this run (checked
    and recorded); without one, the recorded tower is used."""

    def __init__(self, library: Library, joint: Callable[[], Encoder], audio_model: Path | None = None,
                 device: str | None = None) -> None:
        self.library = library
        self._joint = joint
        self._audio_model = Path(audio_model).expanduser().resolve() if audio_model is not None else None
        self._device = device
        self._loaded: dict[ModelSpec, Tower] = {}

    def specs(self) -> list[ModelSpec]:
        """The joint model's spec, then the audio tower's where the library has one (none before
        the library has a model)."""
        built = self.library.model()
        if built is None:
            return []
        recorded = self.library.audio_model()
        audio = self._audio_model or (recorded.path if recorded else None)
        return [built[0], *([audio_spec(audio)] if audio else [])]

    def modalities(self) -> tuple[str, ...]:
        """What the library can embed: its towers' modalities, in order, without loading any."""
        return tuple(dict.fromkeys(m for spec in self.specs() for m in modalities_of(spec)))

    def get(self, modality: str) -> Tower:
        """The tower that embeds `modality` (`QueryError` where the library has none)."""
        spec = next((s for s in self.specs() if modality in modalities_of(s)), None)
        if spec is None:
            raise QueryError(f"library {self.library.root} has no {modality} tower, so it takes only "
                             f"{', '.join(self.modalities()) or 'nothing yet'}; index sound or video with "
                             f"--audio-model PATH first (train one with `jrsearch train audio DIR`)")
        if spec not in self._loaded:
            self._loaded[spec] = self._joint() if spec == self.specs()[0] else self._load_audio(spec)
        return self._loaded[spec]

    def audio(self) -> AudioTower | None:
        """The sound tower, or None where the library has none (the sound and soundtrack paths)."""
        return cast(AudioTower, self.get("audio")) if "audio" in self.modalities() else None

    def _load_audio(self, spec: ModelSpec) -> AudioTower:
        path = Path(spec.pretrained)
        if self._audio_model is None and not path.is_file():
            raise ModelUnavailableError(f"the audio tower this library was indexed with, {path}, is gone; "
                                        f"put it back or pass --audio-model PATH to the same checkpoint")
        built = self.library.model()
        assert built is not None  # the spec came from specs()
        tower = load_audio_tower(spec, device=self._device)
        tower.check_image_model(*built)
        if self._audio_model is not None:
            self._record(tower)
        return tower

    def _record(self, tower: AudioTower) -> None:
        path = Path(tower.spec.pretrained)
        digest = file_hash(path)  # the checkpoint's content hash: notices a tower swapped under its name
        recorded = self.library.audio_model()
        if recorded is not None and recorded.content_hash != digest:
            raise ModelMismatchError(
                f"library {self.library.root} holds sound vectors from audio tower {recorded.path}, not {path}; "
                f"pass that checkpoint, or --library DIR for a new library")
        # the same bytes, maybe moved: the path is updated
        self.library.record_audio_model(AudioModelRecord(str(path), digest, tower.kind, tower.dim))

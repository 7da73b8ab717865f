"""Which audio tower a library's sound vectors come from.

A library records the checkpoint (path and content hash) the first time sound is indexed with
`--audio-model`; later index runs and audio queries load the same tower, and a different one is
refused, just as a different image model is.
"""

from __future__ import annotations

from pathlib import Path

from jrsearch.retrieval.encoders.audio import AudioEncoder, load_audio_encoder
from jrsearch.retrieval.errors import ModelMismatchError, ModelUnavailableError
from jrsearch.retrieval.hashing import file_hash
from jrsearch.retrieval.library import AudioModelRecord, Library


def recorded_audio_model(library: Library) -> AudioModelRecord | None:
    return library.audio_model()


def library_audio_encoder(library: Library, explicit: Path | None = None, device: str = "cpu") -> AudioEncoder | None:
    """The audio tower for `library`: `explicit` (checked and recorded), else the recorded one,
    else None (the library has no sound vectors and none were asked for)."""
    built = library.model()
    if built is None:
        raise ModelUnavailableError(f"library {library.root} has no image model yet; index something first")
    spec, dim = built
    recorded = recorded_audio_model(library)
    if explicit is None:
        if recorded is None:
            return None
        path = Path(recorded.path)
        if not path.is_file():
            raise ModelUnavailableError(f"the audio tower this library was indexed with, {path}, is gone; "
                                        f"put it back or pass --audio-model PATH to the same checkpoint")
        return load_audio_encoder(path, spec, dim, device=device)
    path = Path(explicit).expanduser().resolve()
    encoder = load_audio_encoder(path, spec, dim, device=device)
    digest = file_hash(path)  # the checkpoint's content hash: notices a tower swapped under its name
    if recorded is not None and recorded.content_hash != digest:
        raise ModelMismatchError(
            f"library {library.root} holds sound vectors from audio tower {recorded.path}, not {path}; "
            f"pass that checkpoint, or --library DIR for a new library")
    # the same bytes, maybe moved: the path is updated
    library.record_audio_model(AudioModelRecord(str(path), digest, encoder.info.kind, encoder.dim))
    return encoder

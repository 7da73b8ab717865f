"""A file that cannot be decoded raises `MediaError` with fields (subject, code, reason, retryable):
what the indexer stores is the reason field, never a piece cut out of the message."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from helpers import Scene, make_video

from jrsearch.retrieval.errors import FailureCode, MediaError


def test_image_decoding_failures_carry_their_code_and_reason():
    from jrsearch.retrieval.imageio import open_image

    cases = [(b"", FailureCode.EMPTY, "empty file (0 bytes)"),
             (b"plain words, not pixels", FailureCode.UNDECODABLE, "not an image Pillow can read")]
    for data, code, reason in cases:
        with pytest.raises(MediaError) as caught:
            open_image(data, name="holiday: day 1.jpg")
        error = caught.value
        assert (error.subject, error.code, error.reason, error.retryable) == ("holiday: day 1.jpg", code, reason, False)
        assert str(error) == f"holiday: day 1.jpg: {reason}"


def test_sound_decoding_failures_carry_their_code(tmp_path: Path):
    from jrsearch.retrieval.audioio import read_audio

    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"\x01\x02" * 999)
    with pytest.raises(MediaError) as caught:
        read_audio(junk, 16000)
    assert caught.value.code is FailureCode.UNDECODABLE and caught.value.subject == str(junk)
    assert caught.value.reason.startswith("not a media file PyAV can open (")

    silent = make_video(tmp_path / "silent.mp4", [Scene(1.0, 1, 440.0)], audio_codec=None)
    with pytest.raises(MediaError) as caught:
        read_audio(silent, 16000)
    assert (caught.value.code, caught.value.reason) == (FailureCode.NO_CONTENT, "no audio stream")


def test_the_note_is_added_once_and_survives_pickling():
    error = MediaError("clip.mp4", "no video stream", FailureCode.NEEDS_AUDIO_TOWER)
    assert error.reason == "no video stream" + FailureCode.NEEDS_AUDIO_TOWER.note and error.retryable
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.subject, copy.code, copy.reason, str(copy)) == (error.subject, error.code, error.reason, str(error))


def test_a_failure_in_a_file_whose_name_holds_a_colon_is_stored_with_its_exact_reason(tmp_path: Path, tiny_encoder):
    from jrsearch.indexer.pipeline import run_index
    from jrsearch.retrieval.library import Library

    folder = tmp_path / "media"
    folder.mkdir()
    bad = folder / "note: not a photo.jpg"
    bad.write_bytes(b"plain words, not pixels")
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [folder])
    assert report.failed == [(str(bad), "not an image Pillow can read")]
    item = library.item_at(str(bad))
    assert item is not None and item.error == "not an image Pillow can read"

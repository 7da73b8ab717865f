"""Errors a user can act on. Each message names the thing at fault and what to do."""

from __future__ import annotations

import enum


class JrsearchError(Exception):
    """Base class: the CLI prints the message on one line and exits non-zero."""


class ModelUnavailableError(JrsearchError):
    """Weights could not be loaded (offline, unknown name, unreadable checkpoint)."""


class ModelMismatchError(JrsearchError):
    """A library, index or checkpoint was built with another model than the one asked for."""


class LibraryError(JrsearchError):
    """The library on disk is missing, locked or unreadable."""


class DiskFullError(LibraryError):
    """No space left on the disk holding the library; what was committed before is intact."""


class FailureCode(str, enum.Enum):
    """Why a file could not be indexed: what code decides on, instead of the message's wording."""

    UNREADABLE = "unreadable"  # the bytes could not be read (permissions, vanished, I/O error)
    EMPTY = "empty"  # nothing in the file
    TOO_LARGE = "too_large"  # over the size a kind reads
    UNDECODABLE = "undecodable"  # not a file of its kind, or damaged
    NO_CONTENT = "no_content"  # decodes, but holds nothing to embed (no text records, no frames)
    NEEDS_AUDIO_TOWER = "needs_audio_tower"  # only sound, and no audio tower: a run with one retries it
    DAMAGED_VECTORS = "damaged_vectors"  # its stored vectors were lost or damaged: the next index embeds it again

    @property
    def retryable(self) -> bool:
        """Whether a later run retries the file by itself once what it lacked is there."""
        return self in _NOTES

    @property
    def note(self) -> str:
        """What the reason of a failure with this code ends with, for a reader ('' for most codes).

        Only for people: the store keeps the code in a column of its own (`items.failure`), which
        is what a later run looks for; nothing reads it back from the text."""
        return _NOTES.get(self, "")


_NOTES = {FailureCode.NEEDS_AUDIO_TOWER: " (and no audio tower to index its sound)"}


class MediaError(JrsearchError):
    """A media file could not be decoded; the indexer records it as failed with `reason`.

    Raised as `MediaError(subject, reason, code)`. Fields: `subject` (the file, or what stands for
    it: "item 7", an upload), `code` (what code decides on), `reason` (the message without the
    subject, ending with the code's note: what the store and the report show), `retryable`
    (the code's). The message is "subject: reason".
    """

    def __init__(self, subject: object, reason: str, code: FailureCode = FailureCode.UNDECODABLE) -> None:
        self.subject = str(subject)
        self.code = code
        self.reason = reason + code.note
        self.retryable = code.retryable
        super().__init__(f"{subject}: {self.reason}")

    def __reduce__(self) -> tuple[type[MediaError], tuple[str, str, FailureCode]]:  # pickles with its fields
        return type(self), (self.subject, self.reason.removesuffix(self.code.note), self.code)


class QueryError(JrsearchError):
    """A query cannot be answered as asked (empty library, bad query file, ...)."""


class MissingExtraError(JrsearchError):
    """An optional dependency is not installed; the message names the pip command for its extra."""

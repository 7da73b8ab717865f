"""Errors a user can act on. Each message names the thing at fault and what to do."""


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


class MediaError(JrsearchError):
    """A media file could not be decoded; the indexer records it as failed."""


class QueryError(JrsearchError):
    """A query cannot be answered as asked (empty library, bad query file, ...)."""


class MissingExtraError(JrsearchError):
    """An optional dependency is not installed; the message names the pip command for its extra."""

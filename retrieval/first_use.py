"""The one-time work of a model's first use on a machine (its export to ONNX, the runtime tuning),
announced: `first_use(label)` wraps it, and whoever shows it to a person (the CLI: a line before,
a spinner, a line after, on stderr) sets the announcer. Without one, nothing is shown."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

Announcer = Callable[[str], AbstractContextManager[None]]
_announcer: list[Announcer] = []


def set_announcer(announcer: Announcer | None) -> None:
    _announcer[:] = [announcer] if announcer else []


@contextlib.contextmanager
def first_use(label: str) -> Iterator[None]:
    """Run the block as the first use of model `label`, shown by the announcer if one is set."""
    if not _announcer:
        yield
        return
    with _announcer[0](label):
        yield

"""What a person sees while a model is exported and tuned for this machine, once: a line before,
a spinner (unless another live display, the index progress bar, holds the terminal), a line
after with the time taken. On stderr: `--json` output stays clean."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator


@contextlib.contextmanager
def announce(label: str) -> Iterator[None]:
    from rich.errors import LiveError

    from jrsearch.cli.render import err

    err.print(f"first use of {label} on this machine: exporting it for this CPU, once (about a minute)...",
              markup=False, highlight=False, soft_wrap=True)
    started = time.perf_counter()
    status = err.status(f"exporting {label} for this CPU", spinner="dots")
    try:
        status.start()
        spinning = True
    except LiveError:
        spinning = False  # the index progress bar is live; the line above says what the wait is
    try:
        yield
    finally:
        if spinning:
            status.stop()
    err.print(f"{label} is ready for this machine ({time.perf_counter() - started:.0f} s, not needed again)",
              markup=False, highlight=False, soft_wrap=True)

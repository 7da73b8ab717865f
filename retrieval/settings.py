"""Every environment variable jrsearch reads, with its default and what it does.

Each module reads its variable through its `Setting` here (`LIBRARY.get()`), so this list is the
whole of jrsearch's configuration by environment; `tests/test_settings.py` checks that the README's
Settings table names each one. Imports nothing but `os`: the cold query path reads it.
"""

from __future__ import annotations

import os


class Setting:
    """One environment variable: its name, its default as the README gives it, and its meaning."""

    __slots__ = ("default", "meaning", "name")

    def __init__(self, name: str, default: str, meaning: str) -> None:
        self.name = name
        self.default = default
        self.meaning = meaning

    def get(self) -> str | None:
        """The value set in the environment (None where unset; an empty value stays "")."""
        return os.environ.get(self.name)

    def text(self) -> str:
        """The value, "" where unset."""
        return os.environ.get(self.name, "")

    def set_default(self, value: str) -> None:
        """Set it for this process and its children unless the user already did."""
        os.environ.setdefault(self.name, value)

    def __repr__(self) -> str:
        return f"Setting({self.name!r})"


LIBRARY = Setting("JRSEARCH_LIBRARY", "the user data folder/library (platformdirs)",
                  "the library every command uses unless given --library")
CACHE = Setting("JRSEARCH_CACHE", "the user cache folder (platformdirs)",
                "where per-model exports (ONNX towers, numpy text tower) are kept, under models/")
INDEX_MEMORY = Setting("JRSEARCH_INDEX_MEMORY", "1G",
                       "RAM budget that picks the FAISS index type (512M, 4G, bytes)")
THREADS = Setting("JRSEARCH_THREADS", "the CPUs the process may use",
                  "intra-op threads of the CPU runtimes (ONNX Runtime, OpenVINO)")
TOKEN = Setting("JRSEARCH_TOKEN", "unset",
                "the bearer token `jrsearch serve` requires when --token-file is not given")
HF_HUB_OFFLINE = Setting("HF_HUB_OFFLINE", "unset",
                         "any value but 0: never reach the Hugging Face hub; weights must be cached")
XDG_CACHE_HOME = Setting("XDG_CACHE_HOME", "~/.cache",
                         "where open_clip's URL-downloaded weights are looked for (under clip/)")
CUDA_VISIBLE_DEVICES = Setting("CUDA_VISIBLE_DEVICES", "unset",
                               "empty or -1 hides the GPUs: the model runs on the CPU without importing torch")
OPENBLAS_NUM_THREADS = Setting("OPENBLAS_NUM_THREADS", "1 for `jrsearch query`",
                               "BLAS threads; `jrsearch query` sets 1 unless given (one query row)")
# what `jrsearch query --preview` reads to tell whether the terminal shows images (cli/preview.py)
TERM = Setting("TERM", "set by the terminal", "`xterm-kitty`: `--preview` uses the kitty image protocol")
TERM_PROGRAM = Setting("TERM_PROGRAM", "set by the terminal",
                       "`iTerm.app` or `WezTerm`: `--preview` uses the iTerm2 image protocol")
KITTY_WINDOW_ID = Setting("KITTY_WINDOW_ID", "set by kitty", "any value: `--preview` uses the kitty image protocol")
LC_TERMINAL = Setting("LC_TERMINAL", "set by iTerm2", "`iTerm2` (kept over ssh): `--preview` uses its image protocol")

SETTINGS: tuple[Setting, ...] = (LIBRARY, CACHE, INDEX_MEMORY, THREADS, TOKEN, HF_HUB_OFFLINE, XDG_CACHE_HOME,
                                 CUDA_VISIBLE_DEVICES, OPENBLAS_NUM_THREADS, TERM, TERM_PROGRAM, KITTY_WINDOW_ID,
                                 LC_TERMINAL)

"""Extension points: the entry-point groups jrsearch reads, and one lazily filled registry per group.

Three groups (`pyproject.toml` declares the shipped members of each, so they come through the
same path as anyone else's):

- `jrsearch.kinds`     name -> a `KindHandler` (`indexer/kinds.KIND_HANDLERS`)
- `jrsearch.encoders`  model family -> a `Family` (`retrieval/encoders.ENCODER_FACTORIES`)
- `jrsearch.commands`  command name -> a typer command function or a `typer.Typer` group (`cli/main`)

A `PluginRegistry` loads its group on first use, in two steps. jrsearch's own entry points are read
from its own metadata folder (one `listdir` per `sys.path` entry and one small file; no
`importlib.metadata`, which costs 10-30 ms to import, and no scan of other distributions), so a
shipped name is answered on the cold query path. Everyone else's are loaded only when a name is
asked for that jrsearch does not ship, or when the whole registry is listed or iterated; that scan
(`importlib.metadata.entry_points`) runs once per group and process. An outside entry point that
fails to load, or claims a name or extension already taken, is skipped with a warning; a shipped one
that fails raises. Code may still register directly (`PluginRegistry.register`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from importlib import import_module
from typing import NamedTuple, TypeVar

KINDS_GROUP = "jrsearch.kinds"
ENCODERS_GROUP = "jrsearch.encoders"
COMMANDS_GROUP = "jrsearch.commands"
OWN_PROJECT = "jrsearch"

T = TypeVar("T")


class EntryPoint(NamedTuple):
    """One declared extension: `value` is "module:attribute.path"; `dist` the project declaring it."""

    name: str
    value: str
    group: str
    dist: str

    def load(self) -> object:
        module, _, attributes = self.value.partition(":")
        found: object = import_module(module.strip())
        for attribute in filter(None, attributes.strip().split(".")):
            found = getattr(found, attribute)
        return found


_own_cache: dict[str, list[EntryPoint]] | None = None
_own_lock = threading.Lock()


def _normal(project: str) -> str:
    return project.lower().replace("-", "_").replace(".", "_")


def _own_metadata_dir() -> str | None:
    """jrsearch's .dist-info (or .egg-info) folder, found as importlib.metadata finds it: the first
    `sys.path` entry holding one, a .dist-info before an .egg-info."""
    for entry in sys.path:
        folder = entry or "."
        try:
            names = os.listdir(folder)
        except OSError:  # a zip file, a missing folder
            continue
        for suffix in (".dist-info", ".egg-info"):
            own = sorted(n for n in names if n.lower().endswith(suffix)
                         and _normal(n[: -len(suffix)].split("-", 1)[0]) == OWN_PROJECT)
            if own:
                return os.path.join(folder, own[0])
    return None


def parse_entry_points(text: str, dist: str) -> dict[str, list[EntryPoint]]:
    """An `entry_points.txt` (INI: `[group]`, then `name = module:attr [extras]`), in file order."""
    groups: dict[str, list[EntryPoint]] = {}
    group = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            group = line[1:-1].strip()
            continue
        name, equals, value = line.partition("=")
        if group and equals:
            value = value.partition("[")[0].strip()  # extras do not change what loads
            groups.setdefault(group, []).append(EntryPoint(name.strip(), value, group, dist))
    return groups


def own_entry_points(group: str) -> list[EntryPoint]:
    """jrsearch's own entry points in `group`, in the order its metadata lists them."""
    global _own_cache
    with _own_lock:
        if _own_cache is None:
            folder = _own_metadata_dir()
            if folder is None:
                raise RuntimeError("jrsearch's metadata (its .dist-info) is not on sys.path: install it "
                                   "(pip install jrsearch, or pip install -e . in a checkout)")
            try:
                with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as file:
                    text = file.read()
            except FileNotFoundError:
                text = ""
            parsed = parse_entry_points(text, OWN_PROJECT)
            if not parsed.keys() & {KINDS_GROUP, ENCODERS_GROUP, COMMANDS_GROUP}:
                raise RuntimeError(f"jrsearch's metadata ({folder}) declares none of its own kinds, model families "
                                   f"or commands: it predates them; reinstall (pip install -e . in a checkout)")
            _own_cache = parsed
        return list(_own_cache.get(group, []))


def outside_entry_points(group: str) -> list[EntryPoint]:
    """Every other installed distribution's entry points in `group` (the one scan)."""
    from importlib import metadata

    found = []
    for point in metadata.entry_points(group=group):
        dist = point.dist.name if point.dist is not None else "?"
        if _normal(dist) != OWN_PROJECT:
            found.append(EntryPoint(point.name, point.value, group, dist))
    return found


Accept = Callable[[str, object, Mapping[str, T]], T]


class PluginRegistry(MutableMapping[str, T]):
    """Name -> extension for one entry-point group, filled on first use (see the module docstring).

    `accept(name, loaded, registered)` checks a loaded object against what is registered so far and
    returns it typed, or raises `TypeError`/`ValueError`. A lookup of a shipped name never scans; a
    name jrsearch does not ship, `len`, iteration and listing load everyone's entry points once.
    """

    def __init__(self, group: str, accept: Accept[T], order: tuple[str, ...] = ()) -> None:
        self.group = group
        self._accept = accept
        self._order = order  # shipped names in this order first (metadata writers sort entry points)
        self._data: dict[str, T] = {}
        self._shipped: list[str] = []
        self._stage = 0  # 1: jrsearch's own entry points loaded, 2: everyone's
        self._loading = False
        self._lock = threading.RLock()

    def _load(self, stage: int) -> None:
        if self._stage >= stage:
            return
        with self._lock:  # other threads wait here until the stage is filled
            if self._loading:
                return  # this thread, inside a load: a plugin registering while it is imported
            self._loading = True
            try:
                while self._stage < stage:
                    if self._stage == 0:
                        for point in sorted(own_entry_points(self.group), key=self._rank):
                            self._data[point.name] = self._accept(point.name, point.load(), self._data)
                            self._shipped.append(point.name)
                    else:
                        for point in outside_entry_points(self.group):
                            self._add_outside(point)
                    self._stage += 1
            finally:
                self._loading = False

    def _rank(self, point: EntryPoint) -> int:
        return self._order.index(point.name) if point.name in self._order else len(self._order)

    def _add_outside(self, point: EntryPoint) -> None:
        import warnings

        try:
            self._data[point.name] = self._accept(point.name, point.load(), self._data)
        except Exception as exc:  # one broken plugin must not take the command down
            warnings.warn(f"jrsearch: {self.group} entry point {point.name!r} from {point.dist} is not "
                          f"loaded: {exc}", RuntimeWarning, stacklevel=3)

    def register(self, name: str, value: object) -> T:
        """Add an extension directly (code that does not declare an entry point); refuses a taken name."""
        self._load(2)
        with self._lock:
            accepted = self._accept(name, value, self._data)
            self._data[name] = accepted
            return accepted

    def shipped(self) -> dict[str, T]:
        """jrsearch's own entries (no scan of other distributions)."""
        self._load(1)
        return {name: self._data[name] for name in self._shipped if name in self._data}

    def outside(self) -> dict[str, T]:
        """Everything registered that jrsearch does not ship: entry points of other projects, direct calls."""
        self._load(2)
        return {name: value for name, value in self._data.items() if name not in self._shipped}

    def __getitem__(self, name: str) -> T:
        self._load(1)
        if name not in self._data:
            self._load(2)
        return self._data[name]

    def __setitem__(self, name: str, value: T) -> None:
        self.register(name, value)

    def __delitem__(self, name: str) -> None:
        self._load(2)
        with self._lock:
            del self._data[name]

    def __iter__(self) -> Iterator[str]:
        self._load(2)
        return iter(self._data)

    def __len__(self) -> int:
        self._load(2)
        return len(self._data)

    def __repr__(self) -> str:
        return f"PluginRegistry({self.group!r}, {list(self._data)!r})"

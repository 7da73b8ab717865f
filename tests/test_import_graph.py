"""The layering ARCHITECTURE.md promises, read from the source: no import cycle between jrsearch's
modules (imports inside functions included), and `retrieval/` imports neither `indexer/` nor `cli/`."""

from __future__ import annotations

import ast
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("retrieval", "indexer", "cli", "benchmarks")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(("jrsearch", *parts))] = path
    return found


def _imported(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The jrsearch modules `name` imports anywhere in its file (a name from a package counts as
    its submodule when there is one)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{up}.{base}" if base else up
            targets += [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    out = set()
    for target in targets:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imported(name, path, modules) for name, path in modules.items()}


def test_no_import_cycles(graph):
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_retrieval_imports_neither_indexer_nor_cli(graph):
    wrong = sorted(f"{a} -> {b}" for a, deps in graph.items() if a.startswith("jrsearch.retrieval.")
                   for b in deps if b.startswith(("jrsearch.indexer", "jrsearch.cli")))
    assert not wrong


def test_the_graph_is_read(graph):
    assert "jrsearch.indexer.kinds" in graph["jrsearch.indexer.walk"]
    assert "jrsearch.indexer.handler" in graph["jrsearch.indexer.video"]


@pytest.mark.parametrize("package", PACKAGES)
def test_each_folder_is_importable_under_one_name_only(package):
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", f"import {package}"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode != 0 and f"import jrsearch.{package}, not {package}" in done.stderr, done.stderr


def test_the_repository_holds_no_symlinks():
    import subprocess

    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout (an sdist): nothing to list")
    listed = subprocess.run(["git", "ls-files", "-s"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert [line for line in listed.splitlines() if line.startswith("120000")] == []

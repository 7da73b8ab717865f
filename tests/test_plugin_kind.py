"""A media kind added from outside the package (`tests/fixtures/note_plugin.py`): one handler, its
extension. Nothing else is edited: the walk finds its files, the pipeline indexes them into the
kind's own index, the engine searches it, the web app shows its items (without a thumbnail).
Registered directly (`register_kind`), or found by the real `jrsearch` command through the
entry points of an installed distribution, with its command and its model family."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.note_plugin import NoteHandler
from helpers import item_id, make_client, make_image

from jrsearch.indexer.handler import KindHandler, KindInfo
from jrsearch.indexer.kinds import KIND_HANDLERS, register_kind
from jrsearch.indexer.pipeline import run_index
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.library import Library
from jrsearch.retrieval.types import ItemStatus

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def notes_kind() -> Iterator[KindHandler]:
    handler = register_kind(NoteHandler())
    try:
        yield handler
    finally:
        del KIND_HANDLERS["note"]


def test_a_kind_registered_from_outside_is_indexed_searched_and_served(tmp_path: Path, tiny_encoder, notes_kind):
    folder = tmp_path / "media"
    folder.mkdir()
    notes = {"dog.note": "a dog running on the beach", "red.note": "a red square on a white wall",
             "city.note": "the city at night"}
    for name, text in notes.items():
        (folder / name).write_text(text + "\n")
    (folder / "empty.note").write_text("  \n")
    make_image(folder / "photo.jpg", seed=1)

    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [folder])
    assert report.indexed == 4  # three notes and the photo
    assert report.failed == [(str(folder / "empty.note"), "an empty note")]
    assert set(library.kinds()) == {"note", "image"}
    dog = library.item_at(str(folder / "dog.note"))
    assert dog is not None and (dog.kind, dog.status) == ("note", ItemStatus.INDEXED)
    assert library.status()["items"]["note"] == {"indexed": 3, "failed": 1}

    engine = SearchEngine(library, encoder=tiny_encoder)
    for name, text in notes.items():
        best = engine.search(engine.embed_text(text), kind="note", top_k=3)
        assert [r.path for r in best][:1] == [str(folder / name)] and len(best) == 3
        assert best[0].to_json()["kind"] == "note" and best[0].text == text
        assert best[0].score == pytest.approx(1.0, abs=1e-3)  # the very text the note holds
    assert all(r.kind == "image" for r in engine.search(engine.embed_text("a dog"), kind="image", top_k=5))

    again = run_index(Library.open(tmp_path / "lib"), tiny_encoder, [folder])
    assert (again.indexed, again.unchanged, again.failed) == (0, 5, [])  # the failed note stays failed too

    client = make_client(library, tiny_encoder, engine=engine, warm=False)
    shown = client.get(f"/api/items/{item_id(library, folder / 'dog.note')}").json()
    assert (shown["kind"], shown["status"], shown["thumbnail"]) == ("note", "indexed", None)
    assert client.get(f"/api/items/{item_id(library, folder / 'dog.note')}/thumbnail").status_code == 404
    found = client.get("/api/search", params={"q": notes["dog.note"], "kind": "note"})
    assert found.status_code == 200 and found.json()["results"][0]["path"] == str(folder / "dog.note")
    refused = client.get("/api/search", params={"q": "a dog", "kind": "memo"})
    assert refused.status_code == 422  # worded as pydantic words the shipped kinds, with the new one among them
    assert refused.json() == {"detail": "kind: Input should be 'image', 'text', 'video', 'audio' or 'note'"}
    assert client.get("/api/kinds").json() == {"kinds": ["image", "text", "video", "audio", "note"]}  # the menu

    # the CLI's --kind takes the registered name too, and names the choices for one it does not know
    from typer.testing import CliRunner

    from jrsearch.cli.main import app

    args = ["query", notes["red.note"], "--library", str(library.root), "--model", "tiny-test", "--json"]
    answer = CliRunner().invoke(app, [*args, "--kind", "note"])
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)[0]["path"] == str(folder / "red.note")
    wrong = CliRunner().invoke(app, [*args, "--kind", "memo"], env={"COLUMNS": "200"})  # no wrapped box
    assert wrong.exit_code == 2 and "'memo' is not a kind; choose from image, text, video, audio, note" in wrong.output


def test_the_registry_refuses_a_second_claim_on_a_name_or_an_extension(notes_kind):
    class Other(NoteHandler):
        info = KindInfo("memo", frozenset({".memo", ".note"}))

    with pytest.raises(ValueError, match="note"):
        register_kind(Other())
    with pytest.raises(ValueError, match="already registered"):
        register_kind(NoteHandler())
    assert "memo" not in KIND_HANDLERS


def _install_note_plugin(site: Path) -> None:
    """`note_plugin` as pip would install it: the module and its .dist-info with entry points."""
    site.mkdir()
    shutil.copy(FIXTURES / "note_plugin.py", site / "note_plugin.py")
    info = site / "note_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: note-plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[jrsearch.kinds]\nnote = note_plugin:NOTES\n\n"
                                           "[jrsearch.commands]\nnotes = note_plugin:notes\n\n"
                                           "[jrsearch.encoders]\ntoy = note_plugin:TOY\n")


@pytest.mark.slow
def test_an_installed_plugin_reaches_the_jrsearch_command_through_its_entry_points(tmp_path: Path):
    site = tmp_path / "site"
    _install_note_plugin(site)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
           "COLUMNS": "200", "JRSEARCH_LIBRARY": str(tmp_path / "lib")}
    command = str(Path(sys.executable).with_name("jrsearch"))

    def jrsearch(*args: str) -> str:
        done = subprocess.run([command, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "RuntimeWarning" not in done.stderr, done.stderr
        return done.stdout

    folder = tmp_path / "media"
    folder.mkdir()
    notes = {"dog.note": "a dog running on the beach", "red.note": "a red square on a white wall"}
    for name, text in notes.items():
        (folder / name).write_text(text + "\n")
    jrsearch("index", str(folder), "--model", "tiny-test", "--json")
    for name, text in notes.items():
        found = json.loads(jrsearch("query", text, "--kind", "note", "--json"))
        assert (found[0]["path"], found[0]["kind"]) == (str(folder / name), "note")
    assert jrsearch("notes", "--library", str(tmp_path / "lib")).strip() == "2 notes indexed"
    assert "notes" in jrsearch("--help")  # the listing scans the entry points too

    probe = ("from jrsearch.retrieval.encoders import ENCODER_FACTORIES, modalities_of\n"
             "from jrsearch.retrieval.types import ModelSpec\n"
             "print(modalities_of(ModelSpec('toy:small', '')), sorted(ENCODER_FACTORIES))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.split() == ["('text',", "'smell')", "['audio',", "'open_clip',", "'toy']"]


def test_a_family_registered_directly_is_seen_by_modalities_of():
    from fixtures.note_plugin import TOY

    from jrsearch.retrieval.encoders import ENCODER_FACTORIES, modalities_of, register_family
    from jrsearch.retrieval.types import ModelSpec

    register_family("toy", TOY)
    try:
        assert modalities_of(ModelSpec("toy:small", "")) == ("text", "smell")
        with pytest.raises(ValueError, match="already registered"):
            register_family("toy", TOY)
    finally:
        del ENCODER_FACTORIES["toy"]
    assert modalities_of(ModelSpec("toy:small", "")) == ("text", "image")  # an open_clip name again

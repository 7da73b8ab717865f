"""A media kind added from outside the package: one handler, one `register_kind` call, its
extension. Nothing else is edited: the walk finds its files, the pipeline indexes them into the
kind's own index, the engine searches it, the web app shows its items (without a thumbnail)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_image

from jrsearch.indexer.changes import Candidate
from jrsearch.indexer.commit import commit, stored_fields
from jrsearch.indexer.decode import Decoded, decoded_in_order, read_file, same_content
from jrsearch.indexer.handler import KindHandler, KindInfo
from jrsearch.indexer.kinds import KIND_HANDLERS, register_kind
from jrsearch.indexer.pipeline import run_index
from jrsearch.indexer.run import IndexRun
from jrsearch.retrieval.engine import SearchEngine
from jrsearch.retrieval.errors import FailureCode
from jrsearch.retrieval.library import Library, TextRecord
from jrsearch.retrieval.types import ItemStatus

# -- the whole new kind: a ".note" file is one short text, embedded by the text tower ----------


def decode_note(candidate: Candidate) -> Decoded:
    data, out = read_file(candidate)
    if data is None or same_content(out):
        return out
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return out.fail("an empty note", FailureCode.EMPTY)
    out.payload = text
    return out


def note_record(decoded: Decoded) -> TextRecord:
    texts = [(1, decoded.payload)] if decoded.failure is None else []
    return TextRecord(**stored_fields(decoded), kind="note", texts=texts)


class NoteHandler(KindHandler):
    info = KindInfo("note", frozenset({".note"}))

    def index(self, run: IndexRun, todo: list[Candidate]) -> None:
        for decoded in decoded_in_order(decode_note, todo, run.options.batch_size, run.options.workers):
            if decoded.payload:
                decoded.vectors = run.encoder.encode_texts([decoded.payload])
            commit(run, [decoded], note_record)
            run.progress.advance(1)


# ---------------------------------------------------------------------------------------------


@pytest.fixture
def notes_kind() -> Iterator[KindHandler]:
    handler = register_kind(NoteHandler())
    try:
        yield handler
    finally:
        del KIND_HANDLERS["note"]


def test_a_kind_registered_from_outside_is_indexed_searched_and_served(tmp_path: Path, tiny_encoder, notes_kind):
    from test_serve_api import item_id, make_client

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

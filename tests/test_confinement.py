"""Issue 22, confinement: no file served outside the indexed folders, never a failed item's bytes;
the walk never leaves the roots through symlinks, never enters /proc, /sys or /dev, and says what
it left out (`status --failures`)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import item_id, jrsearch, make_client, make_image

from jrsearch.indexer.pipeline import run_index
from jrsearch.indexer.walk import LeftOut, walk
from jrsearch.retrieval.library import Library


@pytest.fixture
def tree(tmp_path):
    """media/ with one photo, a symlink to a photo outside it and one to a photo inside it."""
    media = tmp_path / "media"
    make_image(media / "real.jpg", seed=1)
    secret = make_image(tmp_path / "outside" / "secret.jpg", seed=2)  # decodes: only confinement keeps it out
    (media / "holiday.jpg").symlink_to(secret)
    (media / "alias.jpg").symlink_to(media / "real.jpg")
    return media, secret


def test_a_symlink_out_of_the_roots_is_left_out_and_listed(tree, tmp_path, tiny_encoder):
    media, secret = tree
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [media])
    assert library.item_at(str(media / "holiday.jpg")) is None
    assert report.indexed == 2 and any("outside the indexed folders" in n for n in report.notes)
    failures = json.loads(jrsearch("status", "--failures", "--json", lib=tmp_path / "lib").stdout)["failures"]
    assert failures == [{"path": str(media / "holiday.jpg"),
                         "error": f"symlink to the file {secret}, outside the indexed folders; not followed"}]


def test_files_followed_through_a_symlink_once_inside_the_roots_are_forgotten_once_it_leads_out(tmp_path, tiny_encoder):
    media, other = tmp_path / "media", tmp_path / "other"
    make_image(media / "real.jpg", seed=1)
    make_image(other / "far.jpg", seed=2)
    (media / "linked").symlink_to(other, target_is_directory=True)
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [media, other])  # both roots: the link stays inside them
    assert library.item_at(str(media / "linked" / "far.jpg")) is not None
    report = run_index(library, tiny_encoder, [media])  # now it leads out of the folders indexed
    assert library.item_at(str(media / "linked" / "far.jpg")) is None and report.removed == 1
    assert library.item_at(str(other / "far.jpg")) is not None


def test_media_and_thumbnails_are_confined_to_the_roots(tree, tmp_path, tiny_encoder):
    media, secret = tree
    library = Library.open(tmp_path / "lib", create=True)
    run_index(library, tiny_encoder, [media])
    client = make_client(library, tiny_encoder)
    alias = client.get(f"/api/items/{item_id(library, media / 'alias.jpg')}/media")
    assert alias.status_code == 200 and alias.content == (media / "real.jpg").read_bytes()

    # the indexed file swapped for a symlink out of the roots, with the same bytes, size and mtime
    real = media / "real.jpg"
    iid = item_id(library, real)
    stat = real.stat()
    secret.write_bytes(real.read_bytes())
    os.utime(secret, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    real.unlink()
    real.symlink_to(secret)
    for url in (f"/api/items/{iid}/media", f"/api/items/{iid}/thumbnail?size=128"):
        response = client.get(url)
        assert response.status_code == 404 and "outside the indexed folders" in response.json()["detail"]


def test_a_failed_item_is_never_served(tmp_path, tiny_encoder):
    media = tmp_path / "media"
    media.mkdir()
    (media / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 private words, not a picture" * 20)
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [media])
    assert len(report.failed) == 1
    client = make_client(library, tiny_encoder)
    iid = item_id(library, media / "broken.jpg")
    for url in (f"/api/items/{iid}/media", f"/api/items/{iid}/thumbnail"):
        response = client.get(url)
        assert response.status_code == 404 and "failed to index" in response.json()["detail"]
        assert b"private" not in response.content


def test_a_symlink_to_the_root_of_the_disk_is_not_walked(tmp_path):
    root = tmp_path / "tree"
    make_image(root / "one.jpg", 1)
    (root / "everything").symlink_to("/", target_is_directory=True)
    (root / "kernel").symlink_to("/proc", target_is_directory=True)
    left_out = LeftOut()
    assert [p.name for p, _ in walk(root, left_out=left_out)] == ["one.jpg"]
    assert set(left_out.outside) == {str(root / "everything"), str(root / "kernel")}
    # even where a root holds them, /proc, /sys and /dev are never entered
    assert [p.name for p, _ in walk(root, roots=[Path("/proc"), root], left_out=LeftOut())] == ["one.jpg"]


def test_symlinked_folders_inside_the_roots_are_followed_once(tmp_path):
    root = tmp_path / "tree"
    make_image(root / "a" / "one.jpg", 1)
    (root / "b").symlink_to(root / "a", target_is_directory=True)
    (root / "a" / "loop").symlink_to(root, target_is_directory=True)
    left_out = LeftOut()
    assert [p.relative_to(root).as_posix() for p, _ in walk(root, left_out=left_out)] == ["a/one.jpg"]
    assert not left_out.all()


def test_unreadable_folders_are_listed(tmp_path, tiny_encoder, monkeypatch):
    media = tmp_path / "media"
    make_image(media / "ok" / "one.jpg", 1)
    make_image(media / "locked" / "two.jpg", 2)
    locked, scandir = str(media / "locked"), os.scandir

    def refusing(path="."):  # as for a folder with mode 000 (the tests may run as root, who reads anything)
        if os.fspath(path) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refusing)
    library = Library.open(tmp_path / "lib", create=True)
    report = run_index(library, tiny_encoder, [media])
    monkeypatch.setattr(os, "scandir", scandir)
    assert report.indexed == 1
    assert any(n.startswith("1 folder(s) could not be read") for n in report.notes)
    failures = json.loads(jrsearch("status", "--failures", "--json", lib=tmp_path / "lib").stdout)["failures"]
    assert failures == [{"path": locked, "error": "folder cannot be read (Permission denied); not indexed"}]

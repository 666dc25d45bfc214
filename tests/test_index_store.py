"""`qa.Index` over an SQLite file: open, add, remove, refresh by change detection, failures by name, schema errors."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import pytest

import qa
from qa.chunking import Chunk
from qa.ingest import walk
from qa.store import Entry
from qa.store.migrations import MIGRATIONS
from qa.store.sqlite import SQLiteStore
from qa.testing import FakeLLM

from .conftest import SEED
from .test_pipeline import GOOD, Q4000

NO_SERVER = qa.Settings(base_url="http://127.0.0.1:9/v1", api_key="sk-test", max_retries=0, timeout=1.0)
OTHER = {
    "grain.txt": "Wheat harvests failed across the region. Grain prices doubled and bakers raised bread prices.\n",
    "ships.txt": "Container ships waited outside the port for weeks while freight rates tripled.\n",
}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    (root / "sub").mkdir(parents=True)
    shutil.copy(SEED, root / "nk_soldiers_kursk.txt")
    for name, text in OTHER.items():
        (root / "sub" / name).write_text(text, encoding="utf-8")
    return root


def test_an_opened_index_answers_with_citations_checked_against_the_stored_text(folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    with qa.Index.open(db, NO_SERVER) as index:
        report = index.add(folder)
        assert (report.added, report.failed, len(index)) == (3, [], 3)
    llm = FakeLLM()
    llm.enqueue(GOOD)
    with qa.Index.open(db, NO_SERVER, llm=llm) as index:
        assert sorted(d.id for d in index) == ["nk_soldiers_kursk.txt", "sub/grain.txt", "sub/ships.txt"]
        answer = index.ask("How many North Koreans were killed or wounded?")
        assert answer.found and answer.verified and Q4000 in answer.citations[0].quote
        for c in answer.citations:
            assert index.store.text(c.document_id)[c.start : c.end] == c.quote
            assert c.chunk.start <= c.start < c.chunk.end


def test_an_index_opens_and_retrieves_without_a_model_client(folder: Path, tmp_path: Path) -> None:
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        index.add(folder)
        passages = index.retrieve("How many North Koreans were killed or wounded?")
        assert passages and passages[0].document_id == "nk_soldiers_kursk.txt"
        with pytest.raises(qa.LLMConnectionError):  # the client is made, and fails, only when asked
            index.ask("How many North Koreans were killed or wounded?")


def test_memory_and_sqlite_indexes_retrieve_the_same_passages(folder: Path, tmp_path: Path) -> None:
    memory = qa.Index.from_paths(folder, NO_SERVER)
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as stored:
        stored.add(folder)
        for question in ("How many casualties?", "Where was the ID card holder from?", "freight rates"):
            assert stored.retrieve(question) == memory.retrieve(question)
    assert len(memory) == 3 and [d.id for d in memory] == [d.id for d in memory.documents]


def test_refresh_rereads_only_changed_files_and_removes_deleted_ones(folder: Path, tmp_path: Path) -> None:
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        first = index.refresh([folder])
        assert (first.added, first.unchanged, first.chunks > 0) == (3, 0, True)
        again = index.refresh([folder])
        assert (again.added, again.updated, again.unchanged, again.removed, again.chunks) == (0, 0, 3, 0, 0)

        grain = folder / "sub" / "grain.txt"
        os.utime(grain, ns=(grain.stat().st_atime_ns, grain.stat().st_mtime_ns + 10**9))  # touched, same text
        touched = index.refresh([folder])
        assert (touched.updated, touched.unchanged, touched.chunks) == (0, 3, 0)

        grain.write_text("Rice harvests failed; rice prices tripled.\n", encoding="utf-8")
        (folder / "sub" / "ships.txt").unlink()
        (folder / "new.md").write_text("# Ports\n\nThe port of Odesa reopened in May.\n", encoding="utf-8")
        changed = index.refresh([folder])
        assert (changed.added, changed.updated, changed.unchanged, changed.removed) == (1, 1, 1, 1)
        assert sorted(d.id for d in index) == ["new.md", "nk_soldiers_kursk.txt", "sub/grain.txt"]
        assert index.store.text("sub/grain.txt").startswith("Rice")
        assert index.store.search("When did the port of Odesa reopen?", 1)[0].chunk.document_id == "new.md"
        assert index.remove(["new.md"]) == 1 and len(index) == 2


def test_refresh_removes_only_below_the_paths_it_was_given(tmp_path: Path) -> None:
    reports, older = tmp_path / "reports", tmp_path / "reports-old"  # one folder's name starts the other's
    reports.mkdir()
    older.mkdir()
    (reports / "r.txt").write_text("Freight rates tripled.\n", encoding="utf-8")
    (older / "o.txt").write_text("Grain prices doubled.\n", encoding="utf-8")
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        assert index.add([reports, older]).added == 2
        (older / "o.txt").unlink()
        assert index.refresh([reports]).removed == 0  # o.txt was not below reports/
        assert sorted(d.id for d in index) == ["o.txt", "r.txt"]
        assert index.refresh([older]).removed == 1
        assert [d.id for d in index] == ["r.txt"]


def test_the_walk_lists_a_folders_files_then_its_folders_and_skips_hidden_ones_and_links_to_folders(
    tmp_path: Path,
) -> None:
    root = tmp_path / "docs"
    for name in ("b/z.txt", "b/a/y.txt", "a.txt", "c.txt", ".hidden/h.txt", "b/.h.txt"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name, encoding="utf-8")
    (root / "link").symlink_to(root / "b", target_is_directory=True)  # not walked: os.walk does not either
    (root / "linked.txt").symlink_to(root / "a.txt")  # a link to a file is a file
    (root / "broken.txt").symlink_to(tmp_path / "missing")  # listed, so that indexing it reports it by name
    ids = [doc_id for _, doc_id in walk(root)]
    assert ids == ["a.txt", "broken.txt", "c.txt", "linked.txt", "b/z.txt", "b/a/y.txt"]
    assert [p for p, _ in walk(root)][0] == root / "a.txt"
    assert walk([root / "c.txt"]) == [(root / "c.txt", "c.txt")]
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        report = index.add(root)
    assert report.added == 5 and [Path(f.path).name for f in report.failed] == ["broken.txt"]


def test_a_bad_file_is_reported_by_name_and_the_rest_indexed(folder: Path, tmp_path: Path) -> None:
    (folder / "scan.pdf").write_bytes(b"%PDF-1.4\x00\x01")
    (folder / "data.xyz").write_bytes(b"1,2,3")
    (folder / ".hidden.txt").write_text("not indexed", encoding="utf-8")
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        report = index.add(folder)
        assert report.added == 3 and len(index) == 3
        failed = {Path(f.path).name: f.reason for f in report.failed}
        assert set(failed) == {"scan.pdf", "data.xyz"}
        assert "unsupported file type '.xyz'" in failed["data.xyz"] and "not a readable PDF" in failed["scan.pdf"]
        assert "1 failed" not in report.summary() and "2 failed" in report.summary()
        with pytest.raises(qa.DocumentError, match="data.xyz"):
            index.add(folder, strict=True)
        with pytest.raises(qa.DocumentError, match="no such file or directory"):
            index.add(folder / "missing")


def test_a_document_id_used_by_another_file_is_reported(folder: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "nk_soldiers_kursk.txt").write_text("A different article.\n", encoding="utf-8")
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        index.add(folder)
        report = index.add(other)
        assert report.added == 0 and "already used by" in report.failed[0].reason
        assert Q4000 in index.store.text("nk_soldiers_kursk.txt")


def test_documents_are_added_and_replaced_by_id(tmp_path: Path, seed_doc: qa.Document) -> None:
    with qa.Index.open(tmp_path / "i.sqlite", NO_SERVER) as index:
        assert len(index) == 0 and index.add(seed_doc).added == 1
        report = index.add([qa.Document(text="Replaced.", id=seed_doc.id, metadata={"v": 2})])
        assert (report.added, report.updated) == (0, 1)
        (stored,) = index
        assert stored.metadata == {"v": 2} and index.documents == [qa.Document(text="Replaced.", id=seed_doc.id, metadata={"v": 2})]
        with pytest.raises(qa.InputError, match="share the id"):
            index.add([seed_doc, seed_doc])


def test_chunking_settings_are_recorded_and_checked(tmp_path: Path, seed_doc: qa.Document) -> None:
    db = tmp_path / "i.sqlite"
    with qa.Index.open(db, NO_SERVER) as index:
        index.add(seed_doc)
    with pytest.raises(qa.StoreError, match=r"i.sqlite: the index was chunked with chunk_tokens=256, chunk_overlap=32"):
        qa.Index.open(db, NO_SERVER.model_copy(update={"chunk_tokens": 128}))


# --- files that are not usable indexes ------------------------------------------------------------------


def test_a_file_that_is_not_a_qa_index_is_refused_by_name(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello", encoding="utf-8")
    with pytest.raises(qa.StoreError, match=r"notes.txt: not a qa index \(not an SQLite database\)") as caught:
        qa.Index.open(text, NO_SERVER)
    assert caught.value.path == str(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE users (name TEXT)")
    db.close()
    with pytest.raises(qa.StoreError, match=r"other.db: not a qa index \(an SQLite database with other tables: users\)"):
        qa.Index.open(other, NO_SERVER)
    with pytest.raises(qa.StoreError, match="is a directory"):
        qa.Index.open(tmp_path, NO_SERVER)


def test_a_corrupt_index_is_refused_by_name(tmp_path: Path, seed_doc: qa.Document) -> None:
    db = tmp_path / "i.sqlite"
    with qa.Index.open(db, NO_SERVER) as index:
        index.add(seed_doc)
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xa5" * (4096 - 100)  # the schema page, past the header
    db.write_bytes(bytes(data))
    with pytest.raises(qa.StoreError, match=r"i.sqlite: opening the index: the index file is corrupt"):
        qa.Index.open(db, NO_SERVER)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "i.sqlite"
    SQLiteStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO _qa_migrations VALUES ('m999_from_the_future', datetime('now'))")
    conn.close()
    with pytest.raises(qa.StoreError, match=r"i.sqlite: made by a newer version of qa \(schema m999_from_the_future"):
        SQLiteStore(db)


def _write_seed_rows(conn: sqlite3.Connection, text: str) -> None:
    """The seed article as an old qa wrote it: one document, two chunks with ids 1 and 2."""
    conn.execute(
        "INSERT INTO documents (id, doc_id, length, sha256, chunks, tokens) VALUES (1, 'seed', ?, 'x', 2, 20)",
        (len(text),),
    )
    conn.execute("INSERT INTO document_texts VALUES (1, ?)", (text,))
    conn.execute('INSERT INTO chunks (id, document, idx, start, "end", tokens) VALUES (1, 1, 0, 0, 400, 10)')
    conn.execute('INSERT INTO chunks (id, document, idx, start, "end", tokens) VALUES (2, 1, 1, 400, ?, 10)', (len(text),))


def test_an_older_schema_is_migrated_and_its_documents_found(tmp_path: Path, seed_text: str) -> None:
    db = tmp_path / "old.sqlite"
    SQLiteStore(db, migrations=MIGRATIONS[:1]).close()  # a file made before the term index existed
    with sqlite3.connect(db) as conn:
        _write_seed_rows(conn, seed_text)
    conn.close()
    store = SQLiteStore(db)
    try:
        hits = store.search("killed or wounded North Koreans", 1)
        assert hits and hits[0].chunk.document_id == "seed" and Q4000 in hits[0].chunk.text
        with sqlite3.connect(db) as conn:
            names = [n for (n,) in conn.execute("SELECT name FROM _qa_migrations ORDER BY name")]
            assert names == [m.__name__ for m in MIGRATIONS]
            assert conn.execute("PRAGMA user_version").fetchone() == (len(MIGRATIONS),)
        conn.close()
    finally:
        store.close()


def test_a_file_with_the_fts5_term_index_is_migrated_to_tantivy(tmp_path: Path, seed_text: str) -> None:
    db = tmp_path / "v4.sqlite"
    SQLiteStore(db, migrations=MIGRATIONS[:4]).close()  # the schema of m004: terms in an FTS5 table
    with sqlite3.connect(db) as conn:
        _write_seed_rows(conn, seed_text)
        conn.execute("INSERT INTO chunk_terms (rowid, terms) VALUES (1, 'north korean'), (2, 'kill wound')")
    conn.close()
    store = SQLiteStore(db)
    try:
        hits = store.search("killed or wounded North Koreans", 1)
        assert hits and hits[0].chunk.document_id == "seed" and Q4000 in hits[0].chunk.text
        assert store.term_chunks() == {1, 2}
        grain = "Grain prices doubled."
        store.add([Entry(qa.Document(text=grain, id="g"), [Chunk("g", 0, 0, len(grain), grain, 4)])])
        assert store.search("grain", 1)[0].chunk.document_id == "g"
        with sqlite3.connect(db) as conn:
            assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'chunk_terms'").fetchone()
            assert conn.execute("SELECT COUNT(*) FROM term_log").fetchone() == (0,)  # the index holds them all
            assert conn.execute("SELECT next_chunk FROM term_state").fetchone() == (4,)
        conn.close()
    finally:
        store.close()
    assert (tmp_path / "v4.sqlite.terms" / "meta.json").exists()


@pytest.mark.parametrize("damage", ["missing", "garbled", "another file's"])
def test_a_missing_or_damaged_term_index_is_made_again_with_a_warning(
    folder: Path, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "index.sqlite"
    with qa.Index.open(db, NO_SERVER) as index:
        index.add(folder)
        before = [(h.chunk, h.score) for h in index.store.search("killed or wounded North Koreans grain", 5)]
    terms = tmp_path / "index.sqlite.terms"
    if damage == "missing":
        shutil.rmtree(terms)
    elif damage == "garbled":
        (terms / "meta.json").write_text("{not json", encoding="utf-8")
    else:
        with qa.Index.open(tmp_path / "other.sqlite", NO_SERVER) as other:
            other.add([qa.Document(text="Unrelated words about ships.", id="x")])
        shutil.rmtree(terms)
        shutil.copytree(tmp_path / "other.sqlite.terms", terms)
    with caplog.at_level("WARNING", logger="qa"), qa.Index.open(db, NO_SERVER) as index:
        assert [(h.chunk, h.score) for h in index.store.search("killed or wounded North Koreans grain", 5)] == before
        assert isinstance(index.store, SQLiteStore)
        assert index.store.term_chunks() == set(range(1, 1 + index.store.stats().chunks))
    assert f"{terms}" in caplog.text and "making it from the" in caplog.text


def test_searches_see_writes_at_once_and_never_a_removed_document(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "index.sqlite")
    reader = SQLiteStore(tmp_path / "index.sqlite")  # a second store on the file: it cannot take the writer
    try:
        docs = [qa.Document(text=f"Report {i}: grain prices rose in the {w} region.", id=f"r{i}") for i, w in
                enumerate(["north", "south", "east"])]  # fmt: skip
        store.add([Entry(d, [Chunk(d.id, 0, 0, len(d.text), d.text, 12)]) for d in docs])
        assert {h.chunk.document_id for h in store.search("grain prices", 5)} == {"r0", "r1", "r2"}
        store.remove(["r1"])  # the writer has not committed the term index: the reader's index still holds r1
        assert {h.chunk.document_id for h in reader.search("grain prices", 5)} == {"r0", "r2"}
        assert {h.chunk.document_id for h in reader.search("south", 5)} == set()
    finally:
        reader.close()
        store.close()
    store = SQLiteStore(tmp_path / "index.sqlite")
    try:
        assert store.term_chunks() == {1, 3}
    finally:
        store.close()

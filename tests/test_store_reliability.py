"""The SQLite index under SIGKILL and beside a concurrent reader: every document whole or absent, the file intact."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qa.store.sqlite import SQLiteStore

WORDS = "oil grain ship port freight harvest price winter border army report river bridge city".split()
KILLS = 24


def make_corpus(root: Path, n: int, seed: int = 7) -> dict[str, str]:
    rng = random.Random(seed)
    root.mkdir()
    texts = {}
    for i in range(n):
        paragraphs = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 90))).capitalize() + "."
            for _ in range(rng.randint(2, 8))
        ]
        text = f"Report {i}.\n\n" + "\n\n".join(paragraphs) + "\n"
        (root / f"r{i:04d}.txt").write_text(text, encoding="utf-8")
        texts[f"r{i:04d}.txt"] = text
    return texts


def check_whole(db: Path, texts: dict[str, str], *, terms: bool = False) -> int:
    """The file passes SQLite's integrity check and every stored document is whole; how many there are. With `terms`
    (no writer running), the store is also opened (which replays what a killed writer left for the term index) and
    its term index must hold exactly the stored chunks."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'term_log'").fetchone():
            assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'documents'").fetchone()
            return 0  # killed before the schema was committed: nothing half made
        conn.execute("BEGIN")
        docs = conn.execute(
            "SELECT d.id, d.doc_id, d.length, d.chunks, t.text FROM documents d"
            " LEFT JOIN document_texts t ON t.document = d.id"
        ).fetchall()
        for rowid, doc_id, length, n, text in docs:
            assert text == texts[doc_id] and length == len(text)
            spans = conn.execute('SELECT idx, start, "end" FROM chunks WHERE document = ? ORDER BY idx', (rowid,))
            rows = spans.fetchall()
            assert len(rows) == n > 0 and [r[0] for r in rows] == list(range(n))
            assert all(0 <= s < e <= length for _, s, e in rows)
        assert conn.execute("SELECT COUNT(*) FROM document_texts").fetchone() == (len(docs),)
        chunks = {i for (i,) in conn.execute("SELECT id FROM chunks")}
        conn.execute("COMMIT")
    finally:
        conn.close()
    if terms:
        store = SQLiteStore(db)
        try:
            assert store.term_chunks() == chunks
        finally:
            store.close()
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("SELECT COUNT(*) FROM term_log").fetchone() == (0,)  # replayed, then emptied
        finally:
            conn.close()
    return len(docs)


def count_documents(db: Path) -> int:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return -1


def qa_index(folder: Path, db: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QA_"))}
    env["QA_RETRIEVAL"] = "bm25"  # what is tested is the store's writing; embedding 400 documents would only slow it
    return subprocess.Popen(
        [sys.executable, "-m", "qa", "index", str(folder), "--db", str(db)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_sigkill_at_any_moment_leaves_every_document_whole_or_absent(tmp_path: Path) -> None:
    texts = make_corpus(tmp_path / "corpus", 1500)  # ~47 transactions of 32 documents: room for 24 kills
    db = tmp_path / "index.sqlite"
    rng = random.Random(1)
    moments = []
    for kill in range(KILLS):
        proc = qa_index(tmp_path / "corpus", db)
        start = count_documents(db)
        if kill < 2:  # while Python starts and imports
            time.sleep(0.05 * kill)
            moment = "starting"
        elif kill < 4:  # as the file is created and migrated
            while not db.exists() and proc.poll() is None:
                time.sleep(0.001)
            moment = "creating"
        else:  # after one more transaction is in, plus a random part of the next one's writing
            while proc.poll() is None and count_documents(db) < max(start, 0) + 1:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.01))
            moment = "writing"
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        stored = check_whole(db, texts, terms=True)
        moments.append((moment, proc.returncode, stored))
    killed = [m for m in moments if m[1] == -signal.SIGKILL]
    assert len(killed) >= 20, moments
    assert len({stored for _, _, stored in killed}) >= 10, moments  # killed at many different points
    done = qa_index(tmp_path / "corpus", db)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    assert check_whole(db, texts, terms=True) == len(texts)
    assert "0 failed" in out


def test_a_reader_never_sees_a_half_added_document(tmp_path: Path) -> None:
    texts = make_corpus(tmp_path / "corpus", 400, seed=3)
    db = tmp_path / "index.sqlite"
    SQLiteStore(db).close()
    writer = qa_index(tmp_path / "corpus", db)
    seen: set[int] = set()
    store = SQLiteStore(db)
    try:
        while writer.poll() is None:
            seen.add(check_whole(db, texts))
            for stored in list(store)[-5:]:  # through the Store API too, the latest documents
                assert store.text(stored.id) == texts[stored.id]
                assert len(store.chunks(stored.id)) == stored.chunks
            hits = store.search("freight harvest border", 3)
            assert all(h.chunk.text == texts[h.chunk.document_id][h.chunk.start : h.chunk.end] for h in hits)
    finally:
        store.close()
        writer.communicate()
    assert writer.returncode == 0
    assert check_whole(db, texts, terms=True) == len(texts)
    assert len(seen - {0, len(texts)}) >= 2, seen  # it read while documents were being added


@pytest.mark.parametrize("damage", ["truncated", "zeroed page"])
def test_damaged_files_are_refused_with_a_store_error(tmp_path: Path, damage: str) -> None:
    import qa

    texts = make_corpus(tmp_path / "corpus", 30)
    db = tmp_path / "index.sqlite"
    proc = qa_index(tmp_path / "corpus", db)
    proc.communicate()
    assert check_whole(db, texts) == len(texts)
    data = bytearray(db.read_bytes())
    if damage == "truncated":
        data = data[: len(data) // 2]
    else:
        data[4096 : 3 * 4096] = bytes(2 * 4096)
    db.write_bytes(bytes(data))
    with pytest.raises(qa.StoreError, match=str(db)):
        store = SQLiteStore(db)
        try:
            for stored in store:
                store.chunks(stored.id)
            store.search("freight harvest", 5)
        finally:
            store.close()

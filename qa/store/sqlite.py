"""The SQLite store: one file (stdlib sqlite3, WAL, foreign keys) holding documents and chunks, and beside it a
tantivy term index of the chunks (`<file>.terms/`, derived from the file).

Every write is one transaction (`BEGIN IMMEDIATE` … `COMMIT`), so a document is in the file whole (row, text,
chunks, and its rows in the term log) or not at all, whatever moment the writing process dies at; WAL lets readers
go on reading the last committed state meanwhile, and each read runs in one transaction, so it sees one state.

BM25 is tantivy's over the chunks' terms, which are the terms `qa.BM25Retriever` indexes (same words, stop words
and stems). The term log in the file says which chunks the term index must add or delete; the store that holds
the index's writer applies it after each write and commits the index every few seconds (and before its own
searches, and on close), and whoever opens the file next replays what a killed process left. A search keeps only
chunks the file holds in the state it reads, so it never returns a chunk of a removed or half-written document;
another process's newest documents become searchable when its writer next commits.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.chunking import Chunk
from qa.documents import Document, Location
from qa.errors import InputError, StoreError
from qa.retrieval import Hit
from qa.store import Entry, Known, Source, StoredDocument, StoreStats, text_sha256
from qa.store.migrations import MIGRATIONS, Migration, m005_term_log
from qa.store.term_index import TermIndex
from qa.store.terms import Terms

__all__ = ["APPLICATION_ID", "SQLiteStore"]

APPLICATION_ID = 0x71614958  # "qaIX" in the file header: this file is a qa index
_HEADER = b"SQLite format 3\x00"
_PAGE = 1000  # documents read per query when iterating
_KNOWN_PAGE = 20_000  # (id, sha256, file) rows read per query by `known`
logger = logging.getLogger("qa")
# The term index is committed once this many log rows wait, or this long after the last commit.
_COMMIT_ROWS = 50_000
_COMMIT_SECONDS = 5.0
_LOG_PAGE = 20_000  # term-log rows read at a time
_STORED_COLUMNS = (
    "id, doc_id, length, sha256, chunks, metadata, source_path, source_size, source_mtime_ns"
)


def _describe(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_NOTADB":
        return "not a qa index (not an SQLite database)"
    if name.startswith("SQLITE_CORRUPT"):
        return f"the index file is corrupt (SQLite: {exc}); delete it and index again"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
        return f"the index is locked by another process (SQLite: {exc})"
    return f"SQLite: {exc}"


class SQLiteStore:
    """A `Store` in one SQLite file, created when missing; what `qa.Index.open(path)` uses."""

    def __init__(self, path: str | Path, *, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self._path = Path(path)
        self._lock = threading.RLock()
        self._terms = Terms()
        if self._path.is_dir():
            raise StoreError(f"{self._path}: is a directory, not an index file", path=str(self._path))
        try:
            with self._path.open("rb") as f:
                header = f.read(len(_HEADER))
        except FileNotFoundError:
            header = b""
        except OSError as exc:
            raise StoreError(f"{self._path}: cannot read the index: {exc.strerror or exc}", path=str(self._path)) from exc
        if header and header != _HEADER:
            raise StoreError(f"{self._path}: not a qa index (not an SQLite database)", path=str(self._path))
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{self._path}: cannot open the index: {exc}", path=str(self._path)) from exc
        try:
            with self._errors("opening the index"):
                self._db.execute("PRAGMA foreign_keys = ON")
                self._check_and_migrate(migrations)
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = NORMAL")
                # Only a file made with some migrations left out (as tests make older files) has no term_state.
                state = self._db.execute("SELECT id FROM term_state").fetchone() if m005_term_log in migrations else None
            self._index = TermIndex(self._path.with_name(self._path.name + ".terms"), state[0] if state else "")
            self._fresh: dict[int, str] = {}  # chunk id -> terms, of chunks this store just wrote
            self._given = 0  # the last term-log row handed to the index's writer
            self._committed_at = time.monotonic()
            if state is not None:
                self._open_terms()
        except BaseException:
            self._db.close()
            raise

    # --- plumbing ---------------------------------------------------------------------------

    def _fail(self, problem: str) -> StoreError:
        return StoreError(f"{self._path}: {problem}", path=str(self._path))

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise self._fail(f"{doing}: {_describe(exc)}") from exc

    @contextmanager
    def _transaction(self, doing: str, *, write: bool) -> Iterator[sqlite3.Connection]:
        """One transaction: all of its reads see one state, and its writes land together or not at all."""
        with self._lock, self._errors(doing):
            db = self._db
            db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _check_and_migrate(self, migrations: Sequence[Migration]) -> None:
        with self._transaction("opening the index", write=True) as db:
            (app_id,) = db.execute("PRAGMA application_id").fetchone()
            if app_id != APPLICATION_ID:
                tables = [n for (n,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")]
                if tables:
                    shown = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
                    raise self._fail(f"not a qa index (an SQLite database with other tables: {shown})")
                db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            db.execute("CREATE TABLE IF NOT EXISTS _qa_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
            applied = {n for (n,) in db.execute("SELECT name FROM _qa_migrations")}
            known = {m.__name__ for m in MIGRATIONS}
            if newer := sorted(applied - known):
                raise self._fail(
                    f"made by a newer version of qa (schema {', '.join(newer)} unknown to this one); upgrade qa"
                )
            for migration in migrations:
                if migration.__name__ not in applied:
                    migration(db)
                    db.execute(
                        "INSERT INTO _qa_migrations (name, applied_at) VALUES (?, datetime('now'))",
                        (migration.__name__,),
                    )
            db.execute(f"PRAGMA user_version = {len(applied | {m.__name__ for m in migrations})}")

    def _stored(self, row: Sequence[Any]) -> StoredDocument:
        _, doc_id, length, sha256, chunks, metadata, path, size, mtime_ns = row
        source = Source(path, size, mtime_ns) if path is not None else None
        return StoredDocument(doc_id, length, sha256, chunks, json.loads(metadata), source)

    # --- the Store protocol -----------------------------------------------------------------

    @property
    def path(self) -> Path:
        return self._path

    def add(self, entries: Iterable[Entry]) -> None:
        rows = []
        for e in entries:
            doc = e.document
            try:
                metadata = json.dumps(dict(doc.metadata), ensure_ascii=False, sort_keys=True)
            except (TypeError, ValueError) as exc:
                raise InputError(f"document {doc.id!r}: metadata cannot be stored as JSON: {exc}") from exc
            locations = json.dumps([[loc.start, loc.page, loc.section] for loc in doc.locations], ensure_ascii=False)
            terms = list(map(self._terms.line, (c.text for c in e.chunks)))
            rows.append((e, metadata, locations, text_sha256(doc.text), terms))
        if not rows:
            return
        fresh: dict[int, str] = {}
        with self._transaction("adding documents", write=True) as db:
            # Chunk ids are never given twice, so an id the term index has not yet deleted names no other chunk.
            (next_chunk,) = db.execute(
                "SELECT MAX(next_chunk, (SELECT COALESCE(MAX(id), 0) + 1 FROM chunks)) FROM term_state"
            ).fetchone()
            for e, metadata, locations, sha256, terms in rows:
                doc, src = e.document, e.source
                self._delete(db, [doc.id])
                cursor = db.execute(
                    "INSERT INTO documents (doc_id, length, sha256, chunks, tokens, metadata, locations, source_path,"
                    " source_size, source_mtime_ns) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        doc.id, len(doc.text), sha256, len(e.chunks), sum(c.tokens for c in e.chunks), metadata,
                        locations,
                        src.path if src else None, src.size if src else None, src.mtime_ns if src else None,
                    ),
                )  # fmt: skip
                document = cursor.lastrowid
                db.execute("INSERT INTO document_texts (document, text) VALUES (?, ?)", (document, doc.text))
                ids = range(next_chunk, next_chunk + len(e.chunks))
                next_chunk += len(e.chunks)
                db.executemany(
                    'INSERT INTO chunks (id, document, idx, start, "end", tokens) VALUES (?, ?, ?, ?, ?, ?)',
                    [(i, document, c.index, c.start, c.end, c.tokens) for i, c in zip(ids, e.chunks, strict=True)],
                )
                db.executemany("INSERT INTO term_log (chunk, op) VALUES (?, 1)", [(i,) for i in ids])
                fresh.update(zip(ids, terms, strict=True))
            db.execute("UPDATE term_state SET next_chunk = ?", (next_chunk,))
        self._fresh.update(fresh)
        self._after_write()

    @staticmethod
    def _delete(db: sqlite3.Connection, ids: Sequence[str]) -> int:
        removed = 0
        for doc_id in ids:
            row = db.execute("SELECT id FROM documents WHERE doc_id = ?", (doc_id,)).fetchone()
            if row is None:
                continue
            db.execute("INSERT INTO term_log (chunk, op) SELECT id, 0 FROM chunks WHERE document = ? ORDER BY id", row)
            db.execute("DELETE FROM documents WHERE id = ?", row)  # its text and chunks go with it
            removed += 1
        return removed

    def remove(self, ids: Iterable[str]) -> int:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        with self._transaction("removing documents", write=True) as db:
            removed = self._delete(db, wanted)
        self._after_write()
        return removed

    def set_source(self, document_id: str, source: Source) -> None:
        with self._transaction("recording a file's time", write=True) as db:
            db.execute(
                "UPDATE documents SET source_path = ?, source_size = ?, source_mtime_ns = ? WHERE doc_id = ?",
                (source.path, source.size, source.mtime_ns, document_id),
            )

    def __len__(self) -> int:
        with self._transaction("counting documents", write=False) as db:
            (n,) = db.execute("SELECT COUNT(*) FROM documents").fetchone()
        return int(n)

    def __iter__(self) -> Iterator[StoredDocument]:
        last = 0
        while True:
            with self._transaction("listing documents", write=False) as db:
                rows = db.execute(
                    f"SELECT {_STORED_COLUMNS} FROM documents WHERE id > ? ORDER BY id LIMIT ?", (last, _PAGE)
                ).fetchall()
            if not rows:
                return
            yield from map(self._stored, rows)
            last = rows[-1][0]

    def known(self) -> Iterator[Known]:
        last = 0
        while True:
            with self._transaction("listing documents", write=False) as db:
                rows = db.execute(
                    "SELECT id, doc_id, sha256, source_path, source_size, source_mtime_ns FROM documents"
                    " WHERE id > ? ORDER BY id LIMIT ?",
                    (last, _KNOWN_PAGE),
                ).fetchall()
            if not rows:
                return
            for _, doc_id, sha256, path, size, mtime_ns in rows:
                yield Known(doc_id, sha256, Source(path, size, mtime_ns) if path is not None else None)
            last = rows[-1][0]

    def get(self, document_id: str) -> StoredDocument | None:
        with self._transaction("reading a document", write=False) as db:
            row = db.execute(f"SELECT {_STORED_COLUMNS} FROM documents WHERE doc_id = ?", (document_id,)).fetchone()
        return self._stored(row) if row is not None else None

    def text(self, document_id: str) -> str:
        with self._transaction("reading a document", write=False) as db:
            row = db.execute(
                "SELECT t.text FROM documents d JOIN document_texts t ON t.document = d.id WHERE d.doc_id = ?",
                (document_id,),
            ).fetchone()
        if row is None:
            raise KeyError(document_id)
        return str(row[0])

    def document(self, document_id: str) -> Document:
        with self._transaction("reading a document", write=False) as db:
            row = db.execute(
                "SELECT t.text, d.metadata, d.locations FROM documents d JOIN document_texts t ON t.document = d.id"
                " WHERE d.doc_id = ?",
                (document_id,),
            ).fetchone()
        if row is None:
            raise KeyError(document_id)
        text, metadata, locations = row
        return Document(
            text=text, id=document_id, metadata=json.loads(metadata),
            locations=tuple(Location(start, page, section) for start, page, section in json.loads(locations)),
        )  # fmt: skip

    def chunks(self, document_id: str) -> list[Chunk]:
        with self._transaction("reading chunks", write=False) as db:
            row = db.execute(
                "SELECT d.id, t.text FROM documents d JOIN document_texts t ON t.document = d.id WHERE d.doc_id = ?",
                (document_id,),
            ).fetchone()
            if row is None:
                raise KeyError(document_id)
            document, text = row
            spans = db.execute(
                'SELECT idx, start, "end", tokens FROM chunks WHERE document = ? ORDER BY idx', (document,)
            ).fetchall()
        return [Chunk(document_id, i, s, e, text[s:e], n) for i, s, e, n in spans]

    def stats(self) -> StoreStats:
        with self._transaction("counting documents", write=False) as db:
            n, chunks, tokens = db.execute(
                "SELECT COUNT(*), COALESCE(SUM(chunks), 0), COALESCE(SUM(tokens), 0) FROM documents"
            ).fetchone()
        return StoreStats(int(n), int(chunks), int(tokens))

    def search(self, query: str, k: int) -> list[Hit]:
        if k <= 0 or not (terms := self._terms.of(query)):
            return []
        with self._lock:
            if self._index.writing and self._given < self._last_seq():
                self._apply_log()
            if self._index.writing and self._given > self._index.applied:
                self._commit_terms()
            # Chunks the file no longer holds (deleted there, not yet in the term index) are left out: ask for more.
            limit = k + 8
            while True:
                with self._errors("searching"):
                    ranked = self._index.search(terms, limit)
                hits = self._hits(ranked)
                if len(hits) >= k or len(ranked) < limit:
                    return hits[:k]
                limit *= 4

    def _hits(self, ranked: list[tuple[int, float]]) -> list[Hit]:
        if not ranked:
            return []
        with self._transaction("searching", write=False) as db:
            marks = ",".join("?" * len(ranked))
            rows = db.execute(
                f'SELECT c.id, d.doc_id, c.idx, c.start, c."end", c.tokens, substr(t.text, c.start + 1, c."end" - c.start)'
                f" FROM chunks c JOIN documents d ON d.id = c.document JOIN document_texts t ON t.document = d.id"
                f" WHERE c.id IN ({marks})",
                [chunk for chunk, _ in ranked],
            ).fetchall()
        chunks = {r[0]: Chunk(r[1], r[2], r[3], r[4], r[6], r[5]) for r in rows}
        ranked = sorted(ranked, key=lambda r: (-r[1], r[0]))  # ties: the older chunk first
        # pop: a chunk twice in the index (a writer killed between committing it and recording so) is shown once
        return [Hit(chunk, score) for c, score in ranked if (chunk := chunks.pop(c, None)) is not None]

    # --- the term index ---------------------------------------------------------------------

    def _last_seq(self) -> int:
        with self._transaction("reading the term log", write=False) as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM term_log").fetchone()
        return int(seq)

    def _open_terms(self) -> None:
        """Open the term index, rebuilding it when missing or damaged, and replay the log a killed writer left."""
        with self._lock:
            why = self._index.open()
            if why is not None:
                self._rebuild_terms(why)
                return
            self._given = self._index.applied
            if self._last_seq() > self._given and self._index.acquire():  # else another process writes: its work
                try:
                    self._apply_log()
                    self._commit_terms()
                finally:
                    self._index.release()

    def _rebuild_terms(self, why: str) -> None:
        """Make the term index again from every stored chunk."""
        with self._transaction("reading the term log", write=False) as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM term_log").fetchone()
            (chunks,) = db.execute("SELECT COUNT(*) FROM chunks").fetchone()
            (logged,) = db.execute("SELECT COUNT(*) FROM term_log WHERE op = 1").fetchone()
        if chunks:
            # A file migrated from FTS5 (m005) has every chunk in its log and no index yet: that is no damage.
            migrated = not self._index.directory.exists() and logged >= chunks
            logger.log(
                logging.INFO if migrated else logging.WARNING, "%s: its term index %s %s; making it from the %d stored"
                " chunks", self._path, self._index.directory, why, chunks,
            )  # fmt: skip
        try:
            self._index.reset()
        except (OSError, ValueError) as exc:
            raise self._fail(f"cannot make the term index {self._index.directory}: {exc}") from exc
        try:
            last = 0
            while True:  # chunks added meanwhile have log rows after `seq`, replayed next
                with self._transaction("reading chunks", write=False) as db:
                    ids = [i for (i,) in db.execute(
                        "SELECT id FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (last, _LOG_PAGE)
                    )]  # fmt: skip
                if not ids:
                    break
                self._index.add(self._terms_of(ids))
                last = ids[-1]
            self._given = seq
            self._apply_log()
            self._commit_terms()
        finally:
            self._index.release()

    def _terms_of(self, ids: list[int]) -> list[tuple[int, str]]:
        """(chunk id, terms) of those of these chunks the file holds, terms just made by this store reused."""
        out = [(i, t) for i in ids if (t := self._fresh.pop(i, None)) is not None]
        found = {c for c, _ in out}
        missing = [i for i in ids if i not in found]
        for start in range(0, len(missing), 500):
            part = missing[start : start + 500]
            with self._transaction("reading chunks", write=False) as db:
                rows = db.execute(
                    f'SELECT c.id, substr(t.text, c.start + 1, c."end" - c.start) FROM chunks c'
                    f" JOIN document_texts t ON t.document = c.document WHERE c.id IN ({','.join('?' * len(part))})",
                    part,
                ).fetchall()
            out.extend((i, self._terms.line(text)) for i, text in rows)
        return out

    def _apply_log(self) -> None:
        """Hand the term-log rows after the last one handed to the writer (this process holds it)."""
        while True:
            with self._transaction("reading the term log", write=False) as db:
                rows = db.execute(
                    "SELECT seq, chunk, op FROM term_log WHERE seq > ? ORDER BY seq LIMIT ?", (self._given, _LOG_PAGE)
                ).fetchall()
            if not rows:
                return
            last = {chunk: op for _, chunk, op in rows}  # a chunk's last row decides
            # A chunk this store just made is in no index yet (ids are never given twice): nothing to delete.
            fresh = self._fresh
            with self._errors("writing the term index"):
                self._index.delete([c for c, op in last.items() if not (op and c in fresh)])
                self._index.add(self._terms_of([c for c, op in last.items() if op]))
            self._given = rows[-1][0]

    def _commit_terms(self) -> None:
        with self._errors("writing the term index"):
            self._index.commit(self._given)
        self._committed_at = time.monotonic()
        self._fresh.clear()
        with self._transaction("trimming the term log", write=True) as db:
            db.execute("DELETE FROM term_log WHERE seq <= ?", (self._given,))

    def _after_write(self) -> None:
        """Bring the term index up to the file; commit it when enough waits or enough time went by."""
        with self._lock:
            if not self._index.writing:
                if not self._index.acquire():
                    self._fresh.clear()
                    return  # another process holds the writer: it (or whoever opens the file next) applies the log
                self._given = max(self._given, self._index.applied)  # as committed by the writer before this one
            self._apply_log()
            waiting = self._given - self._index.applied  # log rows, about (seq numbers are given one by one)
            if waiting >= _COMMIT_ROWS or time.monotonic() - self._committed_at >= _COMMIT_SECONDS:
                self._commit_terms()

    def term_chunks(self) -> set[int]:
        """The chunk ids the term index holds as last committed (for checks and tests)."""
        with self._lock:
            return self._index.chunk_ids()

    def vector_documents(self, model: str) -> set[str]:
        with self._transaction("reading vectors", write=False) as db:
            rows = db.execute(
                "SELECT d.doc_id FROM document_vectors v JOIN documents d ON d.id = v.document WHERE v.model = ?",
                (model,),
            ).fetchall()
        return {r[0] for r in rows}

    def vectors(self, model: str) -> dict[str, npt.NDArray[np.float32]]:
        with self._transaction("reading vectors", write=False) as db:
            rows = db.execute(
                "SELECT d.doc_id, v.dimension, v.vectors FROM document_vectors v JOIN documents d ON d.id = v.document"
                " WHERE v.model = ?",
                (model,),
            ).fetchall()
        return {
            doc: np.frombuffer(blob, dtype="<f2").reshape(-1, dimension).astype(np.float32)
            for doc, dimension, blob in rows
        }

    def set_vectors(self, model: str, vectors: Mapping[str, npt.NDArray[np.floating]]) -> None:
        rows = []
        for doc, v in vectors.items():
            array = np.asarray(v, dtype="<f2")
            rows.append((doc, array.shape[1] if array.ndim == 2 else 0, len(array), array.tobytes()))
        with self._transaction("storing vectors", write=True) as db:
            for doc, dimension, n, blob in rows:
                row = db.execute("SELECT id, chunks FROM documents WHERE doc_id = ?", (doc,)).fetchone()
                if row is None or row[1] != n:
                    raise KeyError(f"{doc!r}: no stored document with {n} chunks")
                db.execute(
                    "INSERT OR REPLACE INTO document_vectors (document, model, dimension, vectors) VALUES (?, ?, ?, ?)",
                    (row[0], model, dimension, blob),
                )

    def clear_vectors(self) -> None:
        with self._transaction("removing vectors", write=True) as db:
            db.execute("DELETE FROM document_vectors")

    def get_meta(self, key: str) -> str | None:
        with self._transaction("reading the index settings", write=False) as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction("recording the index settings", write=True) as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def close(self) -> None:
        with self._lock:
            try:
                if self._index.writing:
                    self._apply_log()
                    if self._given > self._index.applied:
                        self._commit_terms()
            finally:
                self._index.close()
                self._db.close()

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self._path)!r})"

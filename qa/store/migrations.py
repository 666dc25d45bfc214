"""The SQLite store's schema, as numbered migrations recorded in the file (table `_qa_migrations`), as simonw/llm does.

A new migration is a function appended below with the next number; it runs once per file, inside the
transaction that records it. A file that records a migration this version does not know was made by a newer
`qa`, and is refused rather than misread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = ["MIGRATIONS", "Migration", "m005_term_log"]

Migration = Callable[[sqlite3.Connection], None]
MIGRATIONS: list[Migration] = []


def _migration(fn: Migration) -> Migration:
    MIGRATIONS.append(fn)
    return fn


@_migration
def m001_documents(db: sqlite3.Connection) -> None:
    """Documents (text apart, so listing them reads no text; metadata as a JSON object), their chunks as offsets,
    and key/value settings."""
    db.execute(
        """CREATE TABLE documents (
            id INTEGER PRIMARY KEY,
            doc_id TEXT NOT NULL UNIQUE,
            length INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            chunks INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            metadata TEXT NOT NULL DEFAULT '{}',
            source_path TEXT,
            source_size INTEGER,
            source_mtime_ns INTEGER
        )"""
    )
    db.execute("CREATE INDEX documents_source ON documents (source_path)")
    db.execute(
        """CREATE TABLE document_texts (
            document INTEGER PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
            text TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE chunks (
            id INTEGER PRIMARY KEY,
            document INTEGER NOT NULL REFERENCES documents (id) ON DELETE CASCADE,
            idx INTEGER NOT NULL,
            start INTEGER NOT NULL,
            "end" INTEGER NOT NULL,
            tokens INTEGER NOT NULL,
            UNIQUE (document, idx)
        )"""
    )
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")


@_migration
def m002_chunk_terms(db: sqlite3.Connection) -> None:
    """The first term index, an FTS5 table (superseded by m005, which drops it: made empty here)."""
    db.execute("""CREATE VIRTUAL TABLE chunk_terms USING fts5 (terms, tokenize = "ascii tokenchars '_'")""")


@_migration
def m003_document_locations(db: sqlite3.Connection) -> None:
    """Where each stretch of a document's text is in its file: a JSON list of [start, page, section]."""
    db.execute("ALTER TABLE documents ADD COLUMN locations TEXT NOT NULL DEFAULT '[]'")


@_migration
def m004_document_vectors(db: sqlite3.Connection) -> None:
    """Chunk vectors for retrieval by meaning: one row per document, its chunks' vectors as little-endian float16 in
    chunk order, with the embedding model that made them (they go with the document when it is replaced)."""
    db.execute(
        """CREATE TABLE document_vectors (
            document INTEGER PRIMARY KEY REFERENCES documents (id) ON DELETE CASCADE,
            model TEXT NOT NULL,
            dimension INTEGER NOT NULL,
            vectors BLOB NOT NULL
        )"""
    )


@_migration
def m005_term_log(db: sqlite3.Connection) -> None:
    """The term index moves out of the file to tantivy (`qa.store.term_index`, a directory beside the file): the FTS5
    table goes, and a log of the chunks to add to (op 1) or delete from (op 0) that index comes, written in the
    transaction that adds or removes them and emptied once the index holds them; here, every stored chunk is to add.
    `term_state` names this file for its index (a directory left by another file is rebuilt) and keeps chunk ids
    from being given twice."""
    db.execute("DROP TABLE IF EXISTS chunk_terms")
    db.execute(
        "CREATE TABLE term_log (seq INTEGER PRIMARY KEY AUTOINCREMENT, chunk INTEGER NOT NULL, op INTEGER NOT NULL)"
    )
    db.execute("CREATE TABLE term_state (id TEXT NOT NULL, next_chunk INTEGER NOT NULL)")
    db.execute("INSERT INTO term_state SELECT lower(hex(randomblob(16))), COALESCE(MAX(id), 0) + 1 FROM chunks")
    db.execute("INSERT INTO term_log (chunk, op) SELECT id, 1 FROM chunks ORDER BY id")

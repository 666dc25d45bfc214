"""The SQLite store's term index: a tantivy index in a directory beside the file, one entry per chunk (its id and terms).

It is derived data: SQLite holds the truth, and a term log in SQLite says which chunks to add or delete here. The
directory's `qa-terms.json` records which file it belongs to and the last log row it holds (written after each
tantivy commit, so it may lag behind the index, never run ahead of it: replaying a row twice does no harm).
BM25 (k1 1.2, b 0.75, Lucene's idf, statistics over the whole index) is tantivy's own.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import tantivy

__all__ = ["TermIndex"]

_FORMAT = 1  # of the schema and the state file; another one is rebuilt
_STATE = "qa-terms.json"
_TOKENIZER = "qa_terms"  # the terms come pre-made (qa.store.terms) and space-separated: split at spaces only
_HEAP = 64 << 20  # the writer's memory before it flushes a segment by itself


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("chunk", indexed=True, fast=True)
    builder.add_text_field("terms", tokenizer_name=_TOKENIZER, index_option="freq")
    return builder.build()


class TermIndex:
    """Chunks' terms in a tantivy index; written through one writer per directory (tantivy's lock), read by any."""

    def __init__(self, directory: Path, owner: str) -> None:
        self.directory = directory
        self._owner = owner  # the id of the SQLite file this index belongs to
        self._schema = _schema()
        self._index: tantivy.Index | None = None
        self._writer: tantivy.IndexWriter | None = None
        self.applied = 0  # the last term-log row committed here

    def open(self) -> str | None:
        """Open the index; None when it is usable, else why not ("is missing", "is damaged (...)", ...)."""
        try:
            state = json.loads((self.directory / _STATE).read_text(encoding="utf-8"))
            if not isinstance(state, dict) or state.get("format") != _FORMAT:
                return "is of another format"
            if state.get("owner") != self._owner:
                return "was made for another index file"
            index = tantivy.Index.open(str(self.directory))
        except FileNotFoundError:
            return "is missing"
        except (OSError, ValueError) as exc:
            return f"is damaged ({exc})"
        self._use(index)
        self.applied = int(state["applied"])
        return None

    def _use(self, index: tantivy.Index) -> None:
        index.register_tokenizer(_TOKENIZER, tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.whitespace()).build())
        index.config_reader("Manual")
        self._index = index

    def reset(self) -> None:
        """Make the index empty, taking its writer (the directory is made again)."""
        self.release()
        shutil.rmtree(self.directory, ignore_errors=True)
        self.directory.mkdir(parents=True)
        self._use(tantivy.Index(self._schema, path=str(self.directory), reuse=False))
        self.applied = 0
        if not self.acquire():
            raise OSError(f"{self.directory}: another process writes to the term index")

    @property
    def writing(self) -> bool:
        """Whether this process holds the index's writer."""
        return self._writer is not None

    def acquire(self) -> bool:
        """Take the index's writer unless another process (or store) holds it; whether this one does now."""
        if self._writer is None:
            assert self._index is not None
            try:
                self._writer = self._index.writer(_HEAP, 1)
            except ValueError as exc:
                if "LockBusy" not in str(exc):
                    raise
                return False
            try:  # what the writer before this one committed
                state = json.loads((self.directory / _STATE).read_text(encoding="utf-8"))
                self.applied = max(self.applied, int(state["applied"]))
            except (OSError, ValueError, KeyError, TypeError):
                pass  # none yet (the index is being made)
        return True

    def release(self) -> None:
        """Let the writer go (uncommitted changes are dropped)."""
        if self._writer is not None:
            self._writer.rollback()
            self._writer = None

    def delete(self, chunks: Sequence[int]) -> None:
        """Delete these chunks' entries (those added earlier through this writer included)."""
        assert self._writer is not None
        if chunks:
            self._writer.delete_documents_by_query(tantivy.Query.term_set_query(self._schema, "chunk", list(chunks)))

    def add(self, entries: Iterable[tuple[int, str]]) -> None:
        """Add (chunk id, space-separated terms) entries."""
        writer = self._writer
        assert writer is not None
        for chunk, terms in entries:
            doc = tantivy.Document()
            doc.add_unsigned("chunk", chunk)
            doc.add_text("terms", terms)
            writer.add_document(doc)

    def commit(self, applied: int) -> None:
        """Publish what was written, then record that log rows up to `applied` are in."""
        assert self._writer is not None
        self._writer.commit()
        tmp = self.directory / (_STATE + ".tmp")
        tmp.write_text(json.dumps({"format": _FORMAT, "owner": self._owner, "applied": applied}), encoding="utf-8")
        os.replace(tmp, self.directory / _STATE)
        self.applied = applied

    def search(self, terms: Sequence[str], limit: int) -> list[tuple[int, float]]:
        """The best `limit` (chunk id, BM25 score) for chunks holding any of `terms` (a repeated term counts again),
        as last committed by any process."""
        index = self._index
        assert index is not None
        index.reload()
        searcher = index.searcher()
        should = tantivy.Occur.Should
        query = tantivy.Query.boolean_query([(should, tantivy.Query.term_query(self._schema, "terms", t)) for t in terms])
        hits = searcher.search(query, limit, count=False).hits
        chunks = searcher.fast_field_values("chunk", [address for _, address in hits])
        return [(int(c), float(score)) for c, (score, _) in zip(chunks, hits, strict=True) if c is not None]

    def chunk_ids(self) -> set[int]:
        """Every chunk id in the index as last committed (for checks)."""
        index = self._index
        assert index is not None
        index.reload()
        searcher = index.searcher()
        hits = searcher.search(tantivy.Query.all_query(), max(searcher.num_docs, 1), count=False).hits
        return {int(c) for c in searcher.fast_field_values("chunk", [a for _, a in hits]) if c is not None}

    def close(self) -> None:
        """Let the writer go and the index be."""
        self.release()
        self._index = None

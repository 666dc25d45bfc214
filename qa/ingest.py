"""Bringing documents and files into a store: each file loaded on its own (a bad one is reported by name, not
fatal unless strict), unchanged files skipped by size, modification time and content hash, chunked and written in
bounded batches (memory does not grow with the corpus), files gone from a folder removed."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from qa.chunking import Chunk
from qa.documents import Document
from qa.errors import DocumentError, InputError
from qa.loaders import load
from qa.progress import Progress
from qa.settings import Settings
from qa.store import Entry, Known, Source, Store, text_sha256

__all__ = ["Chunker", "Failure", "IngestReport", "Progress", "cache_path", "ingest", "walk"]

logger = logging.getLogger("qa")

Chunker = Callable[[Sequence[tuple[str, str]]], list[list[Chunk]]]
# Documents are chunked and written in batches of about this many characters (or documents).
_BATCH_CHARS = 4 << 20
_BATCH_DOCUMENTS = 256
# Documents written per transaction, at most (a crash loses at most these; the next run writes them again).
_TRANSACTION_DOCUMENTS = 32
_TRANSACTION_CHARS = 1 << 20


@dataclass(frozen=True, slots=True)
class Failure:
    """A file that could not be indexed, and why."""

    path: str
    reason: str


@dataclass
class IngestReport:
    """What an `add` or `refresh` did."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    failed: list[Failure] = field(default_factory=list)
    chunks: int = 0  # chunks written
    seconds: float = 0.0

    def summary(self) -> str:
        """One line: files added, updated, unchanged, removed, failed; chunks written; seconds."""
        return (
            f"{self.added:,} added, {self.updated:,} updated, {self.unchanged:,} unchanged, {self.removed:,} removed, "
            f"{len(self.failed):,} failed; {self.chunks:,} chunks written in {self.seconds:.1f} s"
        )


@dataclass(frozen=True, slots=True)
class _File:
    shown: str  # the path as given (below a given folder), for loading and messages
    real: str  # absolute, symlinks of the given path resolved: what the store remembers
    id: str  # the document id, as qa.load names it


def _walk(paths: Sequence[Path]) -> list[_File]:
    """Every file to index (strings, not Path objects: a folder may hold a million files): a folder's files in
    name order, then its folders' in name order; hidden files and folders left out, as are links to folders (as
    `os.walk` does) and folders that cannot be listed."""
    found: list[_File] = []

    def scan(folder: str, real: str, prefix: str) -> None:
        try:
            with os.scandir(folder) as listing:
                entries = sorted((e for e in listing if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            return
        folders = []
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if not is_dir:
                found.append(_File(entry.path, real + entry.name, prefix + entry.name))
            elif not entry.is_symlink():
                folders.append(entry)
        for entry in folders:
            scan(entry.path, real + entry.name + os.sep, prefix + entry.name + "/")

    for root in paths:
        if root.is_dir():
            scan(str(root), os.path.join(os.path.realpath(root), ""), "")
        elif root.exists():
            found.append(_File(str(root), os.path.realpath(root), root.name))
        else:
            raise DocumentError(f"{root}: no such file or directory", path=str(root))
    return found


def walk(paths: str | Path | Iterable[str | Path]) -> list[tuple[Path, str]]:
    """Every file to index and its document id, as `qa.load` names them (a folder's files by their path below
    it, a file by its name); hidden files and folders (".name") are left out. A missing path is an error."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise InputError("no paths given")
    return [(Path(f.shown), f.id) for f in _walk([Path(p) for p in items])]


def cache_path(cache_dir: Path, paths: str | Path | Iterable[str | Path], settings_key: str) -> Path:
    """Where the cached index of these paths lives: one file per set of paths and chunking settings."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    key = json.dumps([sorted(str(Path(p).resolve()) for p in items), settings_key])
    return cache_dir / "indexes" / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.sqlite"


def _load_one(path: str, doc_id: str, settings: Settings | None) -> list[Document]:
    """The documents of one file (usually one), with ids made from `doc_id`."""
    docs = load(path, settings, progress=False)
    if len(docs) == 1:
        return [dataclasses.replace(docs[0], id=doc_id)]
    return [dataclasses.replace(d, id=f"{doc_id}#{n}") for n, d in enumerate(docs, 1)]


class _Writer:
    """Chunks documents a bounded batch at a time (chunking is faster in batches), and writes them one by one."""

    def __init__(self, store: Store, chunker: Chunker, report: IngestReport) -> None:
        self.store, self.chunker, self.report = store, chunker, report
        self.pending: list[tuple[Document, Source | None]] = []
        self.chars = 0

    def put(self, document: Document, source: Source | None) -> None:
        self.pending.append((document, source))
        self.chars += len(document.text)
        if self.chars >= _BATCH_CHARS or len(self.pending) >= _BATCH_DOCUMENTS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        chunked = self.chunker([(d.id, d.text) for d, _ in self.pending])
        # A few documents per transaction: each lands whole or not at all, a crash loses at most the few being
        # written (the next run of the same ingest writes them), and the cost of a commit is shared.
        group: list[Entry] = []
        chars = 0
        for (document, source), chunks in zip(self.pending, chunked, strict=True):
            group.append(Entry(document, chunks, source))
            chars += len(document.text)
            if len(group) >= _TRANSACTION_DOCUMENTS or chars >= _TRANSACTION_CHARS:
                self.store.add(group)
                group, chars = [], 0
        if group:
            self.store.add(group)
        self.report.chunks += sum(map(len, chunked))
        self.pending, self.chars = [], 0


def _check_unique(documents: Sequence[Document]) -> None:
    seen: set[str] = set()
    for d in documents:
        if d.id in seen:
            raise InputError(f"two documents share the id {d.id!r}; give them distinct ids")
        seen.add(d.id)


def ingest(
    store: Store,
    items: Document | str | Path | Iterable[Document | str | Path],
    chunker: Chunker,
    *,
    remove_missing: bool = False,
    strict: bool = False,
    progress: Progress | None = None,
    settings: Settings | None = None,
) -> IngestReport:
    """Add documents and files to `store`, skipping files unchanged since they were stored; with
    `remove_missing`, also remove stored files below the given paths that are gone. A file that cannot be
    loaded (by `qa.loaders`, under `settings`' limits) is reported in `failed` (and logged), or raised with
    `strict`. `progress(done, total)` counts the files: `(0, files)` first, then after each file is read (and
    queued for chunking and writing), the last once everything is written."""
    started = time.perf_counter()
    report = IngestReport()
    listed = [items] if isinstance(items, (Document, str, Path)) else list(items)
    documents = [i for i in listed if isinstance(i, Document)]
    _check_unique(documents)
    roots = [Path(i) for i in listed if not isinstance(i, Document)]
    files = _walk(roots)
    if store.path is not None:  # the index file itself, when it lies in a folder being indexed
        own = os.path.realpath(store.path)
        terms = os.path.join(own + ".terms", "")  # its term index's directory
        files = [
            f for f in files
            if f.real not in {own, own + "-wal", own + "-shm", own + "-journal"} and not f.real.startswith(terms)
        ]  # fmt: skip
    writer = _Writer(store, chunker, report)
    for document in documents:
        if store.get(document.id) is None:
            report.added += 1
        else:
            report.updated += 1
        writer.put(document, None)
    if roots:
        decider = _Files(store, writer, report, strict=strict, settings=settings)
        decider.run(files, progress)
        if remove_missing:
            writer.flush()
            _remove_missing(store, roots, decider.by_id.values(), {f.real for f in files}, report)
    writer.flush()
    if progress is not None and files:
        progress(len(files), len(files))
    report.seconds = time.perf_counter() - started
    return report


def _remove_missing(
    store: Store, roots: list[Path], known: Iterable[Known], present: set[str], report: IngestReport
) -> None:
    """Remove the stored documents read from files below `roots` that are no longer there. `known`: the
    documents stored before this run (those it added came from files that are present)."""
    resolved = [os.path.join(r.resolve(), "") for r in roots]
    gone = [
        stored.id for stored in known if stored.source is not None and stored.source.path not in present
        and any(stored.source.path == r[:-1] or stored.source.path.startswith(r) for r in resolved)
    ]  # fmt: skip
    if gone:
        report.removed += store.remove(gone)


class _Files:
    """Decides, file by file, whether to skip, add or replace it."""

    def __init__(
        self, store: Store, writer: _Writer, report: IngestReport, *, strict: bool, settings: Settings | None
    ) -> None:
        self.store, self.writer, self.report, self.strict, self.settings = store, writer, report, strict, settings
        self.by_path: dict[str, list[Known]] = {}
        self.by_id: dict[str, Known] = {}
        for known in store.known():
            self.by_id[known.id] = known
            if known.source is not None:
                self.by_path.setdefault(known.source.path, []).append(known)
        # The size and time each stored file had, where all of its documents agree: an unchanged file is known
        # by one lookup (a refresh of a large folder is mostly these).
        self.seen: dict[str, tuple[int, int]] = {
            path: (s.size, s.mtime_ns) for path, old in self.by_path.items()
            if (s := old[0].source) is not None and all(o.source == s for o in old)
        }  # fmt: skip
        self.taken: dict[str, str] = {}  # document id -> the file that gave it in this run

    def run(self, files: list[_File], progress: Progress | None) -> None:
        if progress is not None:
            progress(0, len(files))
        for done, file in enumerate(files, 1):
            self.one(file)
            if progress is not None and done < len(files):  # the last: when all is written (ingest)
                progress(done, len(files))

    def fail(self, path: str, reason: str, exc: Exception) -> None:
        if self.strict:
            raise exc
        logger.info("skipped %s: %s", path, reason)
        self.report.failed.append(Failure(path, reason))

    def one(self, file: _File) -> None:
        report, path = self.report, file.shown
        try:
            st = os.stat(path)
        except OSError as exc:
            reason = f"cannot read file: {exc.strerror or exc}"
            self.fail(path, reason, DocumentError(f"{path}: {reason}", path=path))
            return
        if self.seen.get(file.real) == (st.st_size, st.st_mtime_ns):
            report.unchanged += 1
            return
        source = Source(file.real, st.st_size, st.st_mtime_ns)
        old = self.by_path.get(source.path, [])
        try:
            docs = _load_one(path, file.id, self.settings)
        except DocumentError as exc:
            self.fail(path, str(exc).removeprefix(f"{path}: "), exc)
            return
        if (owner := self._owner_of_clash(docs, source, old)) is not None:
            clash, other = owner
            reason = f"its document id {clash!r} is already used by {other}"
            self.fail(path, reason, InputError(f"{path}: {reason}; index them separately"))
            return
        self.taken.update((d.id, source.path) for d in docs)
        if old and sorted(o.sha256 for o in old) == sorted(text_sha256(d.text) for d in docs):
            for o in old:  # touched, not changed: remember the new size and time, keep the chunks
                self.store.set_source(o.id, source)
            report.unchanged += 1
            return
        if old:
            report.updated += 1
            if stale := {o.id for o in old} - {d.id for d in docs}:
                self.store.remove(stale)
        else:
            report.added += 1
        for d in docs:
            self.writer.put(d, source)

    def _owner_of_clash(self, docs: list[Document], source: Source, old: list[Known]) -> tuple[str, str] | None:
        """(id, other file) when a document id of this file belongs to another file that still exists."""
        for d in docs:
            if (other := self.taken.get(d.id)) is not None and other != source.path:
                return d.id, other
            known = self.by_id.get(d.id)
            if known is not None and known not in old and known.source is not None:
                if Path(known.source.path).exists():
                    return d.id, known.source.path
        return None

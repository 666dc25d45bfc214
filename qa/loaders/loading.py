"""Turning paths into Documents: folders walked, each file read by its loader, bad files named with the reason."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, overload

from qa.documents import Document
from qa.errors import DocumentError, InputError
from qa.loaders.base import Loader, LoadOptions, one_line, size
from qa.loaders.docx import DOCXLoader
from qa.loaders.html import HTMLLoader
from qa.loaders.markdown import MarkdownLoader
from qa.loaders.pdf import PDFLoader
from qa.loaders.text import TextLoader
from qa.progress import Progress, reporting
from qa.settings import Settings

__all__ = ["LOADERS", "LoadResult", "iter_load", "load", "loader_for", "supported_suffixes"]

logger = logging.getLogger("qa")

# Tried in this order when sniffing a file without a suffix; text, the fallback, last.
LOADERS: tuple[Loader, ...] = (PDFLoader(), DOCXLoader(), HTMLLoader(), MarkdownLoader(), TextLoader())


def supported_suffixes(loaders: Sequence[Loader] = LOADERS) -> tuple[str, ...]:
    """Every suffix some loader reads."""
    return tuple(s for loader in loaders for s in loader.suffixes)


def loader_for(path: Path, data: bytes | None = None, loaders: Sequence[Loader] = LOADERS) -> Loader | None:
    """The loader for `path`: by suffix; for a file without one, the first whose sniff accepts `data`."""
    suffix = path.suffix.lower()
    if suffix:
        return next((loader for loader in loaders if suffix in loader.suffixes), None)
    if data is None:
        return None
    return next((loader for loader in loaders if loader.sniff(data)), None)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What `load(..., errors="collect")` read: the documents, and one DocumentError per file that failed."""

    documents: list[Document] = field(default_factory=list)
    failed: list[DocumentError] = field(default_factory=list)


def _options(settings: Settings, password: str | None) -> LoadOptions:
    if password is None and settings.pdf_password is not None:
        password = settings.pdf_password.get_secret_value()
    return LoadOptions(
        max_document_chars=settings.max_document_chars,
        max_unpacked_bytes=settings.max_unpacked_bytes,
        password=password,
    )


def _walk(folder: Path) -> list[Path]:
    """Files below `folder`, hidden ones (and those in hidden folders) left out, in a stable order."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )  # fmt: skip


def _read(
    path: Path, loader: Loader | None, settings: Settings, options: LoadOptions, doc_id: str, loaders: Sequence[Loader]
) -> Document:
    """One file as a Document (`loader` None: sniffed among `loaders`); every failure is a DocumentError naming it."""
    name = str(path)
    try:
        length = path.stat().st_size
        if length > settings.max_file_bytes:
            raise DocumentError(
                f"{name}: file is {size(length)}, over the {size(settings.max_file_bytes)} limit "
                "(Settings.max_file_bytes)",
                path=name,
            )
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{name}: cannot read file: {exc.strerror or exc}", path=name) from exc
    if loader is None:
        loader = loader_for(path, data, loaders)
        if loader is None:
            raise DocumentError(f"{name}: file type not recognised (no suffix, and not text)", path=name)
    if not data.strip():
        raise DocumentError(f"{name}: file is empty", path=name)
    try:
        extracted = loader.extract(data, options)
    except DocumentError as exc:
        raise DocumentError(f"{name}: {exc}", path=name) from exc
    except Exception as exc:  # a library's own error on a malformed file: that file fails, not the batch
        logger.debug("loading %s failed", name, exc_info=True)
        reason = one_line(f"{type(exc).__name__}: {exc}")[:300]
        raise DocumentError(f"{name}: cannot read this {loader.kind} file ({reason})", path=name) from exc
    if not extracted.text.strip():
        raise DocumentError(f"{name}: file is empty", path=name)
    metadata = {"path": name, "type": loader.kind, **extracted.metadata}
    return Document(text=extracted.text, id=doc_id, metadata=metadata, locations=extracted.locations)


def _unsupported(path: Path, loaders: Sequence[Loader]) -> DocumentError:
    suffix = path.suffix.lower() or "(no suffix)"
    return DocumentError(
        f"{path}: unsupported file type {suffix!r}; supported: {', '.join(supported_suffixes(loaders))}",
        path=str(path),
    )


def _tasks(
    items: Sequence[Path], loaders: Sequence[Loader], skip_unsupported: bool
) -> Iterator[tuple[Path, Loader | None, str] | DocumentError]:
    """(file, its loader or None to sniff, document id) for every file to read, or the error for a path."""
    for path in items:
        if not path.exists():
            yield DocumentError(f"{path}: no such file or directory", path=str(path))
        elif path.is_dir():
            files = _walk(path)
            readable = 0
            for file in files:
                loader = loader_for(file, None, loaders)
                if loader is None and file.suffix:
                    if not skip_unsupported:
                        yield _unsupported(file, loaders)
                    continue
                readable += 1
                yield file, loader, file.relative_to(path).as_posix()
            if not readable:
                yield DocumentError(
                    f"{path}: directory has no files to load ({', '.join(supported_suffixes(loaders))})",
                    path=str(path),
                )
        else:
            loader = loader_for(path, None, loaders)
            if loader is None and path.suffix:
                yield _unsupported(path, loaders)
            else:
                yield path, loader, path.name


def _paths(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise InputError("no paths given")
    return [Path(p) for p in items]


def iter_load(
    paths: str | Path | Iterable[str | Path],
    settings: Settings | None = None,
    *,
    password: str | None = None,
    progress: Progress | bool | None = None,
    skip_unsupported: bool = False,
    loaders: Sequence[Loader] = LOADERS,
) -> Iterator[Document | DocumentError]:
    """Documents one at a time as files are read, and a DocumentError (yielded, not raised) for each that fails.

    Folders are walked (hidden files left out); a file in a folder whose suffix no loader reads is yielded as a
    DocumentError unless `skip_unsupported`. `progress`: a callback told `(files done, files)`, or True for a bar
    on stderr (None, the default: when stderr is a terminal). Document ids are unique per call: a second file with an id already seen is yielded as a DocumentError.
    """
    settings = settings if settings is not None else Settings.from_env()
    options = _options(settings, password)
    tasks = list(_tasks(_paths(paths), loaders, skip_unsupported))
    files = sum(1 for t in tasks if not isinstance(t, DocumentError))
    seen: set[str] = set()
    with reporting(progress, default=True) as report:
        if report is not None:
            report(0, files)
        done = 0
        for task in tasks:
            if isinstance(task, DocumentError):
                yield task
                continue
            path, loader, doc_id = task
            try:
                if doc_id in seen:
                    raise DocumentError(
                        f"{path}: two documents share the id {doc_id!r}; give the files distinct names",
                        path=str(path),
                    )
                document = _read(path, loader, settings, options, doc_id, loaders)
                seen.add(doc_id)
            except DocumentError as exc:
                logger.info("%s", exc)
                yield exc
            else:
                yield document
            finally:
                done += 1
                if report is not None:
                    report(done, files)


@overload
def load(
    paths: str | Path | Iterable[str | Path],
    settings: Settings | None = None,
    *,
    errors: Literal["raise"] = "raise",
    password: str | None = None,
    progress: Progress | bool | None = None,
    loaders: Sequence[Loader] = LOADERS,
) -> list[Document]: ...
@overload
def load(
    paths: str | Path | Iterable[str | Path],
    settings: Settings | None = None,
    *,
    errors: Literal["collect"],
    password: str | None = None,
    progress: Progress | bool | None = None,
    loaders: Sequence[Loader] = LOADERS,
) -> LoadResult: ...
def load(
    paths: str | Path | Iterable[str | Path],
    settings: Settings | None = None,
    *,
    errors: Literal["raise", "collect"] = "raise",
    password: str | None = None,
    progress: Progress | bool | None = None,
    loaders: Sequence[Loader] = LOADERS,
) -> list[Document] | LoadResult:
    """Load files and folders (text, Markdown, HTML, PDF, DOCX) as Documents.

    errors="raise": the first file that cannot be read raises its DocumentError; files of unsupported types inside
    folders are skipped. errors="collect": returns a LoadResult with the documents read and one DocumentError per
    file that was not (unsupported types in folders included); it raises only when nothing at all was read.
    `password` opens encrypted PDFs (default: Settings.pdf_password). `progress`: a callback told `(files done,
    files)`, True for a bar on stderr, False for none (None, the default: a bar when stderr is a terminal). `loaders`: the file types read, in sniffing
    order (add your own Loader in front of LOADERS).
    """
    if errors not in ("raise", "collect"):
        raise InputError(f"errors must be 'raise' or 'collect', not {errors!r}")
    collect = errors == "collect"
    result = LoadResult()
    items = iter_load(
        paths, settings, password=password, progress=progress, skip_unsupported=not collect, loaders=loaders
    )
    for item in items:
        if isinstance(item, Document):
            result.documents.append(item)
        elif collect:
            result.failed.append(item)
        else:
            raise item
    if collect:
        if not result.documents:
            raise result.failed[0] if len(result.failed) == 1 else DocumentError(
                f"no document could be read: {len(result.failed)} file(s) failed, the first: {result.failed[0]}"
            )
        return result
    return result.documents

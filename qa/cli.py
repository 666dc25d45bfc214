"""The `qa` command: `qa ask QUESTION PATH...`, `qa ask --questions FILE PATH...`, `qa index PATH... --db FILE` and
`qa eval DATASET_DIR`."""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qa.errors import InputError, QAError, StoreError
from qa.ingest import IngestReport, cache_path
from qa.loaders import load
from qa.pipeline import Index
from qa.progress import Stages, reporting
from qa.redact import RedactingFilter, redact, url_password
from qa.settings import Settings
from qa.tokens import encoding_for_model

__all__ = ["main"]

logger = logging.getLogger("qa")


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("model", "base_url", "top_k", "max_context_tokens", "chunk_tokens", "local_model")
    return {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}


def _refresh(index: Index, paths: list[str], args: argparse.Namespace) -> IngestReport:
    """Bring `index` up to date with `paths` (one bar on a terminal: files loaded, then chunks embedded); each file
    that failed is named on stderr."""
    report = index.refresh(paths, strict=args.strict, progress=sys.stderr.isatty())
    for failure in report.failed:
        print(f"qa: skipped {failure.path}: {failure.reason}", file=sys.stderr)
    logger.info("index %s: %s", index.store.path, report.summary())
    return report


def _memory_index(args: argparse.Namespace, settings: Settings) -> Index:
    """The PATHs loaded and indexed in memory (one bar on a terminal, as `_refresh`)."""
    with reporting(sys.stderr.isatty(), default=False) as bar:
        stages = Stages(bar)
        loading = stages.stage("loading", "file") or False
        if args.strict:
            documents = load(args.paths, settings, progress=loading)
        else:
            loaded = load(args.paths, settings, errors="collect", progress=loading)
            for failure in loaded.failed:
                print(f"qa: skipped {failure}", file=sys.stderr)
            documents = loaded.documents
        return Index(documents, settings, progress=stages.stage("embedding", "chunk") or False)


def _cached_index(paths: list[str], settings: Settings) -> Index:
    """The index kept in the cache directory for these paths (a damaged one is made again)."""
    encoding = encoding_for_model(None if settings.uses_local_model else settings.model_name).name
    path = cache_path(settings.resolved_cache_dir, paths, f"{settings.chunk_tokens}/{settings.chunk_overlap}/{encoding}")
    try:
        return Index.open(path, settings, progress=sys.stderr.isatty())
    except StoreError as exc:
        logger.warning("cached index %s cannot be used (%s); making it again", path, exc)
        for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            stale.unlink(missing_ok=True)
        shutil.rmtree(path.with_name(path.name + ".terms"), ignore_errors=True)
        return Index.open(path, settings, progress=sys.stderr.isatty())


def _open_index(args: argparse.Namespace, settings: Settings) -> Index:
    if args.db is not None:
        index = Index.open(args.db, settings, progress=sys.stderr.isatty())
        if args.paths:
            _refresh(index, args.paths, args)
        return index
    if not args.paths:
        raise InputError("give files or folders to answer from, or an index file with --db FILE")
    if args.no_cache:
        return _memory_index(args, settings)
    index = _cached_index(args.paths, settings)
    _refresh(index, args.paths, args)
    if len(index) == 0:
        index.close()
        raise InputError("none of the files given could be indexed")
    return index


def _run_index(args: argparse.Namespace) -> int:
    settings = Settings.from_env(**_settings_overrides(args))
    with Index.open(args.db, settings, progress=sys.stderr.isatty()) as index:
        report = _refresh(index, args.paths, args)
        print(f"{args.db}: {report.summary()}; {len(index):,} documents in the index")
    return 0


def _run_ask(args: argparse.Namespace) -> int:
    if args.questions is not None:
        if args.question is not None:
            args.paths.insert(0, args.question)  # with --questions, every positional argument is a path
        questions = _read_questions(args.questions)
    elif args.question is None:
        raise InputError("give a question, or --questions FILE")
    overrides = _settings_overrides(args)
    if args.no_cache:
        overrides["cache"] = False
    settings = Settings.from_env(**overrides)
    with _open_index(args, settings) as index:
        if args.questions is not None:
            return _ask_many(index, questions, args)
        if not args.json and sys.stdout.isatty():
            answer = _stream(index, args.question)
        else:
            answer = index.ask(args.question)
            print(answer.model_dump_json() if args.json else answer)
    if not args.json and answer.found and not answer.verified:
        print("  (unverified: no sentence of the documents states this answer)")
    return 0


def _read_questions(path: str) -> list[str]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the questions: {exc.strerror or exc}") from exc
    questions = [line.strip() for line in text.splitlines() if line.strip()]
    if not questions:
        raise InputError(f"{path}: no questions (one per line)")
    return questions


def _stream(index: Any, question: str) -> Any:
    """Print the answer as the model writes it, then its verified citations."""
    from qa.streaming import Final, Retraction, TextDelta

    shown = ""
    answer: Any = None
    for event in index.stream(question):
        if isinstance(event, TextDelta):
            shown += event.text
            print(event.text, end="", flush=True)
        elif isinstance(event, Retraction):
            if shown:
                print(f"\n  (withdrawn: {event.reason})", flush=True)
            shown = ""
        elif isinstance(event, Final):
            answer = event.answer
    lines = str(answer).splitlines()
    if shown and answer.found and lines and lines[0] == shown:
        print()
        lines = lines[1:]  # the answer is on screen already; add its citations
    elif shown:
        print()
    for line in lines:
        print(line)
    return answer


def _ask_many(index: Any, questions: list[str], args: argparse.Namespace) -> int:
    """Answer each question (JSONL with --json); an error is reported in its place and the exit status is 1."""
    from qa.answer import Answer

    tqdm = importlib.import_module("tqdm").tqdm  # it ships no type information

    with tqdm(total=len(questions), unit="question", disable=not sys.stderr.isatty(), file=sys.stderr) as bar:
        results = index.ask_many(questions, concurrency=args.concurrency, progress=lambda done, total: bar.update(1))
    failed = 0
    for question, result in zip(questions, results, strict=True):
        if isinstance(result, Answer):
            print(result.model_dump_json() if args.json else f"Q: {question}\n{result}\n")
            continue
        failed += 1
        if args.json:
            print(json.dumps({"question": question, "error": str(result), "error_type": type(result).__name__}))
        else:
            print(f"Q: {question}\nqa: error: {result}\n")
    return 1 if failed else 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa", description="Answer questions about documents, with verified citations.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: every LLM call)")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser(
        "ask", help="answer a question about files (text, Markdown, HTML, PDF, DOCX) or folders, or an index file"
    )
    ask.add_argument("question", nargs="?", help="the question to answer (none with --questions)")
    ask.add_argument(
        "paths", nargs="*",
        help="files or folders to answer from (indexed once into the cache directory, then refreshed by change)",
    )  # fmt: skip
    ask.add_argument("--db", help="an index file made by `qa index` (PATHs given too are refreshed into it)")
    ask.add_argument(
        "--no-cache", dest="no_cache", action="store_true",
        help="no caches: index the PATHs in memory only, and ask the model even for a question answered before",
    )  # fmt: skip
    ask.add_argument("--json", action="store_true", help="print the Answer as JSON (one line per question)")
    ask.add_argument(
        "--strict", action="store_true", help="fail on the first file that cannot be read (default: skip it, say why)"
    )
    ask.add_argument("--questions", metavar="FILE", help="answer every line of FILE (- for stdin) as a question")
    ask.add_argument("--concurrency", type=int, default=4, help="questions in flight at once with --questions")
    ask.add_argument("--model", help="model name (default: $QA_MODEL, or the local model when no server is set)")
    ask.add_argument("--base-url", dest="base_url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    ask.add_argument("--local-model", dest="local_model", help="a GGUF file to run locally ($QA_LOCAL_MODEL)")
    ask.add_argument("--top-k", dest="top_k", type=int, help="BM25 hits considered for the prompt")
    ask.add_argument("--chunk-tokens", dest="chunk_tokens", type=int, help="tokens per chunk")
    ask.add_argument(
        "--max-context-tokens", dest="max_context_tokens", type=int, help="cap on passage tokens in the prompt"
    )
    ask.set_defaults(handler=_run_ask)

    index = sub.add_parser(
        "index", help="index files and folders into an index file (again: only what changed; gone files removed)"
    )
    index.add_argument("paths", nargs="+", help="files or folders to index")
    index.add_argument("--db", required=True, help="the index file (SQLite), created when missing")
    index.add_argument("--strict", action="store_true", help="fail on the first file that cannot be indexed")
    index.add_argument("--chunk-tokens", dest="chunk_tokens", type=int, help="tokens per chunk")
    index.set_defaults(handler=_run_index)

    from qa import evaluate

    evaluate.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = _parser().parse_args(argv)
    # Every log line and error is redacted of the keys in the environment (and credential-shaped text),
    # whichever library logged it.
    secrets = Settings.env_secrets() + tuple(s for s in [url_password(getattr(args, "base_url", None))] if s)
    if args.verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        handler.addFilter(RedactingFilter(secrets))
        logging.basicConfig(level=logging.DEBUG if args.verbose > 1 else logging.INFO, handlers=[handler])
    try:
        return int(args.handler(args))
    except QAError as exc:
        print(f"qa: error: {redact(str(exc), secrets)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130

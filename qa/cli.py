"""The `qa` command: `qa ask QUESTION PATH...` and `qa eval DATASET_DIR`."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from typing import Any

from qa.errors import QAError
from qa.redact import RedactingFilter, redact, url_password

__all__ = ["main"]


def _settings_overrides(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("model", "base_url", "top_k", "max_context_tokens", "chunk_tokens", "local_model")
    return {k: getattr(args, k, None) for k in keys if getattr(args, k, None) is not None}


def _run_ask(args: argparse.Namespace) -> int:
    from qa.pipeline import Index
    from qa.settings import Settings

    from qa.loaders import load

    settings = Settings.from_env(**_settings_overrides(args))
    if args.strict:
        documents = load(args.paths, settings)
    else:  # a folder of reports is answered from the files that can be read; each other one is named
        loaded = load(args.paths, settings, errors="collect")
        for failure in loaded.failed:
            print(f"qa: skipped {failure}", file=sys.stderr)
        documents = loaded.documents
    index = Index(documents, settings)
    answer = index.ask(args.question)
    if args.json:
        print(answer.model_dump_json())
        return 0
    print(answer)
    if not answer.found:
        return 0
    if not answer.verified:
        print("  (some citations the model gave could not be verified and were dropped)")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qa", description="Answer questions about documents, with verified citations.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log progress (-vv: every LLM call)")
    sub = parser.add_subparsers(dest="command", required=True)

    ask = sub.add_parser("ask", help="answer a question about files (text, Markdown, HTML, PDF, DOCX) or folders")
    ask.add_argument("question", help="the question to answer")
    ask.add_argument("paths", nargs="+", help="files or folders to answer from")
    ask.add_argument("--json", action="store_true", help="print the Answer as JSON")
    ask.add_argument(
        "--strict", action="store_true", help="fail on the first file that cannot be read (default: skip it, say why)"
    )
    ask.add_argument("--model", help="model name (default: $QA_MODEL, or the local model when no server is set)")
    ask.add_argument("--base-url", dest="base_url", help="OpenAI-compatible endpoint (default: $OPENAI_BASE_URL)")
    ask.add_argument("--local-model", dest="local_model", help="a GGUF file to run locally ($QA_LOCAL_MODEL)")
    ask.add_argument("--top-k", dest="top_k", type=int, help="BM25 hits considered for the prompt")
    ask.add_argument("--chunk-tokens", dest="chunk_tokens", type=int, help="tokens per chunk")
    ask.add_argument(
        "--max-context-tokens", dest="max_context_tokens", type=int, help="cap on passage tokens in the prompt"
    )
    ask.set_defaults(handler=_run_ask)

    from qa import evaluate

    evaluate.add_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    from qa.settings import Settings

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

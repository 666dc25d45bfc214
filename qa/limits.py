"""Limits on hostile or runaway input: question length, document count and size, reply size and JSON nesting."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

from qa.errors import InputError, ReplyTooLargeError
from qa.settings import Settings

if TYPE_CHECKING:
    from qa.documents import Document

__all__ = ["MAX_CHARS_PER_TOKEN", "check_documents", "check_question", "check_reply", "json_depth", "too_deep"]

MAX_CHARS_PER_TOKEN = 16
"""A reply of n tokens is far shorter than 16 n characters; a longer one did not respect max_tokens."""


def check_question(question: object, settings: Settings) -> str:
    """The question, stripped; InputError when it is not text, empty, or over max_question_chars."""
    if not isinstance(question, str) or not question.strip():
        raise InputError("the question is empty")
    question = question.strip()
    if len(question) > settings.max_question_chars:
        raise InputError(
            f"the question is {len(question):,} characters long, over the limit of {settings.max_question_chars:,} "
            "(Settings.max_question_chars)"
        )
    return question


def check_documents(documents: Sequence[Document], settings: Settings) -> None:
    """InputError when there are more documents than max_documents or one is over max_document_chars."""
    if len(documents) > settings.max_documents:
        raise InputError(
            f"{len(documents):,} documents given, over the limit of {settings.max_documents:,} (Settings.max_documents)"
        )
    for doc in documents:
        if len(doc.text) > settings.max_document_chars:
            raise InputError(
                f"document {doc.id!r} is {len(doc.text):,} characters long, over the limit of "
                f"{settings.max_document_chars:,} (Settings.max_document_chars)"
            )


def check_reply(content: str, settings: Settings) -> None:
    """ReplyTooLargeError when a reply is longer than the completion budget allows."""
    limit = settings.max_answer_tokens * MAX_CHARS_PER_TOKEN
    if len(content) > limit:
        raise ReplyTooLargeError(
            f"the model's reply is {len(content):,} characters long, more than a completion budget of "
            f"{settings.max_answer_tokens} tokens allows (Settings.max_answer_tokens): the server ignored max_tokens"
        )


def json_depth(text: str, stop_above: int | None = None) -> int:
    """How deeply the JSON in `text` nests arrays and objects (strings skipped); stops counting past `stop_above`."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if stop_above is not None and deepest > stop_above:
                    return deepest
        elif ch in "]}" and depth > 0:
            depth -= 1
    return deepest


def too_deep(title: str, limit: int) -> ValidationError:
    """The validation error for a reply nested over `limit` levels (reported and re-asked like any invalid reply)."""
    error = PydanticCustomError("json_too_deep", "the reply nests JSON over {limit} levels deep", {"limit": limit})
    details: list[InitErrorDetails] = [{"type": error, "loc": (), "input": None}]
    return ValidationError.from_exception_data(title, details)

"""The exceptions `qa` raises, all rooted at `QAError`.

    QAError
    ├── ConfigurationError        settings that cannot work (bad values, missing model data)
    ├── InputError                the caller's input: empty question, empty document
    │   └── DocumentError         a file that cannot be read (.path): missing, unsupported, encrypted, scanned,
    │                             corrupt, a zip bomb, too large, binary with a text suffix
    ├── StoreError                an index file that cannot be used: not a qa index, corrupt, newer schema (carries path)
    ├── LLMError                  talking to the model failed (carries status_code, request_id, attempts)
    │   ├── AuthenticationError   401 / 403: raised at once, never retried
    │   ├── RequestRejectedError  400 / 404 / 422 and other client errors: raised at once
    │   ├── RateLimitError        429 still returned after every retry
    │   ├── ServerError           5xx still returned after every retry
    │   ├── LLMTimeoutError       the request timed out on every attempt
    │   ├── LLMConnectionError    the server could not be reached on every attempt
    │   └── ReplyTooLargeError    a reply longer than the completion budget allows (the server ignored max_tokens)
    └── AnswerValidationError     the model never produced output that parses against the schema
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AnswerValidationError",
    "AuthenticationError",
    "ConfigurationError",
    "DocumentError",
    "InputError",
    "LLMConnectionError",
    "LLMError",
    "LLMTimeoutError",
    "QAError",
    "RateLimitError",
    "ReplyTooLargeError",
    "RequestRejectedError",
    "ServerError",
    "StoreError",
]


class QAError(Exception):
    """Base class of every error raised by `qa`."""


class ConfigurationError(QAError):
    """Settings or environment that cannot work."""


class InputError(QAError, ValueError):
    """The caller's input is unusable (empty question, empty document...)."""


class DocumentError(InputError):
    """A document file cannot be loaded."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class StoreError(QAError):
    """An index file (a `Store`) that cannot be opened, read or written; the message names the file."""

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class LLMError(QAError):
    """Talking to the language model failed."""

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        request_id: str | None = None,
        attempts: int = 1,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.request_id = request_id
        self.attempts = attempts
        self.body = body


class AuthenticationError(LLMError):
    """The server refused the credentials (401/403)."""


class RequestRejectedError(LLMError):
    """The server rejected the request as invalid (400/404/422...)."""


class RateLimitError(LLMError):
    """Still rate limited (429) after every retry."""


class ServerError(LLMError):
    """Still failing with a 5xx status after every retry."""


class LLMTimeoutError(LLMError):
    """The request timed out on every attempt."""


class LLMConnectionError(LLMError):
    """The server could not be reached on every attempt."""


class ReplyTooLargeError(LLMError):
    """A reply longer than the completion budget (max_answer_tokens) allows: the server ignored max_tokens."""


class AnswerValidationError(QAError):
    """The model never produced output that parses against the answer schema."""

    def __init__(
        self,
        message: str,
        *,
        attempts: int,
        last_output: str | None,
        errors: list[str],
        usage: Any = None,
    ) -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_output = last_output
        self.errors = errors
        self.usage = usage

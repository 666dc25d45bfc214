"""Keeping secrets out of messages and logs: known secret values and credential-shaped text are replaced."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

__all__ = ["REDACTED", "RedactingFilter", "redact", "redact_data", "url_password"]

REDACTED = "[redacted]"
# Shorter "secrets" would redact ordinary words; no real key is this short.
_MIN_SECRET = 6

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values ("Authorization: Basic ...", "Bearer ...").
    (re.compile(r"""(?i)\b(authorization["']?\s*[=:]\s*["']?)(?:[a-z]+\s+)?[^\s"',;}]+"""), rf"\1{REDACTED}"),
    (re.compile(r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}"), rf"\1{REDACTED}"),
    # OpenAI-style keys, whole or masked the way servers echo them (sk-proj-****abcd).
    (re.compile(r"\b(?:sk|pk|rk)-[A-Za-z0-9_*.-]{6,}"), REDACTED),
    # key=value and "key": "value" pairs named like credentials.
    (
        re.compile(r"""(?i)\b((?:api[_-]?key|password|passwd|secret|access[_-]?token)["']?\s*[=:]\s*["']?)[^\s"',;&}]+"""),
        rf"\1{REDACTED}",
    ),
    # Passwords in URLs: scheme://user:password@host.
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@"), rf"\1{REDACTED}@"),
)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with every one of `secrets` and anything shaped like a credential replaced by "[redacted]"."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_SECRET}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def url_password(url: str | None) -> str | None:
    """The password in a URL's user info (scheme://user:password@host), if any."""
    try:
        return urlsplit(url).password if url else None
    except ValueError:
        return None


def redact_data(data: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of JSON-like `data` (dicts, lists, strings) with `redact` applied to every string in it."""
    secrets = tuple(secrets)
    if isinstance(data, str):
        return redact(data, secrets)
    if isinstance(data, dict):
        return {redact(str(k), secrets) if isinstance(k, str) else k: redact_data(v, secrets) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [redact_data(v, secrets) for v in data]
    return data


class RedactingFilter(logging.Filter):
    """A handler filter that redacts every record's final message, whichever library logged it."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = tuple(secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        """Replace the record's message by its redacted text (and drop a traceback that holds a secret)."""
        message = record.getMessage()
        record.msg, record.args = redact(message, self.secrets), None
        if record.exc_info and record.exc_info[1] is not None:
            exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info, record.exc_text = None, redact(exc_text, self.secrets)
        return True

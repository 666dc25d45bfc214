"""The response cache: LLM replies kept in SQLite by request, so an identical question costs no LLM call.

The key is the whole request as it would be sent (messages, which carry the passages' text, the JSON schema, the
logprobs asked for) together with the model and every setting that shapes the reply; so a question over an edited
document, or with other settings, is a miss. A hit is only the reply text: the pipeline parses and verifies it
against the current passages exactly as it does a fresh reply. Size is bounded: the least recently used entries go
first.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from qa.llm import LLM, LLMRequest, LLMResponse, TokenLogprob
from qa.settings import Settings
from qa.streaming import apieces, pieces

__all__ = ["CachingLLM", "ResponseCache", "cache_key_settings"]

logger = logging.getLogger("qa")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    size INTEGER NOT NULL,
    created REAL NOT NULL,
    used REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS responses_used ON responses (used);
"""
# Settings that do not change what the model is asked (where, how patiently, with which key), or are the cache's own.
_NOT_IN_KEY = frozenset(
    {
        "api_key", "timeout", "max_retries", "retry_initial_wait", "retry_max_wait", "retry_total_seconds",
        "cache", "cache_max_mb", "cache_dir", "local_threads", "local_amx", "pdf_password", "local_kv_cache_mb",
    }
)  # fmt: skip


def cache_key_settings(settings: Settings) -> dict[str, Any]:
    """The settings that shape a reply, and for the bundled local model the checksum of its weights."""
    values = settings.model_dump(mode="json", exclude=set(_NOT_IN_KEY))
    values["model_name"] = settings.model_name
    if settings.uses_local_model:
        from qa.local.registry import spec_for  # no llama.cpp import

        spec = spec_for(settings.local_model)
        values["local_weights"] = spec.sha256 if spec is not None else str(settings.local_model)
    return values


class ResponseCache:
    """LLM replies in one SQLite file, looked up by a request's digest, bounded to `max_bytes` of reply text."""

    def __init__(self, path: Path, *, max_bytes: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def get(self, key: str) -> LLMResponse | None:
        """The reply stored for `key`, or None."""
        with self._lock:
            try:
                db = self._connect()
                row = db.execute("SELECT reply FROM responses WHERE key = ?", (key,)).fetchone()
                if row is None:
                    return None
                db.execute("UPDATE responses SET used = ? WHERE key = ?", (time.time(), key))
            except sqlite3.Error as exc:  # a broken cache costs a call, never an answer
                logger.warning("response cache %s unreadable: %s", self.path, exc)
                return None
        return _decode(row[0])

    def put(self, key: str, response: LLMResponse) -> None:
        """Store `response` for `key`, then drop the least recently used replies beyond the size bound."""
        reply = json.dumps(asdict(response), separators=(",", ":"))
        now = time.time()
        with self._lock:
            try:
                db = self._connect()
                db.execute(
                    "INSERT OR REPLACE INTO responses (key, reply, size, created, used) VALUES (?, ?, ?, ?, ?)",
                    (key, reply, len(reply), now, now),
                )
                (total,) = db.execute("SELECT COALESCE(SUM(size), 0) FROM responses").fetchone()
                if total > self.max_bytes:
                    self._evict(db, total - self.max_bytes)
            except sqlite3.Error as exc:
                logger.warning("response cache %s not written: %s", self.path, exc)

    @staticmethod
    def _evict(db: sqlite3.Connection, excess: int) -> None:
        freed, doomed = 0, []
        for key, size in db.execute("SELECT key, size FROM responses ORDER BY used"):
            if freed >= excess:
                break
            doomed.append((key,))
            freed += size
        db.executemany("DELETE FROM responses WHERE key = ?", doomed)

    def __len__(self) -> int:
        with self._lock:
            (count,) = self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()
        return int(count)

    def close(self) -> None:
        """Close the database connection."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


def _decode(text: str) -> LLMResponse:
    data = json.loads(text)
    logprobs = data.pop("logprobs")
    if logprobs is not None:
        logprobs = tuple(TokenLogprob(t["token"], t["logprob"], tuple(map(tuple, t["top"]))) for t in logprobs)
    return replace(LLMResponse(**data, logprobs=logprobs), cached=True)


class CachingLLM:
    """An LLM that answers a request it has answered before from a `ResponseCache`, and otherwise asks `llm`."""

    def __init__(self, llm: LLM, cache: ResponseCache, settings: Settings) -> None:
        self.llm = llm
        self.cache = cache
        self._settings_key = json.dumps(cache_key_settings(settings), sort_keys=True)

    @property
    def model(self) -> str:
        """The wrapped model's name."""
        return self.llm.model

    def key(self, request: LLMRequest) -> str:
        """The digest of a request with the model and settings it would be sent with."""
        payload = json.dumps(
            [self._settings_key, request.messages, request.schema, request.schema_name, request.top_logprobs],
            sort_keys=True,
            separators=(",", ":"),
        )
        return hashlib.sha256(payload.encode()).hexdigest()

    def complete(self, request: LLMRequest) -> LLMResponse:
        """The cached reply to `request`, else the model's (then cached)."""
        key = self.key(request)
        if (hit := self.cache.get(key)) is not None:
            logger.debug("response cache hit %s", key[:12])
            return hit
        response = self.llm.complete(request)
        self.cache.put(key, response)
        return response

    def stream(self, request: LLMRequest) -> Iterator[str | LLMResponse]:
        """`complete`, streamed: a cached reply comes in one piece."""
        key = self.key(request)
        if (hit := self.cache.get(key)) is not None:
            yield hit.content
            yield hit
            return
        for piece in pieces(self.llm, request):
            if isinstance(piece, LLMResponse):
                self.cache.put(key, piece)
            yield piece

    async def astream(self, request: LLMRequest) -> AsyncIterator[str | LLMResponse]:
        """Async `stream`."""
        key = self.key(request)
        if (hit := self.cache.get(key)) is not None:
            yield hit.content
            yield hit
            return
        async for piece in apieces(self.llm, request):
            if isinstance(piece, LLMResponse):
                self.cache.put(key, piece)
            yield piece

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        """Async `complete` (the SQLite lookups are short and local)."""
        key = self.key(request)
        if (hit := self.cache.get(key)) is not None:
            return hit
        response = await self.llm.acomplete(request)
        self.cache.put(key, response)
        return response

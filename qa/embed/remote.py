"""Embeddings from any OpenAI-compatible `/v1/embeddings` endpoint (OpenAI, llama.cpp's server, Ollama, vLLM)
through the official openai client: batched, retried like chat calls, usage counted."""

from __future__ import annotations

import json
import logging
import threading
import urllib.parse
import weakref
from collections.abc import Sequence

import numpy as np
import openai
from tenacity import Retrying

from qa.embed.base import EmbeddingUsage, QueryCache, Vectors, normalize
from qa.errors import ServerError
from qa.llm import retry_policy, translate_error
from qa.settings import Settings

__all__ = ["OpenAIEmbedder"]

logger = logging.getLogger("qa")


class OpenAIEmbedder:
    """`Settings.embedding_model` on the server at `Settings.embedding_base_url` (or `base_url`)."""

    def __init__(self, settings: Settings, *, client: openai.OpenAI | None = None, query_cache: int = 128) -> None:
        if not settings.embedding_model:
            raise ValueError("OpenAIEmbedder needs Settings.embedding_model")
        self.settings = settings
        self.model = settings.embedding_model
        self.usage = EmbeddingUsage()
        self._client = client
        self._owns_client = client is None
        self._dimension: int | None = None
        self._lock = threading.Lock()
        self._queries = QueryCache(query_cache)
        self._secrets = settings.secret_values()  # redacted from anything the server sends back

    @property
    def model_id(self) -> str:
        """`openai:<model>`, with the endpoint (without credentials) when it is not OpenAI's."""
        url = self.settings.embedding_base_url or self.settings.base_url
        if not url:
            return f"openai:{self.model}"
        parts = urllib.parse.urlsplit(url)
        return f"openai:{self.model}@{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"

    @property
    def dimension(self) -> int:
        """Learnt from the first vector the server returns (one request if none was made yet)."""
        if self._dimension is None:
            self._request(["dimension"])
        assert self._dimension is not None
        return self._dimension

    def _sync(self) -> openai.OpenAI:
        if self._client is None:
            s = self.settings
            self._client = openai.OpenAI(
                api_key=s.api_key.get_secret_value() if s.api_key else "not-needed",
                base_url=s.embedding_base_url or s.base_url,
                timeout=s.timeout,
                max_retries=0,  # retries happen once, with tenacity (qa.llm.retry_policy)
            )
            weakref.finalize(self, self._client.close)
        return self._client

    def close(self) -> None:
        """Close the HTTP client this object created."""
        if self._client is not None and self._owns_client:
            self._client.close()
            self._client = None

    def _request(self, texts: list[str]) -> Vectors:
        client = self._sync()
        attempts = 0
        try:
            for attempt in Retrying(**retry_policy(self.settings, "embedding call")):
                with attempt:
                    attempts += 1
                    response = client.embeddings.create(model=self.model, input=texts, encoding_format="float")
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            # As for chat calls: only a connection failure is chained; other errors carry the server's text.
            cause = exc if isinstance(exc, openai.APIConnectionError) else None
            raise translate_error(exc, attempts, self._secrets, "the embedding server") from cause
        rows = sorted(response.data, key=lambda d: d.index)
        if len(rows) != len(texts):
            raise ServerError(
                f"the embedding server returned {len(rows)} vectors for {len(texts)} inputs", attempts=attempts
            )
        vectors = normalize([row.embedding for row in rows])
        with self._lock:
            self.usage.calls += 1
            self.usage.retries += attempts - 1
            self.usage.texts += len(texts)
            self.usage.tokens += response.usage.prompt_tokens if response.usage else 0
            if self._dimension is None:
                self._dimension = int(vectors.shape[1])
        logger.debug("embedded %d texts in %d attempt(s)", len(texts), attempts)
        return vectors

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """One vector per text; `Settings.embedding_batch_size` texts per request."""
        if not texts:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        size = self.settings.embedding_batch_size
        return np.concatenate([self._request(list(texts[i : i + size])) for i in range(0, len(texts), size)])

    def embed_query(self, text: str) -> Vectors:
        """The vector of a question; the last `query_cache` questions are remembered."""
        return self._queries.get(text, lambda t: self._request([t])[0])

"""Text embedders: the `Embedder` protocol, the bundled local model and any OpenAI-compatible `/v1/embeddings`."""

from __future__ import annotations

from typing import Literal

from qa.embed.base import Embedder, EmbeddingUsage, Vectors, embed_in_batches, normalize
from qa.embed.local import LocalEmbedder
from qa.embed.remote import OpenAIEmbedder
from qa.errors import ConfigurationError
from qa.settings import Settings

__all__ = [
    "Embedder",
    "EmbeddingUsage",
    "LocalEmbedder",
    "OpenAIEmbedder",
    "Vectors",
    "embed_in_batches",
    "embedder_for",
    "normalize",
    "retrieval_mode",
]


def embedder_for(settings: Settings) -> Embedder:
    """The embedder the settings name: the server's `embedding_model`, else the bundled local model
    (ConfigurationError naming the extra to install when it is missing)."""
    if settings.embedding_model:
        return OpenAIEmbedder(settings)
    LocalEmbedder.check()
    return LocalEmbedder(threads=settings.local_threads)


def retrieval_mode(settings: Settings) -> Literal["bm25", "dense", "hybrid"]:
    """`Settings.retrieval` with auto resolved: hybrid when an embedder is available, else bm25."""
    if settings.retrieval != "auto":
        return settings.retrieval
    if settings.embedding_model:
        return "hybrid"
    try:
        LocalEmbedder.check()
    except ConfigurationError:
        return "bm25"
    return "hybrid"

"""qa: answers questions about documents with an LLM, citing verbatim, verified spans of the source."""

from qa.answer import Answer, ChunkRef, Citation, Usage
from qa.chunking import Chunk
from qa.dense import DenseRetriever, HybridRetriever
from qa.documents import Document, Location
from qa.embed import Embedder, LocalEmbedder, OpenAIEmbedder
from qa.errors import (
    AnswerValidationError,
    AuthenticationError,
    ConfigurationError,
    DocumentError,
    InputError,
    LLMConnectionError,
    LLMError,
    LLMTimeoutError,
    QAError,
    RateLimitError,
    ReplyTooLargeError,
    RequestRejectedError,
    ServerError,
    StoreError,
)
from qa.ingest import Failure, IngestReport
from qa.llm import LLM, LLMRequest, LLMResponse, OpenAILLM
from qa.loaders import LoadResult, iter_load, load
from qa.pipeline import Index, ask
from qa.prompts import PromptSet, load_prompts
from qa.retrieval import BM25Retriever, Hit, Passage, Retriever
from qa.settings import Settings
from qa.store import Store, StoredDocument
from qa.streaming import Final, Retraction, StreamEvent, TextDelta

__version__ = "0.1.0"

__all__ = [
    "Answer",
    "AnswerValidationError",
    "AuthenticationError",
    "BM25Retriever",
    "Chunk",
    "ChunkRef",
    "Citation",
    "ConfigurationError",
    "DenseRetriever",
    "Document",
    "DocumentError",
    "Embedder",
    "Failure",
    "Final",
    "Hit",
    "HybridRetriever",
    "Index",
    "IngestReport",
    "InputError",
    "LLM",
    "LLMConnectionError",
    "LLMError",
    "LLMRequest",
    "LLMResponse",
    "LLMTimeoutError",
    "LoadResult",
    "LocalEmbedder",
    "Location",
    "OpenAIEmbedder",
    "OpenAILLM",
    "Passage",
    "PromptSet",
    "QAError",
    "RateLimitError",
    "ReplyTooLargeError",
    "RequestRejectedError",
    "Retraction",
    "Retriever",
    "ServerError",
    "Settings",
    "Store",
    "StoreError",
    "StoredDocument",
    "StreamEvent",
    "TextDelta",
    "Usage",
    "ask",
    "iter_load",
    "load",
    "load_prompts",
    "__version__",
]

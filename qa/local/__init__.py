"""The embedded offline LLM: a llama.cpp model served in-process to the official `openai` client via httpx2.

`registry` names the known models and their packaged parts, `weights` joins and checks those parts, `engine` runs
the llama.cpp model, and `bridge` answers OpenAI chat-completion requests from it without a socket.
"""

from qa.local.bridge import (
    LOCAL_BASE_URL,
    AsyncLocalTransport,
    LocalTransport,
    async_client,
    local_clients,
    sync_client,
)
from qa.local.engine import LocalEngine, get_engine
from qa.local.registry import DEFAULT_MODEL, KNOWN_MODELS, LocalModelSpec, ModelPart, spec_for
from qa.local.weights import cache_dir, default_model_path, locate_part, prepare_model

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "LOCAL_BASE_URL",
    "AsyncLocalTransport",
    "LocalEngine",
    "LocalModelSpec",
    "LocalTransport",
    "ModelPart",
    "async_client",
    "cache_dir",
    "default_model_path",
    "get_engine",
    "local_clients",
    "locate_part",
    "prepare_model",
    "spec_for",
    "sync_client",
]

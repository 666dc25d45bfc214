"""The OpenAI-compatible bridge: httpx2 transports that answer chat-completion requests from the local engine."""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import time
import uuid
from pathlib import Path
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import httpx2
import openai

from qa.local.engine import Generation, LocalEngine, completion_dict, get_engine

if TYPE_CHECKING:
    from qa.settings import Settings

__all__ = [
    "LOCAL_BASE_URL",
    "AsyncLocalTransport",
    "LocalTransport",
    "async_client",
    "local_clients",
    "sync_client",
]

logger = logging.getLogger("qa")

LOCAL_BASE_URL = "http://qa.local/v1"
"""The base URL the local clients use; it never reaches the network (the transport answers in-process)."""


class _HTTPError(Exception):
    """An error answer in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _invalid(message: str, param: str | None = None) -> _HTTPError:
    return _HTTPError(400, message, param=param)


@functools.lru_cache(maxsize=64)
def _grammar_for(schema_json: str | None) -> tuple[Any, str]:
    """A llama.cpp grammar for a JSON schema (or any JSON when None), and which kind it is."""
    llama_grammar = importlib.import_module("llama_cpp.llama_grammar")
    if schema_json is not None:
        try:
            return llama_grammar.LlamaGrammar.from_json_schema(schema_json, verbose=False), "json_schema"
        except Exception as exc:  # the converter raises plain Exceptions on unsupported constructs
            logger.warning("JSON schema cannot be turned into a grammar (%s); constraining to any JSON", exc)
    return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False), "json"


def _grammar_from_response_format(response_format: Any) -> tuple[Any, str] | None:
    """Translate an OpenAI response_format into a llama.cpp grammar (json_schema and json_object[+schema])."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise _invalid("response_format must be an object", "response_format")
    kind = response_format.get("type")
    schema: Any = None
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise _invalid("response_format.json_schema must be an object", "response_format")
        schema = spec.get("schema")
    else:
        raise _invalid(f"unsupported response_format type {kind!r}", "response_format")
    if schema is not None and not isinstance(schema, dict):
        raise _invalid("the JSON schema must be an object", "response_format")
    # Key order matters: the grammar makes the model write properties in the schema's order.
    return _grammar_for(None if schema is None else json.dumps(schema))


_PASSTHROUGH = (
    "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "tools", "tool_choice",
)


def _chat_params(body: Any) -> tuple[dict[str, Any], str]:
    """Map an OpenAI chat-completions request body to `Llama.create_chat_completion` keyword arguments."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty array", "messages")
    if body.get("n", 1) not in (1, None):
        raise _invalid("the local engine returns exactly one choice (n=1)", "n")
    params: dict[str, Any] = {"messages": messages}
    for key in _PASSTHROUGH:
        if body.get(key) is not None:
            params[key] = body[key]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if isinstance(body.get("logit_bias"), dict):
        params["logit_bias"] = {int(k): float(v) for k, v in body["logit_bias"].items()}
    grammar = _grammar_from_response_format(body.get("response_format"))
    kind = "none"
    if grammar is not None:
        params["grammar"], kind = grammar
    return params, kind


def _top_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token the request asks for (0 with bare logprobs=true), or None."""
    if not body.get("logprobs"):
        return None
    top = body.get("top_logprobs") or 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise _invalid("top_logprobs must be an integer from 0 to 20", "top_logprobs")
    return top


def _error_response(request: httpx2.Request, exc: _HTTPError, request_id: str) -> httpx2.Response:
    return httpx2.Response(
        exc.status,
        headers={"content-type": "application/json", "x-request-id": request_id},
        content=json.dumps(exc.body).encode(),
        request=request,
    )


def _is_chat_path(path: str) -> bool:
    return path.rstrip("/") in ("/v1/chat/completions", "/chat/completions")


def _is_models_path(path: str) -> bool:
    return path.rstrip("/") in ("/v1/models", "/models")


def _lock_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        value = timeout.get("read")
        return float(value) if isinstance(value, int | float) else None
    return None


def _handle(engine: LocalEngine, request: httpx2.Request, body: bytes) -> httpx2.Response:
    """Answer one request against the engine, exactly as an OpenAI-compatible server would (SSE for stream=true)."""
    request_id = f"req_local_{uuid.uuid4().hex}"
    path = request.url.path
    headers = {"content-type": "application/json", "x-request-id": request_id}
    try:
        if _is_models_path(path) and request.method == "GET":
            payload: dict[str, Any] = {
                "object": "list",
                "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "local"}],
            }
        elif _is_chat_path(path) and request.method == "POST":
            try:
                decoded = json.loads(body or b"null")
            except ValueError as exc:
                raise _invalid(f"the request body is not JSON: {exc}") from exc
            params, grammar_kind = _chat_params(decoded)
            top_logprobs = _top_logprobs(decoded)
            model = decoded.get("model") or engine.name
            if decoded.get("stream"):
                include_usage = bool((decoded.get("stream_options") or {}).get("include_usage"))
                steps = engine.generate(params, lock_timeout=_lock_timeout(request), top_logprobs=top_logprobs)
                events = _sse_events(steps, model, include_usage)
                first = _guarded(request, lambda: next(events))  # errors before the first token are HTTP errors
                return httpx2.Response(
                    200,
                    headers={**headers, "content-type": "text/event-stream"},
                    stream=_EventStream(first, events),
                    request=request,
                )
            started = time.perf_counter()
            payload = _guarded(
                request,
                lambda: engine.chat_completion(params, lock_timeout=_lock_timeout(request), top_logprobs=top_logprobs),
            )
            payload["model"] = model
            usage = payload.get("usage") or {}
            logger.debug(
                "local completion: %s prompt (%s cached) + %s completion tokens in %.2fs (grammar: %s)",
                usage.get("prompt_tokens"),
                (usage.get("prompt_tokens_details") or {}).get("cached_tokens"),
                usage.get("completion_tokens"),
                time.perf_counter() - started,
                grammar_kind,
            )
        else:
            raise _HTTPError(404, f"{request.method} {path} is not served by the local engine", code="not_found")
    except _HTTPError as exc:
        return _error_response(request, exc, request_id)
    except httpx2.TimeoutException:
        raise
    except Exception as exc:
        logger.exception("local inference failed")
        return _error_response(
            request,
            _HTTPError(500, f"local inference failed: {type(exc).__name__}: {exc}", type_="server_error"),
            request_id,
        )
    return httpx2.Response(200, headers=headers, content=json.dumps(payload).encode(), request=request)


_T = TypeVar("_T")


def _guarded(request: httpx2.Request, run: Callable[[], _T]) -> _T:
    """Run the engine, turning a busy lock into a pool timeout and a too-long prompt into a 400."""
    try:
        return run()
    except TimeoutError:
        raise httpx2.PoolTimeout("the local model stayed busy past the timeout", request=request) from None
    except ValueError as exc:
        if "context window" in str(exc):
            raise _HTTPError(400, str(exc), code="context_length_exceeded", param="messages") from exc
        raise


def _sse_events(steps: Generator[str, None, Generation], model: str, include_usage: bool) -> Iterator[bytes]:
    """OpenAI chat.completion.chunk events for a generation: role, text deltas, finish (with logprobs), usage."""
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time())}
    base["model"] = model

    def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return b"data: " + json.dumps({**base, "choices": choices, **extra}).encode() + b"\n\n"

    def delta(content: dict[str, Any], finish: str | None = None, logprobs: Any = None) -> bytes:
        return event([{"index": 0, "delta": content, "logprobs": logprobs, "finish_reason": finish}])

    role_sent = False
    while True:
        try:
            piece = next(steps)
        except StopIteration as done:
            result: Generation = done.value
            break
        yield delta({"content": piece} if role_sent else {"role": "assistant", "content": piece})
        role_sent = True
    if not role_sent:
        yield delta({"role": "assistant", "content": ""})
    logprobs = None if result.logprobs is None else {"content": result.logprobs}
    yield delta({}, result.finish_reason, logprobs)
    if include_usage:
        usage = completion_dict(result, model)["usage"]
        yield event([], usage=usage)
    yield b"data: [DONE]\n\n"


class _EventStream(httpx2.SyncByteStream):
    """The SSE body; closing it early stops the generation and frees the engine."""

    def __init__(self, first: bytes, events: Iterator[bytes]) -> None:
        self._first: bytes | None = first
        self._events = events

    def __iter__(self) -> Iterator[bytes]:
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        yield from self._events

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if close is not None:
            close()


class _AsyncEventStream(httpx2.AsyncByteStream):
    """The SSE body for the async client: each step of the generation runs in a worker thread."""

    def __init__(self, first: bytes, events: Iterator[bytes]) -> None:
        self._sync = _EventStream(first, events)
        self._iterator = iter(self._sync)

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while (chunk := await asyncio.to_thread(next, self._iterator, None)) is not None:
            yield chunk

    async def aclose(self) -> None:
        await asyncio.to_thread(self._sync.close)


class LocalTransport(httpx2.BaseTransport):
    """An httpx2 transport that answers OpenAI chat-completion requests from an in-process llama.cpp model."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run the request against the local model; no socket is opened."""
        return _handle(self.engine, request, request.read())


class AsyncLocalTransport(httpx2.AsyncBaseTransport):
    """The async twin of `LocalTransport`: inference runs in a worker thread so the event loop stays free."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run the request against the local model in a worker thread."""
        body = await request.aread()
        response = await asyncio.to_thread(_handle, self.engine, request, body)
        if isinstance(response.stream, _EventStream):  # a sync SSE body, read from worker threads
            stream = response.stream
            response.stream = _AsyncEventStream(stream._first or b"", stream._events)
        return response


def local_clients(
    *,
    model_path: Path | str | None = None,
    n_ctx: int | None = None,
    timeout: float = 600,
    n_threads: int | None = None,
    cache: Path | None = None,
) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    """Official OpenAI clients (sync, async) wired to the in-process local model: no network, no port."""
    engine = get_engine(model_path, n_ctx, n_threads=n_threads, cache=cache)
    return _sync_client(engine, timeout), _async_client(engine, timeout)


def _sync_client(engine: LocalEngine, timeout: float) -> openai.OpenAI:
    http = httpx2.Client(transport=LocalTransport(engine), timeout=timeout, trust_env=False)
    return openai.OpenAI(base_url=LOCAL_BASE_URL, api_key="local", max_retries=0, timeout=timeout, http_client=http)


def _async_client(engine: LocalEngine, timeout: float) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=AsyncLocalTransport(engine), timeout=timeout, trust_env=False)
    return openai.AsyncOpenAI(
        base_url=LOCAL_BASE_URL, api_key="local", max_retries=0, timeout=timeout, http_client=http
    )


# Requests to the local engine queue on its lock, so the per-request timeout (meant for network
# calls, default 60 s) is raised to this floor for local clients.
_LOCAL_TIMEOUT_FLOOR = 600.0


def _engine_for(settings: Settings) -> LocalEngine:
    return get_engine(
        settings.local_model,
        settings.local_context_window,
        n_threads=settings.local_threads,
        cache=settings.resolved_cache_dir,
        amx=settings.local_amx,
        state_cache_bytes=int(settings.local_kv_cache_mb * 2**20) if settings.cache else 0,
    )


def sync_client(settings: Settings) -> openai.OpenAI:
    """A sync OpenAI client answering from the local model that `settings` describes."""
    return _sync_client(_engine_for(settings), max(settings.timeout, _LOCAL_TIMEOUT_FLOOR))


def async_client(settings: Settings) -> openai.AsyncOpenAI:
    """An async OpenAI client answering from the local model that `settings` describes."""
    return _async_client(_engine_for(settings), max(settings.timeout, _LOCAL_TIMEOUT_FLOOR))

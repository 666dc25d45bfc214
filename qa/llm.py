"""Calls to the model through the official openai client: structured output with fallback, and tenacity retries."""

from __future__ import annotations

import contextlib
import email.utils
import json
import logging
import time
import weakref
from dataclasses import dataclass
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any, Literal, Protocol

import openai
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential_jitter,
)

from qa import errors
from qa.prompts import PromptSet
from qa.redact import redact, redact_data
from qa.settings import Settings

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionTokenLogprob

__all__ = [
    "LLM", "LLMRequest", "LLMResponse", "OpenAILLM", "StreamingLLM", "TokenLogprob", "retry_policy", "translate_error",
]

logger = logging.getLogger("qa")

Mode = Literal["json_schema", "json_object", "text"]
_MODES: tuple[Mode, ...] = ("json_schema", "json_object", "text")


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One chat call: the messages and the JSON schema the reply must satisfy."""

    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any]
    schema_name: str = "answer"
    top_logprobs: int | None = None  # ask for each reply token's log-probability and this many alternatives


@dataclass(frozen=True, slots=True)
class TokenLogprob:
    """One reply token, its log-probability and the most likely tokens the model could have written there."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True, slots=True)
class LLMResponse:
    """The reply text and what it cost."""

    content: str
    prompt_tokens: int
    completion_tokens: int
    attempts: int
    model: str
    finish_reason: str | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None  # when requested and the server returned them
    cached: bool = False  # served from the response cache: no LLM call was made


class _StreamReader:
    """Accumulates the chunks of one streamed completion into deltas and, at the end, an LLMResponse."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.parts: list[str] = []
        self.logprobs: list[ChatCompletionTokenLogprob] = []
        self.finish_reason: str | None = None
        self.prompt_tokens = self.completion_tokens = 0

    def add(self, chunk: ChatCompletionChunk) -> str:
        """Take one chunk; returns the text it adds (maybe empty)."""
        if chunk.model:
            self.model = chunk.model
        if chunk.usage is not None:
            self.prompt_tokens, self.completion_tokens = chunk.usage.prompt_tokens, chunk.usage.completion_tokens
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        if choice.finish_reason is not None:
            self.finish_reason = choice.finish_reason
        if choice.logprobs is not None and choice.logprobs.content:
            self.logprobs.extend(choice.logprobs.content)
        text = choice.delta.content or ""
        if text:
            self.parts.append(text)
        return text

    def response(self, attempts: int) -> LLMResponse:
        return LLMResponse(
            content="".join(self.parts),
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            attempts=attempts,
            model=self.model,
            finish_reason=self.finish_reason,
            logprobs=_token_logprobs(self.logprobs or None),
        )


class LLM(Protocol):
    """Anything that answers an LLMRequest, synchronously and asynchronously."""

    @property
    def model(self) -> str:
        """The model name reported in answers."""
        ...

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Answer `request`."""
        ...

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        """Answer `request` without blocking the event loop."""
        ...


class StreamingLLM(LLM, Protocol):
    """An LLM that can also stream: yields the reply's text as it is written, then the whole LLMResponse."""

    def stream(self, request: LLMRequest) -> Iterator[str | LLMResponse]:
        """Text deltas of the reply, then its LLMResponse (last)."""
        ...

    def astream(self, request: LLMRequest) -> AsyncIterator[str | LLMResponse]:
        """Async `stream`."""
        ...


# llama-cpp-python's server rejects "json_schema" with this validation message; its "json_object"
# takes a "schema" and decodes with a grammar made from it.
_LLAMA_CPP_FORMATS = "input should be 'text' or 'json_object'"


def _error_text(exc: openai.APIStatusError) -> str:
    return f"{exc.message} {json.dumps(exc.body, default=str) if exc.body is not None else ''}".lower()


def _is_format_rejection(exc: openai.APIStatusError) -> bool:
    # llama-cpp-python's server answers an unsupported response_format with HTTP 500 and a validation
    # message naming it; OpenAI and vLLM use 400/422. Either way it is not worth retrying.
    if exc.status_code not in (400, 422, 500, 501):
        return False
    text = _error_text(exc)
    return "response_format" in text or "json_schema" in text


def _is_logprobs_rejection(exc: openai.APIStatusError) -> bool:
    # e.g. llama-cpp-python's server without logits_all: HTTP 500 "logprobs is not supported for models
    # created with logits_all=False"; other servers say 400/422 naming the parameter.
    return exc.status_code in (400, 422, 500, 501) and "logprobs" in _error_text(exc)


# What a body that is not JSON (or not UTF-8) raises from the openai client's parsing.
_MALFORMED = (json.JSONDecodeError, UnicodeDecodeError)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        if _is_format_rejection(exc) or _is_logprobs_rejection(exc):  # retrying the same request cannot help
            return False
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    # A body cut mid-way reaches us as a JSON decode error or a response validation error.
    return isinstance(exc, (*_MALFORMED, openai.APIResponseValidationError))


def _retry_after(exc: BaseException | None) -> float | None:
    if not isinstance(exc, openai.APIStatusError):
        return None
    headers = exc.response.headers
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        return max(0.0, parsed.timestamp() - time.time()) if parsed else None


def retry_policy(settings: Settings, what: str = "LLM call") -> dict[str, Any]:
    """tenacity's arguments for one call to a server (chat or embeddings): transient failures (429, 5xx, timeouts,
    cut bodies) retried with exponential backoff and jitter, Retry-After honoured, bounded in count and time."""
    s = settings
    backoff = wait_exponential_jitter(multiplier=s.retry_initial_wait, max=s.retry_max_wait)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = _retry_after(exc)
        return min(after, s.retry_max_wait) if after is not None else float(backoff(state))

    def log(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        logger.warning("%s failed (%s); retry %d", what, exc.__class__.__name__, state.attempt_number)

    return {
        "stop": stop_after_attempt(s.max_retries + 1) | stop_after_delay(s.retry_total_seconds),
        "wait": wait,
        "retry": retry_if_exception(_is_transient),
        "before_sleep": log,
        "reraise": True,
    }


def translate_error(
    exc: BaseException, attempts: int, secrets: tuple[str, ...] = (), server: str = "the LLM server"
) -> errors.QAError:
    """Turn an openai (or decode) exception into qa's error tree; whatever the server sent back is redacted."""
    n = f" after {attempts} attempt{'s' if attempts != 1 else ''}"
    if isinstance(exc, openai.APITimeoutError):
        return errors.LLMTimeoutError(f"the request timed out{n}", attempts=attempts)
    if isinstance(exc, openai.APIConnectionError):
        return errors.LLMConnectionError(f"cannot reach {server}{n}: {redact(str(exc), secrets)}", attempts=attempts)
    if isinstance(exc, openai.APIStatusError):
        kw: dict[str, Any] = {
            "status_code": exc.status_code,
            "request_id": exc.request_id,
            "attempts": attempts,
            "body": redact_data(exc.body, secrets),
        }
        message = f"HTTP {exc.status_code} from {server}{n}: {redact(exc.message, secrets)}"
        if exc.status_code in (401, 403):
            return errors.AuthenticationError(message, **kw)
        if exc.status_code == 429:
            return errors.RateLimitError(message, **kw)
        if exc.status_code >= 500:
            return errors.ServerError(message, **kw)
        return errors.RequestRejectedError(message, **kw)
    return errors.ServerError(f"malformed response from {server}{n}: {redact(str(exc), secrets)}", attempts=attempts)


def _without_titles(schema: Any) -> Any:
    """A JSON schema without pydantic's "title" keys: the model does not need them in its prompt."""
    if isinstance(schema, dict):
        return {
            # Under "properties" the keys are field names (a field may be called "title").
            k: {name: _without_titles(sub) for name, sub in v.items()} if k == "properties" else _without_titles(v)
            for k, v in schema.items()
            if not (k == "title" and isinstance(v, str))
        }
    if isinstance(schema, list):
        return [_without_titles(v) for v in schema]
    return schema


def _token_logprobs(content: list[ChatCompletionTokenLogprob] | None) -> tuple[TokenLogprob, ...] | None:
    if not content:
        return None
    return tuple(
        TokenLogprob(t.token, t.logprob, tuple((a.token, a.logprob) for a in t.top_logprobs or ())) for t in content
    )


class OpenAILLM:
    """Any OpenAI-compatible chat server (OpenAI, vLLM, Ollama, llama.cpp), or the embedded local model."""

    def __init__(
        self,
        settings: Settings,
        prompts: PromptSet,
        *,
        client: openai.OpenAI | None = None,
        async_client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.settings = settings
        self.prompts = prompts
        self._client = client
        self._owns_client = False
        self._async_client = async_client
        # What the server accepted, learnt once so later questions skip rejected formats.
        first: Mode = "json_schema" if settings.structured_output == "auto" else settings.structured_output
        self._mode: Mode = first
        # Whether the server turns json_object's "schema" into a decoding grammar (llama-cpp-python's
        # server does), so the schema need not be spelt out in the prompt.
        self._object_schema_enforced = settings.schema_in_prompt == "never"
        # Whether to send logprobs when a request wants them; False once the server refused them.
        self._logprobs = True
        self._secrets = settings.secret_values()  # redacted from anything the server sends back

    @property
    def model(self) -> str:
        """The model name reported in answers."""
        return self.settings.model_name

    @property
    def mode(self) -> str:
        """The structured-output mode in use (json_schema, json_object or text)."""
        return self._mode

    # --- clients -------------------------------------------------------------------------

    def _client_kwargs(self) -> dict[str, Any]:
        s = self.settings
        return {
            "api_key": s.api_key.get_secret_value() if s.api_key else "not-needed",
            "base_url": s.base_url,
            "timeout": s.timeout,
            "max_retries": 0,  # retries happen once, in this module, with tenacity
        }

    def _sync(self) -> openai.OpenAI:
        if self._client is None:
            if self.settings.uses_local_model:
                from qa import local  # the llama.cpp engine is optional: imported only when used

                self._client = local.sync_client(self.settings)
            else:
                self._client = openai.OpenAI(**self._client_kwargs())
            self._owns_client = True
            # Close the connection pool when this object is collected, even if close() is never called.
            self._finalizer = weakref.finalize(self, self._client.close)
        return self._client

    def _new_async(self) -> openai.AsyncOpenAI:
        # A fresh async client per call: an httpx pool belongs to one event loop, and callers may
        # use several (asyncio.run per question); the connection setup is small beside an LLM call.
        if self.settings.uses_local_model:
            from qa import local

            return local.async_client(self.settings)
        return openai.AsyncOpenAI(**self._client_kwargs())

    def close(self) -> None:
        """Close the HTTP client this object created (an injected one is left to its owner)."""
        if self._client is not None and self._owns_client:
            self._finalizer()
            self._client = None

    # --- request building (shared by the sync and async shells) ---------------------------

    def _kwargs(self, request: LLMRequest, mode: Mode) -> dict[str, Any]:
        s = self.settings
        messages = [dict(m) for m in request.messages]
        spell_out = mode == "text" or (mode == "json_object" and not self._object_schema_enforced)
        if spell_out and messages and messages[0]["role"] == "system":
            # Without schema-constrained decoding the model must read the schema (json_object also
            # requires the word JSON in the messages).
            schema = json.dumps(_without_titles(request.schema), separators=(",", ":"))
            messages[0]["content"] += self.prompts.render("json_format", schema=schema)
        kwargs: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": s.temperature,
            "max_tokens": s.max_answer_tokens,
        }
        if s.seed is not None:
            kwargs["seed"] = s.seed
        if request.top_logprobs is not None and self._logprobs:
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = request.top_logprobs
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": request.schema_name, "schema": request.schema, "strict": True},
            }
        elif mode == "json_object":
            # OpenAI ignores "schema" here; llama.cpp's server turns it into a grammar.
            kwargs["response_format"] = {"type": "json_object", "schema": request.schema}
        return kwargs

    def _downgrade_or_raise(self, mode: Mode, exc: BaseException, attempts: int, kwargs: dict[str, Any]) -> None:
        """After a failed call: stop asking for logprobs, or step down to the next structured-output mode, if the
        server refused them (and the settings allow it), else raise the failure as a qa error."""
        if "logprobs" in kwargs and isinstance(exc, openai.APIStatusError) and _is_logprobs_rejection(exc):
            # Answers matter more than the decline probability: go on without it, and say so once.
            self._logprobs = False
            logger.warning(
                "the server does not return token log-probabilities (%s); answers carry no decline_probability "
                "and decline_threshold cannot apply", redact(exc.message, self._secrets),
            )  # fmt: skip
            return
        rejected = isinstance(exc, openai.APIStatusError) and _is_format_rejection(exc)
        if not rejected:
            # Only a connection failure is chained: other exceptions carry the server's text, which may echo the key.
            cause = exc if isinstance(exc, openai.APIConnectionError) else None
            raise translate_error(exc, attempts, self._secrets) from cause
        if self.settings.structured_output != "auto" or mode == "text":
            raise errors.RequestRejectedError(
                f"the server rejected response_format {mode!r}: {redact(str(exc), self._secrets)}", attempts=attempts
            ) from None
        self._mode = _MODES[_MODES.index(mode) + 1]
        if (
            self.settings.schema_in_prompt == "auto"
            and isinstance(exc, openai.APIStatusError)
            and _LLAMA_CPP_FORMATS in _error_text(exc)
        ):
            self._object_schema_enforced = True
        logger.info("server rejected response_format %s; using %s from now on", mode, self._mode)

    def _retry_kwargs(self) -> dict[str, Any]:
        return retry_policy(self.settings)

    def _response(self, completion: ChatCompletion, attempts: int) -> LLMResponse:
        if not hasattr(completion, "choices"):  # a body of bare JSON ("0", "[]") that the client passes through
            raise errors.ServerError(
                f"malformed response from the server: JSON {type(completion).__name__}, not a chat completion",
                attempts=attempts,
            )
        choice = completion.choices[0] if completion.choices else None
        content = (choice.message.content if choice else None) or ""
        usage = completion.usage
        result = LLMResponse(
            content=content,
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            attempts=attempts,
            model=completion.model or self.model,
            finish_reason=choice.finish_reason if choice else None,
            logprobs=_token_logprobs(choice.logprobs.content if choice and choice.logprobs else None),
        )
        logger.debug(
            "LLM reply: %d prompt + %d completion tokens, %d attempt(s), finish=%s",
            result.prompt_tokens, result.completion_tokens, attempts, result.finish_reason,
        )  # fmt: skip
        logger.debug("LLM reply content: %s", content)
        return result

    # --- the thin sync and async shells ----------------------------------------------------

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Send `request`, retrying transient failures and falling back on rejected formats."""
        client = self._sync()
        while True:
            mode = self._mode
            kwargs = self._kwargs(request, mode)
            attempts = 0
            try:
                for attempt in Retrying(**self._retry_kwargs()):
                    with attempt:
                        attempts += 1
                        completion = client.chat.completions.create(**kwargs)
                return self._response(completion, attempts)
            except (openai.OpenAIError, *_MALFORMED) as exc:
                self._downgrade_or_raise(mode, exc, attempts, kwargs)

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        """Async `complete`."""
        if self._async_client is not None:
            return await self._acomplete(self._async_client, request)
        async with self._new_async() as client:
            return await self._acomplete(client, request)

    async def _acomplete(self, client: openai.AsyncOpenAI, request: LLMRequest) -> LLMResponse:
        while True:
            mode = self._mode
            kwargs = self._kwargs(request, mode)
            attempts = 0
            try:
                async for attempt in AsyncRetrying(**self._retry_kwargs()):
                    with attempt:
                        attempts += 1
                        completion = await client.chat.completions.create(**kwargs)
                return self._response(completion, attempts)
            except (openai.OpenAIError, *_MALFORMED) as exc:
                self._downgrade_or_raise(mode, exc, attempts, kwargs)

    # --- streaming: the same request, read as server-sent events ----------------------------

    def stream(self, request: LLMRequest) -> Iterator[str | LLMResponse]:
        """Send `request` with stream=true: yields text deltas as they arrive, then the LLMResponse.

        Transient failures and rejected formats are handled as in `complete` until the stream opens; a stream
        cut off later raises (its text so far has been yielded).
        """
        client = self._sync()
        while True:
            mode = self._mode
            kwargs = {**self._kwargs(request, mode), "stream": True, "stream_options": {"include_usage": True}}
            attempts = 0
            try:
                for attempt in Retrying(**self._retry_kwargs()):
                    with attempt:
                        attempts += 1
                        chunks = client.chat.completions.create(**kwargs)
                break
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                self._downgrade_or_raise(mode, exc, attempts, kwargs)
        reader = _StreamReader(self.model)
        try:
            with chunks:
                for chunk in chunks:
                    if text := reader.add(chunk):
                        yield text
        except (openai.OpenAIError, json.JSONDecodeError) as exc:
            cause = exc if isinstance(exc, openai.APIConnectionError) else None  # as in _downgrade_or_raise
            raise translate_error(exc, attempts, self._secrets) from cause
        yield self._response_logged(reader.response(attempts))

    async def astream(self, request: LLMRequest) -> AsyncIterator[str | LLMResponse]:
        """Async `stream`."""
        async with contextlib.AsyncExitStack() as stack:
            client = self._async_client
            if client is None:
                client = await stack.enter_async_context(self._new_async())
            while True:
                mode = self._mode
                kwargs = {**self._kwargs(request, mode), "stream": True, "stream_options": {"include_usage": True}}
                attempts = 0
                try:
                    async for attempt in AsyncRetrying(**self._retry_kwargs()):
                        with attempt:
                            attempts += 1
                            chunks = await client.chat.completions.create(**kwargs)
                    break
                except (openai.OpenAIError, json.JSONDecodeError) as exc:
                    self._downgrade_or_raise(mode, exc, attempts, kwargs)
            reader = _StreamReader(self.model)
            try:
                async with chunks:
                    async for chunk in chunks:
                        if text := reader.add(chunk):
                            yield text
            except (openai.OpenAIError, json.JSONDecodeError) as exc:
                cause = exc if isinstance(exc, openai.APIConnectionError) else None
                raise translate_error(exc, attempts, self._secrets) from cause
            yield self._response_logged(reader.response(attempts))

    def _response_logged(self, result: LLMResponse) -> LLMResponse:
        logger.debug(
            "LLM streamed reply: %d prompt + %d completion tokens, %d attempt(s), finish=%s",
            result.prompt_tokens, result.completion_tokens, result.attempts, result.finish_reason,
        )  # fmt: skip
        logger.debug("LLM reply content: %s", result.content)
        return result

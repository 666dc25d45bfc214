"""Tests for qa.local: packaged model data, the in-process OpenAI bridge, and llama_cpp.server parity."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

import qa
from qa import local
from qa.errors import ConfigurationError
from qa.local import (
    DEFAULT_MODEL,
    KNOWN_MODELS,
    AsyncLocalTransport,
    LocalModelSpec,
    LocalTransport,
    ModelPart,
    cache_dir,
    default_model_path,
    get_engine,
    local_clients,
    locate_part,
    prepare_model,
)
from qa.local.engine import Generation, _LogprobRecorder

pytestmark = pytest.mark.local

ANSWER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "population_millions": {"type": "number"}},
    "required": ["city", "population_millions"],
    "additionalProperties": False,
}
# llama.cpp's extension: json_object with a schema (OpenAI's types do not know the "schema" key).
JSON_OBJECT_WITH_SCHEMA: Any = {"type": "json_object", "schema": ANSWER_SCHEMA}
MESSAGES: list[Any] = [
    {"role": "system", "content": "Answer in JSON with the keys city and population_millions."},
    {"role": "user", "content": "Which city is the capital of France, and how many million people live there?"},
]


def _require_llama_and_model() -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'qa[local]')")
    spec = KNOWN_MODELS[DEFAULT_MODEL]
    missing = [p.distribution for p in spec.parts if locate_part(p) is None]
    if missing:
        pytest.skip(f"the default local model is not installed: missing {', '.join(missing)} (pip install 'qa[local]')")


@pytest.fixture(scope="module")
def model_path() -> Path:
    _require_llama_and_model()
    return default_model_path()


@pytest.fixture(scope="module")
def clients(model_path: Path) -> Iterator[tuple[openai.OpenAI, openai.AsyncOpenAI]]:
    sync_client, async_client = local_clients(model_path=model_path)
    yield sync_client, async_client
    sync_client.close()
    asyncio.run(async_client.close())


def _check_answer(completion: Any) -> None:
    content = completion.choices[0].message.content
    answer = json.loads(content)
    assert set(answer) == {"city", "population_millions"}, content
    assert isinstance(answer["city"], str) and answer["city"]
    assert isinstance(answer["population_millions"], int | float)
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 20 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


# --------------------------------------------------------------------------- (a) in-process bridge


def test_gguf_metadata_identifies_the_default_model(model_path: Path) -> None:
    engine = get_engine(model_path)
    meta = engine.metadata
    assert meta["general.architecture"] == "qwen2"
    assert meta["general.name"].startswith("Qwen2.5 Coder 0.5B Instruct")
    assert meta["qwen2.context_length"] == "32768"
    assert "<|im_start|>" in meta["tokenizer.chat_template"]
    assert get_engine(model_path) is engine  # loaded once per process


def test_sync_client_json_schema_through_local_transport(clients: tuple[openai.OpenAI, openai.AsyncOpenAI]) -> None:
    sync_client, _ = clients
    sent: list[dict[str, Any]] = []
    transport = sync_client._client._transport  # the LocalTransport built by local_clients
    assert isinstance(transport, LocalTransport)

    class Recording(LocalTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            sent.append(json.loads(request.read()))
            return super().handle_request(request)

    response_format: Any = {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA, "strict": True},
    }
    with openai.OpenAI(
        base_url="http://qa.local/v1",
        api_key="local",
        max_retries=0,
        http_client=httpx2.Client(transport=Recording(transport.engine)),
    ) as client:
        completion = client.chat.completions.create(
            model="local",
            messages=MESSAGES,
            response_format=response_format,
            temperature=0,
            max_tokens=48,
            seed=1,
        )
    assert sent[0]["response_format"] == response_format  # the client sends it through unchanged
    assert completion.model == "local"
    assert completion.choices[0].finish_reason in ("stop", "length")
    _check_answer(completion)
    assert completion._request_id and completion._request_id.startswith("req_local_")


def test_local_transport_returns_token_logprobs(clients: tuple[openai.OpenAI, openai.AsyncOpenAI]) -> None:
    sync_client, _ = clients
    completion = sync_client.chat.completions.create(
        model="local",
        messages=MESSAGES,
        response_format={"type": "json_object", "schema": ANSWER_SCHEMA},  # type: ignore[typeddict-unknown-key]
        temperature=0,
        max_tokens=48,
        logprobs=True,
        top_logprobs=5,
    )
    choice = completion.choices[0]
    _check_answer(completion)
    assert choice.finish_reason == "stop" and choice.logprobs is not None and choice.logprobs.content
    tokens = choice.logprobs.content
    # every generated token, in order, and nothing else (the end-of-generation token is not text)
    assert "".join(t.token for t in tokens) == choice.message.content
    for t in tokens:
        assert t.logprob <= 0.0 and bytes(t.bytes or []).decode("utf-8", errors="replace") == t.token
        top = [a.logprob for a in t.top_logprobs]
        assert len(top) == 5 and top == sorted(top, reverse=True) and all(x <= 0.0 for x in top)
        assert sum(math.exp(x) for x in top) <= 1.0 + 1e-9
        # the raw distribution, before the grammar: the chosen token is listed with the same value when in the top 5
        assert all(abs(a.logprob - t.logprob) < 1e-9 for a in t.top_logprobs if a.token == t.token)
    # without logprobs there are none
    plain = sync_client.chat.completions.create(model="local", messages=MESSAGES, max_tokens=4)
    assert plain.choices[0].logprobs is None


def test_async_client_serialises_concurrent_requests(clients: tuple[openai.OpenAI, openai.AsyncOpenAI]) -> None:
    _, async_client = clients

    async def ask() -> Any:
        return await async_client.chat.completions.create(
            model="local",
            messages=MESSAGES,
            response_format=JSON_OBJECT_WITH_SCHEMA,
            temperature=0,
            max_tokens=48,
        )

    async def both() -> list[Any]:
        return list(await asyncio.gather(ask(), ask()))

    first, second = asyncio.run(both())
    _check_answer(first)  # two requests at once share one Llama: the lock serialises them
    _check_answer(second)


def test_settings_clients_share_the_engine(model_path: Path) -> None:
    from qa.settings import Settings

    settings = Settings(local_model=model_path, local_context_window=4096, timeout=5)
    engine = get_engine(model_path, 4096)
    client = local.sync_client(settings)
    try:
        transport = client._client._transport
        assert isinstance(transport, LocalTransport) and transport.engine is engine
        assert client.timeout == 600  # network timeouts are raised to the local floor
    finally:
        client.close()


def test_local_clients_use_the_local_transports(clients: tuple[openai.OpenAI, openai.AsyncOpenAI]) -> None:
    sync_client, async_client = clients
    assert str(sync_client.base_url) == "http://qa.local/v1/"
    assert sync_client.max_retries == 0 and async_client.max_retries == 0
    assert isinstance(async_client._client._transport, AsyncLocalTransport)
    models = sync_client.models.list()
    assert [m.id for m in models.data][0].startswith("Qwen2.5 Coder")


def _grammar_params(messages: list[Any], max_tokens: int = 48) -> dict[str, Any]:
    from qa.local.bridge import _chat_params

    body = {"messages": messages, "response_format": JSON_OBJECT_WITH_SCHEMA, "temperature": 0, "max_tokens": max_tokens}
    return _chat_params(body)[0]


def _cold(engine: Any) -> None:
    engine.forget_prefixes()
    engine.llama.reset()
    engine.llama._ctx.kv_cache_clear()


def test_greedy_loop_matches_llama_cpp_python(model_path: Path) -> None:
    """qa's generation loop (grammar checked on the greedy token first) writes what create_chat_completion writes."""
    engine = get_engine(model_path)
    params = _grammar_params(MESSAGES)
    _cold(engine)
    ours = engine.chat_completion(params, top_logprobs=3)
    _cold(engine)
    recorder = _LogprobRecorder(engine.llama, 3)
    theirs = engine.llama.create_chat_completion(**params, logits_processor=[recorder])
    assert ours["choices"][0]["message"]["content"] == theirs["choices"][0]["message"]["content"]
    assert ours["choices"][0]["finish_reason"] == theirs["choices"][0]["finish_reason"]
    assert ours["usage"]["prompt_tokens"] == theirs["usage"]["prompt_tokens"]
    assert ours["usage"]["completion_tokens"] == theirs["usage"]["completion_tokens"]
    mine = ours["choices"][0]["logprobs"]["content"]
    assert [t["token"] for t in mine] == [t["token"] for t in recorder.entries]
    for a, b in zip(mine, recorder.entries, strict=True):
        assert abs(a["logprob"] - b["logprob"]) < 1e-3
        assert [t["token"] for t in a["top_logprobs"]] == [t["token"] for t in b["top_logprobs"]]


def test_follow_up_reuses_the_prompt_prefix(model_path: Path) -> None:
    """A second question after the same long context evaluates only what differs; saved states serve alternation."""
    engine = get_engine(model_path)
    context = "Passages:\n" + " ".join(f"Sentence {i} says the river Ob is {i} km long." for i in range(40))
    a = [MESSAGES[0], {"role": "user", "content": context + "\n\nQuestion: Which city is the capital of France?"}]
    b = [MESSAGES[0], {"role": "user", "content": context + "\n\nQuestion: How long is the river Ob?"}]
    other = [MESSAGES[0], {"role": "user", "content": "Question: Which city is the capital of Italy?"}]
    _cold(engine)
    first = engine.chat_completion(_grammar_params(a, 8))
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    second = engine.chat_completion(_grammar_params(b, 8))
    shared = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert second["usage"]["prompt_tokens"] - shared < 20  # only the question and the assistant turn are new
    engine.chat_completion(_grammar_params(other, 8))  # the live KV cache now holds another prompt
    again = engine.chat_completion(_grammar_params(a, 8))
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == first["usage"]["prompt_tokens"] - 1
    assert again["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    engine.prefix_cache_bytes = 0  # bounded: with no room, nothing is kept
    engine.forget_prefixes()
    engine.chat_completion(_grammar_params(other, 8))
    assert engine._prefixes == {}
    engine.prefix_cache_bytes = local.engine._PREFIX_CACHE_BYTES


def test_kv_states_on_disk_serve_a_later_process(model_path: Path, tmp_path: Path) -> None:
    """A state saved on disk after one call lets a fresh KV cache (as in a new process) skip the shared prefix."""
    from qa.local.engine import _DiskStates

    engine = get_engine(model_path)
    context = "Passages:\n" + " ".join(f"Line {i}: the lake Baikal is {i} m deep." for i in range(30))
    a = [MESSAGES[0], {"role": "user", "content": context + "\n\nQuestion: How deep is lake Baikal?"}]
    b = [MESSAGES[0], {"role": "user", "content": context + "\n\nQuestion: Which lake is it?"}]
    saved, engine.disk_states = engine.disk_states, _DiskStates(tmp_path / "kv", 64 * 2**20)
    try:
        _cold(engine)
        engine.chat_completion(_grammar_params(a, 8))
        assert len(list((tmp_path / "kv").glob("*.state"))) == 1
        _cold(engine)  # nothing live, nothing in memory: only the disk remains
        again = engine.chat_completion(_grammar_params(b, 8))
        assert again["usage"]["prompt_tokens"] - again["usage"]["prompt_tokens_details"]["cached_tokens"] < 20
        _cold(engine)
        engine.disk_states = None
        cold = engine.chat_completion(_grammar_params(b, 8))
        assert cold["choices"][0]["message"]["content"] == again["choices"][0]["message"]["content"]
        kept = sorted((tmp_path / "kv").glob("*.state"))
        engine.disk_states = _DiskStates(tmp_path / "kv", 1)  # bounded: a state larger than the bound is not kept
        engine.chat_completion(_grammar_params([MESSAGES[0], {"role": "user", "content": "Hello?"}], 4))
        assert sorted((tmp_path / "kv").glob("*.state")) == kept
    finally:
        engine.disk_states = saved
        _cold(engine)


def test_local_transports_stream_what_they_answer(clients: tuple[openai.OpenAI, openai.AsyncOpenAI]) -> None:
    sync_client, async_client = clients
    kwargs: Any = {
        "model": "local", "messages": MESSAGES, "response_format": JSON_OBJECT_WITH_SCHEMA, "temperature": 0,
        "max_tokens": 48, "logprobs": True, "top_logprobs": 2,
    }
    whole = sync_client.chat.completions.create(**kwargs)
    chunks = list(sync_client.chat.completions.create(**kwargs, stream=True))
    pieces = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(pieces) > 5 and "".join(pieces) == whole.choices[0].message.content
    last = chunks[-1].choices[0]
    assert last.finish_reason == "stop" and last.logprobs is not None and last.logprobs.content is not None
    assert "".join(t.token for t in last.logprobs.content) == whole.choices[0].message.content

    async def collect() -> str:
        stream = await async_client.chat.completions.create(**kwargs, stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(collect()) == whole.choices[0].message.content
    # a stream closed early frees the engine for the next request
    stream = sync_client.chat.completions.create(**kwargs, stream=True)
    next(iter(stream))
    stream.close()
    _check_answer(sync_client.chat.completions.create(**{k: v for k, v in kwargs.items() if k != "logprobs"}))


# --------------------------------------------------------------------------- bridge errors (fake engine, no model)


class _FakeEngine:
    """Stands in for LocalEngine: records params and answers or raises."""

    name = "fake-model"

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []
        self.top_logprobs: list[int | None] = []

    def chat_completion(
        self, params: dict[str, Any], *, lock_timeout: float | None = None, top_logprobs: int | None = None
    ) -> dict[str, Any]:
        self.calls.append(params)
        self.top_logprobs.append(top_logprobs)
        if self.error is not None:
            raise self.error
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 0,
            "model": "ignored",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "hi"},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }


    def generate(
        self, params: dict[str, Any], *, lock_timeout: float | None = None, top_logprobs: int | None = None
    ) -> Generator[str, None, Generation]:
        self.calls.append(params)
        self.top_logprobs.append(top_logprobs)
        if self.error is not None:
            raise self.error
        yield "h"
        yield "i"
        return Generation(text="hi", finish_reason="stop", prompt_tokens=3, completion_tokens=2, cached_tokens=1)


def _fake_client(engine: Any) -> openai.OpenAI:
    transport = LocalTransport(engine)
    return openai.OpenAI(
        base_url="http://qa.local/v1", api_key="local", max_retries=0, http_client=httpx2.Client(transport=transport)
    )


def test_bridge_passes_sampling_params_and_returns_usage() -> None:
    engine = _FakeEngine()
    with _fake_client(engine) as client:
        completion = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "hello"}],
            temperature=0.3,
            top_p=0.9,
            seed=7,
            stop=["\n"],
            max_completion_tokens=5,
        )
    assert engine.calls == [
        {
            "messages": [{"role": "user", "content": "hello"}],
            "temperature": 0.3,
            "top_p": 0.9,
            "seed": 7,
            "stop": ["\n"],
            "max_tokens": 5,
        }
    ]
    assert completion.model == "m"
    assert completion.usage is not None and completion.usage.total_tokens == 4


def test_bridge_passes_logprobs_requests_and_checks_them() -> None:
    engine = _FakeEngine()
    with _fake_client(engine) as client:
        messages: Any = [{"role": "user", "content": "hello"}]
        client.chat.completions.create(model="m", messages=messages)
        client.chat.completions.create(model="m", messages=messages, logprobs=True, top_logprobs=3)
        client.chat.completions.create(model="m", messages=messages, logprobs=True)
        with pytest.raises(openai.BadRequestError, match="top_logprobs"):
            client.chat.completions.create(model="m", messages=messages, logprobs=True, top_logprobs=50)
    assert engine.top_logprobs == [None, 3, 0]
    assert all("logprobs" not in c and "top_logprobs" not in c for c in engine.calls)


def test_bridge_inference_error_is_a_500_json_error() -> None:
    with _fake_client(_FakeEngine(RuntimeError("boom"))) as client:
        with pytest.raises(openai.InternalServerError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 500
    assert "boom" in info.value.message


def test_bridge_context_overflow_is_a_400() -> None:
    error = ValueError("Requested tokens (9000) exceed context window of 4096")
    with _fake_client(_FakeEngine(error)) as client:
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert info.value.code == "context_length_exceeded"


def test_bridge_streams_server_sent_events() -> None:
    engine = _FakeEngine()
    with _fake_client(engine) as client:
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True, stream_options={"include_usage": True}
        )
        chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks if c.choices] == ["h", "i", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (3, 2)
    assert usage.prompt_tokens_details is not None and usage.prompt_tokens_details.cached_tokens == 1
    with _fake_client(_FakeEngine(ValueError("Requested tokens (9000) exceed context window of 4096"))) as client:
        with pytest.raises(openai.BadRequestError) as info:  # an error before the first token is an HTTP error
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)
    assert info.value.code == "context_length_exceeded"


def test_async_bridge_streams() -> None:
    async def run() -> list[str | None]:
        transport = AsyncLocalTransport(_FakeEngine())
        async with openai.AsyncOpenAI(
            base_url="http://qa.local/v1", api_key="local", max_retries=0,
            http_client=httpx2.AsyncClient(transport=transport),
        ) as client:
            stream = await client.chat.completions.create(
                model="m", messages=[{"role": "user", "content": "x"}], stream=True
            )
            return [c.choices[0].delta.content async for c in stream if c.choices]

    assert asyncio.run(run()) == ["h", "i", None]


def test_bridge_unknown_path_is_a_404() -> None:
    engine = _FakeEngine()
    bad_format: Any = {"type": "xml"}
    with _fake_client(engine) as client:
        with pytest.raises(openai.NotFoundError):
            client.embeddings.create(model="m", input="x")
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(
                model="m",
                messages=[{"role": "user", "content": "x"}],
                response_format=bad_format,
            )
    assert engine.calls == []


def test_async_bridge_error_and_success() -> None:
    def client(engine: Any) -> openai.AsyncOpenAI:
        transport = AsyncLocalTransport(engine)
        return openai.AsyncOpenAI(
            base_url="http://qa.local/v1", api_key="local", max_retries=0,
            http_client=httpx2.AsyncClient(transport=transport),
        )

    async def run() -> None:
        ok, bad = client(_FakeEngine()), client(_FakeEngine(RuntimeError("x")))
        async with ok, bad:
            completion = await ok.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            assert completion.choices[0].message.content == "hi"
            with pytest.raises(openai.InternalServerError):
                await bad.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])

    asyncio.run(run())


# --------------------------------------------------------------------------- (b) llama_cpp.server parity


# `python -m llama_cpp.server`, except that an AMX-enabled llama.cpp build loads without extra buffer
# types, as qa.local does: in this VM the AMX kernels die with SIGILL (see qa.local.engine._extra_buffers_wanted).
_SERVER_MAIN = """
import runpy, sys
import llama_cpp.llama_cpp as low
if b"AMX_INT8 = 1" in low.llama_print_system_info():
    _default = low.llama_model_default_params
    def _params():
        params = _default()
        params.use_extra_bufts = False
        return params
    low.llama_model_default_params = _params
runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
"""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server_url(model_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    for module in ("fastapi", "uvicorn", "sse_starlette", "starlette_context", "pydantic_settings"):
        pytest.importorskip(module, reason=f"{module} missing: pip install 'llama-cpp-python[server]'")
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    threads = str(os.cpu_count() or 1)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER_MAIN, "--model", str(model_path), "--host", "127.0.0.1",
             "--port", str(port), "--n_ctx", "2048", "--n_threads", threads, "--n_threads_batch", threads,
             "--verbose", "False"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        with httpx2.Client(trust_env=False, timeout=2) as http:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-3000:]}")
                try:
                    if http.get(f"{url}/v1/models").status_code == 200:
                        break
                except httpx2.TransportError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"llama_cpp.server not ready after 120s:\n{log_path.read_text()[-3000:]}")
                time.sleep(0.25)
        yield f"{url}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


@pytest.fixture
def server_client(server_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=server_url, api_key="none", max_retries=0, http_client=httpx2.Client(trust_env=False, timeout=300)
    ) as client:
        yield client


def test_server_answers_json_object_with_schema(server_client: openai.OpenAI) -> None:
    completion = server_client.chat.completions.create(
        model="local",
        messages=MESSAGES,
        response_format=JSON_OBJECT_WITH_SCHEMA,
        temperature=0,
        max_tokens=48,
    )
    _check_answer(completion)


def test_server_rejects_json_schema_response_format(server_client: openai.OpenAI) -> None:
    # llama_cpp.server 0.3.36 only knows "text" / "json_object"; its request validation error is
    # caught by its own route handler and returned as a 500 naming response_format.
    json_schema_format: Any = {"type": "json_schema", "json_schema": {"name": "answer", "schema": ANSWER_SCHEMA}}
    with pytest.raises(openai.InternalServerError) as info:
        server_client.chat.completions.create(
            model="local",
            messages=MESSAGES,
            response_format=json_schema_format,
            max_tokens=8,
        )
    assert info.value.status_code == 500
    assert "response_format" in str(info.value.body)


# --------------------------------------------------------------------------- (c) model data


def _fake_spec(tmp_path: Path, chunks: list[bytes], *, corrupt: int | None = None, whole: str | None = None) -> tuple[
    LocalModelSpec, dict[str, Path]
]:
    parts: list[ModelPart] = []
    files: dict[str, Path] = {}
    for i, data in enumerate(chunks, start=1):
        path = tmp_path / "pkgs" / f"fake_part{i}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        sha = hashlib.sha256(data).hexdigest()
        if corrupt == i:
            sha = hashlib.sha256(b"something else").hexdigest()
        parts.append(ModelPart(f"fake-part{i}", f"fake_part{i}", f"data/part{i:02d}.bin", sha, len(data)))
        files[f"fake_part{i}"] = path
    joined = b"".join(chunks)
    spec = LocalModelSpec(
        name="fake",
        description="test model",
        parts=tuple(parts),
        sha256=whole or hashlib.sha256(joined).hexdigest(),
        size=len(joined),
    )
    return spec, files


def test_prepare_model_joins_verifies_and_caches(tmp_path: Path) -> None:
    chunks = [b"GGUF" + b"a" * 1000, b"b" * 777, b"c" * 3]
    spec, files = _fake_spec(tmp_path, chunks)
    calls: list[str] = []

    def locate(part: ModelPart) -> Path | None:
        calls.append(part.package)
        return files.get(part.package)

    cache = tmp_path / "cache"
    path = prepare_model(spec, cache=cache, locate=locate)
    assert path.parent == cache and path.read_bytes() == b"".join(chunks)
    assert sorted(p.name for p in cache.iterdir()) == sorted([path.name, path.name + ".verified.json"])
    assert len(calls) == 3

    calls.clear()
    assert prepare_model(spec, cache=cache, locate=locate) == path
    assert calls == []  # the marker matched: no lookup, no hashing

    # Same size, different bytes, new mtime: re-hashed, found wrong, rebuilt from the parts.
    path.write_bytes(b"x" * spec.size)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10_000_000))
    assert prepare_model(spec, cache=cache, locate=locate).read_bytes() == b"".join(chunks)
    assert len(calls) == 3


def test_prepare_model_names_the_corrupt_part(tmp_path: Path) -> None:
    spec, files = _fake_spec(tmp_path, [b"one" * 10, b"two" * 10, b"three"], corrupt=2)
    cache = tmp_path / "cache"
    with pytest.raises(ConfigurationError, match=r"part02\.bin from package fake-part2 .*corrupt.*sha256") as info:
        prepare_model(spec, cache=cache, locate=lambda p: files.get(p.package))
    assert "pip install --force-reinstall fake-part2" in str(info.value)
    assert list(cache.iterdir()) == []  # the temp file was removed


def test_prepare_model_detects_wrong_size_and_whole_file_hash(tmp_path: Path) -> None:
    spec, files = _fake_spec(tmp_path, [b"abc", b"def"])
    files["fake_part1"].write_bytes(b"abcd")
    with pytest.raises(ConfigurationError, match=r"fake-part1 .*size 4 bytes, expected 3"):
        prepare_model(spec, cache=tmp_path / "c1", locate=lambda p: files.get(p.package))

    spec, files = _fake_spec(tmp_path, [b"abc", b"def"], whole="0" * 64)
    with pytest.raises(ConfigurationError, match="joined model 'fake' has sha256"):
        prepare_model(spec, cache=tmp_path / "c2", locate=lambda p: files.get(p.package))


def test_missing_packages_say_what_to_install(tmp_path: Path) -> None:
    part = ModelPart("qa-no-such-dist", "qa_no_such_package_for_tests", "data/part01.bin", "0" * 64, 1)
    spec = LocalModelSpec(name="ghost", description="", parts=(part, part), sha256="0" * 64, size=2)
    assert locate_part(part) is None
    with pytest.raises(ConfigurationError) as info:
        prepare_model(spec, cache=tmp_path)
    message = str(info.value)
    assert "pip install 'qa[local]'" in message
    assert "pip install qa-no-such-dist" in message
    assert "QA_LOCAL_MODEL" in message

    # a model of another extra names that extra; one of no extra names just its packages
    with pytest.raises(ConfigurationError) as info:
        prepare_model(dataclasses.replace(spec, extra="qwen-1.5b"), cache=tmp_path)
    assert "pip install 'qa[qwen-1.5b]'" in str(info.value) and "qa[local]" not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        prepare_model(dataclasses.replace(spec, extra=None), cache=tmp_path)
    assert "`pip install qa-no-such-dist`" in str(info.value) and "qa[" not in str(info.value)


def test_user_gguf_path_bypasses_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gguf = tmp_path / "mine.gguf"
    gguf.write_bytes(b"GGUF not checked")
    monkeypatch.setenv("QA_LOCAL_MODEL", str(gguf))
    assert default_model_path() == gguf
    monkeypatch.setenv("QA_LOCAL_MODEL", str(tmp_path / "absent.gguf"))
    with pytest.raises(ConfigurationError, match="absent.gguf"):
        default_model_path()
    with pytest.raises(ConfigurationError, match="does not exist"):
        get_engine(tmp_path / "absent.gguf")


def test_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "qa"
    monkeypatch.setenv("QA_CACHE_DIR", str(tmp_path / "explicit"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("QA_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "qa"


def test_registry_is_consistent() -> None:
    assert DEFAULT_MODEL in KNOWN_MODELS
    for name, spec in KNOWN_MODELS.items():
        assert spec.name == name
        assert sum(p.size for p in spec.parts) == spec.size
        assert all(len(p.sha256) == 64 for p in spec.parts) and len(spec.sha256) == 64
        if len(spec.parts) == 1:
            assert spec.parts[0].sha256 == spec.sha256
        assert spec.decline_threshold is None or 0 < spec.decline_threshold < 1


@pytest.mark.parametrize("name", sorted(KNOWN_MODELS))
def test_installed_registry_models_join_to_their_checksum(name: str, tmp_path: Path) -> None:
    """Every registered model whose packages are installed joins, part by part, into the GGUF its sha256 names."""
    spec = KNOWN_MODELS[name]
    missing = [p.distribution for p in spec.parts if locate_part(p) is None]
    if missing:
        pytest.skip(f"{name} is not installed (missing {', '.join(missing[:3])}...)")
    path = prepare_model(spec, cache=tmp_path)
    assert path.stat().st_size == spec.size
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 22):
            digest.update(block)
    assert digest.hexdigest() == spec.sha256
    with path.open("rb") as fh:
        assert fh.read(4) == b"GGUF"
    assert local.spec_for(path) == spec and local.spec_for(name) == spec


# --------------------------------------------------------------------------- the whole pipeline on the seed article

SEED = Path(__file__).resolve().parent.parent / "examples" / "nk_soldiers_kursk.txt"


def _check_seed_answer(answer: qa.Answer[Any]) -> None:
    """Structure and verified citations, not wording: a found answer whose citations are exact source slices."""
    text = SEED.read_text(encoding="utf-8")
    assert answer.found and answer.answer
    assert answer.citations
    for c in answer.citations:
        assert text[c.start : c.end] == c.quote
    # The article gives the figure as "4,000 killed or wounded" and "around 1,200"; a cited span must hold one.
    assert any("4,000" in c.quote or "1,200" in c.quote for c in answer.citations)
    assert answer.usage.calls >= 1 and answer.usage.prompt_tokens > 0


@pytest.mark.local
def test_in_process_default_answers_the_seed_question(model_path: Path) -> None:
    settings = qa.Settings.from_env({"QA_CACHE": "0"})  # nothing configured: the embedded model (no reply cache)
    assert settings.uses_local_model
    index = qa.Index.from_paths(SEED, settings)
    # the bundled model's calibrated threshold applies, read from the logits of the answer it wrote
    assert index.decline_threshold is not None
    answer = index.ask("How many casualties?")
    _check_seed_answer(answer)
    assert answer.decline_probability is not None and 0.0 < answer.decline_probability < index.decline_threshold


@pytest.mark.local
def test_llama_cpp_server_through_openai_base_url(server_url: str) -> None:
    settings = qa.Settings.from_env(
        {"OPENAI_BASE_URL": server_url, "OPENAI_API_KEY": "local", "QA_CACHE": "0"}, timeout=300
    )  # a busy machine is slow
    index = qa.Index.from_paths(SEED, settings)
    answer = index.ask("How many casualties?")
    _check_seed_answer(answer)
    # llama_cpp.server answers a json_schema response_format with HTTP 500; qa falls back once and remembers.
    assert isinstance(index.llm, qa.OpenAILLM) and index.llm.mode == "json_object"
    assert index.decline_threshold is None and answer.decline_probability is None  # "auto" is off for servers


@pytest.mark.local
def test_llama_cpp_server_logprobs_give_the_decline_probability(server_url: str) -> None:
    # llama_cpp.server (logits_all on by default) returns logprobs itself: with a threshold set, the same model
    # over HTTP gives a decline probability like the in-process engine's for the seed question (~0.001).
    env = {"OPENAI_BASE_URL": server_url, "OPENAI_API_KEY": "local", "QA_DECLINE_THRESHOLD": "0.5", "QA_CACHE": "0"}
    index = qa.Index.from_paths(SEED, qa.Settings.from_env(env, timeout=300))  # a busy machine is slow
    answer = index.ask("How many casualties?")
    _check_seed_answer(answer)
    assert answer.decline_probability is not None and 0.0 < answer.decline_probability < 0.05

"""Retries, typed errors and structured-output fallback, through the real openai client on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

import qa
from qa.testing import OpenAIServer

from .test_pipeline import GOOD, Q4000, reply

LLAMA_CPP_REJECTION = {
    "error": {
        "message": "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), "
        "'msg': \"Input should be 'text' or 'json_object'\", 'input': 'json_schema'}]",
        "type": "internal_server_error",
    }
}


def test_json_schema_rejected_falls_back_once_and_is_remembered(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.error(500, body=LLAMA_CPP_REJECTION)
    server.reply_json(GOOD)
    server.reply_json(GOOD)
    index = qa.Index([seed_doc], settings)
    first = index.ask("How many casualties?")
    second = index.ask("How many casualties?")
    assert first.found and second.found
    kinds = [r["response_format"]["type"] for r in server.requests]
    assert kinds == ["json_schema", "json_object", "json_object"]  # the rejection costs one call, once
    assert "schema" in server.requests[1]["response_format"]
    # llama-cpp-python decodes json_object with a grammar made from the schema: no need to spell it out.
    assert "JSON schema" not in server.requests[1]["messages"][0]["content"]
    assert first.usage.retries == 0 and first.usage.calls == 1


@pytest.mark.parametrize("schema_in_prompt", ["auto", "always"])
def test_json_object_fallback_spells_out_the_schema_unless_the_server_enforces_it(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document, schema_in_prompt: str
) -> None:
    # Another server's rejection (OpenAI-style 400): its json_object mode ignores "schema", so the
    # prompt must carry it; after llama.cpp's rejection only "always" puts it there.
    server.error(400, "response_format json_schema is not supported by this model")
    server.reply_json(GOOD)
    tuned = settings.model_copy(update={"schema_in_prompt": schema_in_prompt})
    assert qa.Index([seed_doc], tuned).ask("How many casualties?").found
    system = server.requests[1]["messages"][0]["content"]
    assert "JSON schema" in system and '"quotes"' in system and '"title"' not in system
    server.error(500, body=LLAMA_CPP_REJECTION)
    server.reply_json(GOOD)
    assert qa.Index([seed_doc], tuned).ask("How many casualties?").found
    assert ("JSON schema" in server.requests[3]["messages"][0]["content"]) == (schema_in_prompt == "always")


def test_falls_back_to_plain_text_json(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.error(400, "response_format json_schema is not supported")
    server.error(400, "response_format json_object is not supported")
    server.reply("Here you go:\n```json\n" + __import__("json").dumps(GOOD) + "\n```")
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and len(answer.citations) == 2
    assert "response_format" not in server.requests[2]


def test_explicit_mode_does_not_fall_back(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.error(500, body=LLAMA_CPP_REJECTION)
    strict = settings.model_copy(update={"structured_output": "json_schema"})
    with pytest.raises(qa.RequestRejectedError):
        qa.Index([seed_doc], strict).ask("How many casualties?")
    assert len(server.requests) == 1


def test_429_with_retry_after_then_success(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.error(429, "slow down", headers={"Retry-After": "1"})
    server.reply_json(GOOD, prompt_tokens=300)
    started = time.monotonic()
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert time.monotonic() - started >= 0.9  # Retry-After honoured (backoff alone would wait 0.01 s)
    assert answer.found
    assert answer.usage.attempts == 2 and answer.usage.retries == 1 and answer.usage.calls == 1


def test_503_twice_then_success(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.error(503)
    server.error(503)
    server.reply_json(GOOD)
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and answer.usage.retries == 2 and answer.usage.attempts == 3


def test_retries_are_bounded(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    few = settings.model_copy(update={"max_retries": 2})
    for _ in range(3):
        server.error(502, headers={"x-request-id": "req-42"})
    with pytest.raises(qa.ServerError) as info:
        qa.Index([seed_doc], few).ask("How many casualties?")
    assert info.value.status_code == 502 and info.value.attempts == 3 and info.value.request_id == "req-42"
    assert len(server.requests) == 3


def test_401_raises_at_once(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.error(401, "invalid api key")
    with pytest.raises(qa.AuthenticationError) as info:
        qa.Index([seed_doc], settings).ask("How many casualties?")
    assert info.value.status_code == 401 and info.value.attempts == 1
    assert len(server.requests) == 1
    assert isinstance(info.value, qa.LLMError) and isinstance(info.value, qa.QAError)


@pytest.mark.parametrize("status", [400, 403, 404])
def test_client_errors_are_not_retried(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document, status: int
) -> None:
    server.error(status, "nope")
    expected = qa.AuthenticationError if status == 403 else qa.RequestRejectedError
    with pytest.raises(expected):
        qa.Index([seed_doc], settings).ask("How many casualties?")
    assert len(server.requests) == 1


def test_timeout_is_retried_then_succeeds(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    quick = settings.model_copy(update={"timeout": 0.3})
    server.delay(2.0)
    server.reply_json(GOOD)
    answer = qa.Index([seed_doc], quick).ask("How many casualties?")
    assert answer.found and answer.usage.retries == 1


def test_timeouts_exhaust_into_typed_error(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    quick = settings.model_copy(update={"timeout": 0.2, "max_retries": 1})
    server.delay(2.0)
    server.delay(2.0)
    with pytest.raises(qa.LLMTimeoutError) as info:
        qa.Index([seed_doc], quick).ask("How many casualties?")
    assert info.value.attempts == 2


def test_truncated_body_is_retried(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.truncated(__import__("json").dumps(GOOD))
    server.reply_json(GOOD)
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and answer.usage.retries == 1


def test_connection_refused_is_typed(seed_doc: qa.Document) -> None:
    with OpenAIServer() as gone:
        url = gone.base_url
    settings = qa.Settings(base_url=url, api_key="k", max_retries=1, retry_initial_wait=0.01)
    with pytest.raises(qa.LLMConnectionError) as info:
        qa.Index([seed_doc], settings).ask("How many casualties?")
    assert info.value.attempts == 2


def test_usage_summed_across_retries_and_reasks(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.error(503)
    server.reply_json(reply([(1, "invented words")], "9,999"), prompt_tokens=100, completion_tokens=10)
    server.error(429, headers={"Retry-After": "0"})
    server.reply_json(reply([(1, Q4000)], "4,000"), prompt_tokens=120, completion_tokens=12)
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.usage.model_dump() == {
        "prompt_tokens": 220, "completion_tokens": 22, "calls": 2, "attempts": 4, "reasks": 1, "retries": 2,
        "cached_calls": 0,
        "repeats": 0,
    }  # fmt: skip


def test_async_retries(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.error(500, body=LLAMA_CPP_REJECTION)
    server.error(503)
    server.reply_json(GOOD)

    async def go() -> Any:
        return await qa.Index([seed_doc], settings).aask("How many casualties?")

    answer = asyncio.run(go())
    assert answer.found and answer.usage.retries == 1
    assert [r["response_format"]["type"] for r in server.requests] == ["json_schema", "json_object", "json_object"]


def test_api_key_and_model_are_sent(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.reply_json(GOOD)
    qa.Index([seed_doc], settings).ask("How many casualties?")
    assert server.request_headers[0]["authorization"] == "Bearer sk-test"
    assert server.requests[0]["model"] == "gpt-4o-mini"

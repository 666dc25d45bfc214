"""Tests of `qa.testing.OpenAIServer` driven by the real `openai` client (sync and async)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import pytest

from qa.testing import Delayed, ErrorReply, OpenAIServer, Reply

MESSAGES: list[Any] = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


def sync_client(server: OpenAIServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, **kwargs)


def async_client(server: OpenAIServer, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, **kwargs)


def ask(server: OpenAIServer, **kwargs: Any) -> Any:
    with sync_client(server, **kwargs) as client:
        return client.chat.completions.create(model="gpt-test", messages=MESSAGES)


# --------------------------------------------------------------------------- lifecycle


def test_base_url_is_loopback_v1_on_ephemeral_port(server: OpenAIServer) -> None:
    assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
    assert server.port > 0


def test_base_url_before_start_raises() -> None:
    with pytest.raises(RuntimeError):
        OpenAIServer().base_url


def test_cannot_start_twice() -> None:
    srv = OpenAIServer()
    with srv:
        with pytest.raises(RuntimeError):
            srv.start()
    srv.stop()  # idempotent
    with pytest.raises(RuntimeError):
        srv.start()


def test_stop_leaves_no_threads() -> None:
    before = set(threading.enumerate())
    with OpenAIServer() as srv:
        srv.reply("a")
        srv.reply("b")
        with sync_client(srv) as client:  # keep-alive connection left open until client close
            client.chat.completions.create(model="m", messages=MESSAGES)
            client.chat.completions.create(model="m", messages=MESSAGES)
            started = time.monotonic()
            srv.stop()  # stops even though the client still holds an idle keep-alive connection
            assert time.monotonic() - started < 1.0
    assert set(threading.enumerate()) <= before


# --------------------------------------------------------------------------- successful replies


def test_sync_reply_content_usage_and_model_echo(server: OpenAIServer) -> None:
    server.reply("Paris", prompt_tokens=12, completion_tokens=3)
    out = ask(server)
    assert out.choices[0].message.content == "Paris"
    assert out.choices[0].message.role == "assistant"
    assert out.choices[0].finish_reason == "stop"
    assert out.model == "gpt-test"
    assert out.object == "chat.completion"
    assert out.id.startswith("chatcmpl-")
    assert out.usage is not None
    assert (out.usage.prompt_tokens, out.usage.completion_tokens, out.usage.total_tokens) == (12, 3, 15)
    assert out._request_id is not None
    server.assert_done()


def test_async_reply(server: OpenAIServer) -> None:
    server.reply("Paris", model="served-model", finish_reason="length")
    server.reply_json({"answer": "Paris", "citations": [1, 2]})

    async def main() -> tuple[Any, Any]:
        async with async_client(server) as client:
            first = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            second = await client.chat.completions.create(model="gpt-test", messages=MESSAGES)
            return first, second

    first, second = asyncio.run(main())
    assert first.choices[0].message.content == "Paris"
    assert first.model == "served-model"
    assert first.choices[0].finish_reason == "length"
    assert first.usage.total_tokens == 15
    assert json.loads(second.choices[0].message.content) == {"answer": "Paris", "citations": [1, 2]}
    assert len(server.requests) == 2


def test_async_concurrent_requests_each_get_one_reply(server: OpenAIServer) -> None:
    for _ in range(8):
        server.respond_with(lambda req: "echo:" + req["messages"][0]["content"])

    async def main() -> list[str]:
        async with async_client(server) as client:
            outs = await asyncio.gather(
                *(
                    client.chat.completions.create(model="m", messages=[{"role": "user", "content": str(i)}])
                    for i in range(8)
                )
            )
            return [o.choices[0].message.content or "" for o in outs]

    assert asyncio.run(main()) == [f"echo:{i}" for i in range(8)]
    assert sorted(r["messages"][0]["content"] for r in server.requests) == [str(i) for i in range(8)]
    server.assert_done()


def test_respond_with_answers_from_the_prompt(server: OpenAIServer) -> None:
    def answer(request: dict[str, Any]) -> Reply | ErrorReply:
        if "France" in request["messages"][-1]["content"]:
            return Reply("Paris", completion_tokens=1)
        return ErrorReply(400, "unexpected prompt")

    server.respond_with(answer)
    server.respond_with(answer)
    out = ask(server)
    assert out.choices[0].message.content == "Paris"
    with sync_client(server) as client, pytest.raises(openai.BadRequestError, match="unexpected prompt"):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "other"}])


def test_respond_with_function_that_raises_gives_500_and_a_problem(server: OpenAIServer) -> None:
    def broken(request: dict[str, Any]) -> str:
        raise KeyError("oops")

    server.respond_with(broken)
    with pytest.raises(openai.InternalServerError, match="respond_with function raised"):
        ask(server)
    assert server.problems and "KeyError" in server.problems[0]


def test_respond_with_function_returning_garbage_gives_500_and_a_problem(server: OpenAIServer) -> None:
    server.respond_with(lambda request: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(openai.InternalServerError, match="respond_with function returned 42"):
        ask(server)
    assert server.problems == ["respond_with function returned 42"]


def test_requests_and_headers_are_recorded(server: OpenAIServer) -> None:
    server.reply("{}")
    with sync_client(server) as client:
        client.chat.completions.create(
            model="gpt-test",
            messages=MESSAGES,
            response_format={"type": "json_object"},
            temperature=0,
        )
    assert server.requests == [
        {
            "messages": MESSAGES,
            "model": "gpt-test",
            "response_format": {"type": "json_object"},
            "temperature": 0,
        }
    ]
    headers = server.request_headers[0]
    assert headers["authorization"] == "Bearer sk-test"
    assert headers["content-type"] == "application/json"


def test_models_endpoint(server: OpenAIServer) -> None:
    with sync_client(server) as client:
        models = list(client.models.list())
    assert [m.id for m in models] == ["test-model"]
    assert server.requests == []  # not a chat request: nothing recorded, nothing popped


def test_keep_alive_serves_several_requests_on_one_connection(server: OpenAIServer) -> None:
    server.reply("one")
    server.reply("two")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    try:
        contents = []
        for _ in range(2):
            body = json.dumps({"model": "m", "messages": MESSAGES})
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.getheader("Content-Length") is not None
            contents.append(json.loads(resp.read())["choices"][0]["message"]["content"])
            assert not resp.will_close
        assert contents == ["one", "two"]
    finally:
        conn.close()


def test_bad_json_and_unknown_path_are_answered_and_recorded(server: OpenAIServer) -> None:
    server.reply("kept")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=2)
    try:
        conn.request("POST", "/v1/chat/completions", b"{not json", {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400
        assert "not JSON" in json.loads(resp.read())["error"]["message"]
        conn.request("POST", "/v1/audio/speech", b"{}", {"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 404
        resp.read()
    finally:
        conn.close()
    assert server.pending == 1  # neither request consumed the script
    assert len(server.problems) == 2
    with pytest.raises(AssertionError):
        server.assert_done()


# --------------------------------------------------------------------------- scripted failures


def test_rate_limit_with_retry_after(server: OpenAIServer) -> None:
    server.error(429, headers={"Retry-After": "1"})
    with pytest.raises(openai.RateLimitError) as info:
        ask(server)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.code == "rate_limit_exceeded"


def test_authentication_error(server: OpenAIServer) -> None:
    server.error(401)
    with pytest.raises(openai.AuthenticationError) as info:
        ask(server)
    assert info.value.status_code == 401
    assert isinstance(info.value.body, dict) and info.value.body["code"] == "invalid_api_key"


def test_service_unavailable_is_internal_server_error(server: OpenAIServer) -> None:
    server.error(503, "overloaded, try later")
    with pytest.raises(openai.InternalServerError, match="overloaded, try later") as info:
        ask(server)
    assert info.value.status_code == 503


def test_llama_cpp_style_500_rejecting_response_format(server: OpenAIServer) -> None:
    body = {"error": {"code": 500, "message": "Invalid response_format: unsupported schema", "type": "server_error"}}
    server.error(500, body=body)
    with pytest.raises(openai.InternalServerError, match="response_format") as info:
        ask(server)
    assert info.value.status_code == 500
    assert info.value.body == body["error"]


def test_raw_text_error_body(server: OpenAIServer) -> None:
    server.error(502, body="<html>Bad Gateway</html>")
    with pytest.raises(openai.InternalServerError) as info:
        ask(server)
    assert info.value.status_code == 502
    assert info.value.response.text == "<html>Bad Gateway</html>"


def test_delayed_reply_times_out_and_server_stops_quickly() -> None:
    srv = OpenAIServer().start()
    try:
        srv.delay(30, then=Reply("too late"))
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError) as info:
            ask(srv, timeout=0.2)
        assert time.monotonic() - started < 2
        assert isinstance(info.value.__cause__, httpx2.TimeoutException)
    finally:
        started = time.monotonic()
        srv.stop()  # the handler is still sleeping: stop must wake it
        assert time.monotonic() - started < 1


def test_delay_kwarg_times_out_async(server: OpenAIServer) -> None:
    server.reply("late", delay=30)

    async def main() -> None:
        async with async_client(server, timeout=0.2) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES)

    with pytest.raises(openai.APITimeoutError):
        asyncio.run(main())


def test_short_delay_then_reply(server: OpenAIServer) -> None:
    server.delay(0.05, then=Delayed(0.01, Reply("after the wait")))
    server.delay(0.01)
    assert ask(server).choices[0].message.content == "after the wait"
    assert ask(server).choices[0].message.content == ""


def test_truncated_body_raises_api_connection_error(server: OpenAIServer) -> None:
    server.truncated("a long answer " * 20)
    server.reply("the connection is fine again")
    with sync_client(server) as client:
        with pytest.raises(openai.APIConnectionError) as info:
            client.chat.completions.create(model="m", messages=MESSAGES)
        # exactly APIConnectionError (not its subclass APITimeoutError), caused by httpx2's protocol error
        assert type(info.value) is openai.APIConnectionError
        assert type(info.value.__cause__) is httpx2.RemoteProtocolError
        assert "peer closed connection without sending complete message body" in str(info.value.__cause__)
        # the same client recovers on a fresh connection
        out = client.chat.completions.create(model="m", messages=MESSAGES)
        assert out.choices[0].message.content == "the connection is fine again"


def test_truncated_body_async(server: OpenAIServer) -> None:
    server.truncated("cut")

    async def main() -> None:
        async with async_client(server) as client:
            await client.chat.completions.create(model="m", messages=MESSAGES)

    with pytest.raises(openai.APIConnectionError) as info:
        asyncio.run(main())
    assert type(info.value) is openai.APIConnectionError
    assert type(info.value.__cause__) is httpx2.RemoteProtocolError


def test_complete_response_with_cut_json_raises_json_decode_error(server: OpenAIServer) -> None:
    # Content-Length is right but the JSON itself is cut: openai does not wrap the parse error.
    server.raw('{"id": "chatcmpl-1", "object": "chat.completion", "choi')
    with pytest.raises(json.JSONDecodeError):
        ask(server)


def test_empty_script_answers_500_naming_the_problem(server: OpenAIServer) -> None:
    with pytest.raises(openai.InternalServerError, match="script ran out") as info:
        ask(server)
    assert info.value.status_code == 500
    assert info.value.code == "script_exhausted"
    assert server.problems == ["script ran out: no scripted reply left for request #1"]
    assert len(server.requests) == 1
    with pytest.raises(AssertionError, match="script ran out"):
        server.assert_done()


def test_enqueue_rejects_non_replies(server: OpenAIServer) -> None:
    with pytest.raises(TypeError):
        server.enqueue("not a reply")  # type: ignore[arg-type]

"""The response cache, ask_many and streaming, through the real openai client against the loopback server."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import qa
from qa.testing import OpenAIServer

Q4000 = "Zelenskyy put the number of killed or wounded North Koreans at 4,000"
GOOD = {"result": {"answer": "4,000 killed or wounded", "quotes": [{"passage": 1, "quote": Q4000}]}}
# No sentence of the article states 9,000: rejected (re-asked, or withheld on the last attempt).
BAD_QUOTE = {"result": {"answer": "9,000 killed", "quotes": [{"passage": 1, "quote": "not in the text"}]}}


def _settings(server: OpenAIServer, tmp_path: Path, **overrides: Any) -> qa.Settings:
    values: dict[str, Any] = {
        "base_url": server.base_url, "api_key": "sk-test", "model": "gpt-4o-mini", "cache_dir": tmp_path,
        "retry_initial_wait": 0.01, "timeout": 5.0,
    }  # fmt: skip
    return qa.Settings(**{**values, **overrides})


# --------------------------------------------------------------------------- response cache


def test_identical_question_is_answered_from_the_cache(
    server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document
) -> None:
    server.reply_json(GOOD, prompt_tokens=700, completion_tokens=40)
    settings = _settings(server, tmp_path)
    with qa.Index([seed_doc], settings) as index:
        first = index.ask("How many casualties?")
    with qa.Index([seed_doc], settings) as index:  # a new index (a new process would do the same)
        again = index.ask("How many casualties?")
    assert len(server.requests) == 1  # no second call
    assert first.usage.calls == 1 and first.usage.cached_calls == 0
    assert again.usage.calls == 0 and again.usage.cached_calls == 1 and again.usage.prompt_tokens == 0
    assert again.answer == first.answer and again.citations == first.citations and again.verified
    assert (tmp_path / "responses.sqlite3").is_file()


def test_edited_document_or_other_settings_miss_the_cache(
    server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document
) -> None:
    settings = _settings(server, tmp_path)
    for _ in range(3):
        server.reply_json(GOOD)
    with qa.Index([seed_doc], settings) as index:
        assert index.ask("How many casualties?").found
    edited = qa.Document(text=seed_doc.text + "\nOne more line.", id=seed_doc.id)
    with qa.Index([edited], settings) as index:
        answer = index.ask("How many casualties?")  # the passages differ: asked again
    assert len(server.requests) == 2 and answer.usage.cached_calls == 0
    with qa.Index([seed_doc], settings.model_copy(update={"max_citations": 2})) as index:
        index.ask("How many casualties?")
    assert len(server.requests) == 3
    with qa.Index([seed_doc], settings.model_copy(update={"cache": False})) as index:
        server.reply_json(GOOD)
        assert index.ask("How many casualties?").usage.cached_calls == 0
    assert len(server.requests) == 4


def test_cache_hit_is_verified_again(server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document) -> None:
    """A cached reply goes through the same checks as a fresh one: a bad quote is re-asked, also from the cache."""
    settings = _settings(server, tmp_path)
    server.reply_json(BAD_QUOTE)
    server.reply_json(GOOD)
    with qa.Index([seed_doc], settings) as index:
        first = index.ask("How many casualties?")
        again = index.ask("How many casualties?")
    assert first.usage.reasks == 1 and first.verified
    assert again.usage.cached_calls == 2 and again.usage.calls == 0 and again.usage.reasks == 1
    assert again.citations == first.citations
    assert len(server.requests) == 2


def test_cache_is_bounded(server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document) -> None:
    settings = _settings(server, tmp_path, cache_max_mb=0.0004)  # ~420 bytes: room for one reply (~300)
    questions = ["How many casualties?", "Who estimated the casualties?", "Where was the ID card holder from?"]
    for _ in questions:
        server.reply_json(GOOD)
    with qa.Index([seed_doc], settings) as index:
        for question in questions:
            index.ask(question)
    with sqlite3.connect(tmp_path / "responses.sqlite3") as db:
        count, size = db.execute("SELECT COUNT(*), SUM(size) FROM responses").fetchone()
        (question,) = db.execute("SELECT reply FROM responses").fetchone()
    assert count == 1 and size <= 0.0004 * 2**20  # only the most recent reply is kept
    assert json.loads(question)["content"] == json.dumps(GOOD)


# --------------------------------------------------------------------------- ask_many


def test_ask_many_keeps_order_and_reports_each_failure(
    server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document
) -> None:
    questions = [f"Question {i}: how many casualties?" for i in range(6)]

    def answer(request: dict[str, Any]) -> Any:
        asked = request["messages"][-1]["content"]
        if "Question 3" in asked:
            from qa.testing import ErrorReply

            return ErrorReply(400, "this one is refused")
        letter = "abcdef"[int(asked.split("Question ")[1][0])]  # no other number than the quoted one
        return json.dumps({"result": {"answer": f"answer {letter}: 4,000", "quotes": [{"passage": 1, "quote": Q4000}]}})

    for _ in questions:
        server.respond_with(answer)
    seen: list[tuple[int, int]] = []
    with qa.Index([seed_doc], _settings(server, tmp_path, cache=False)) as index:
        results = index.ask_many(questions, concurrency=3, progress=lambda done, total: seen.append((done, total)))
    assert len(results) == 6
    for i, result in enumerate(results):
        if i == 3:
            assert isinstance(result, qa.RequestRejectedError) and result.status_code == 400
        else:
            assert isinstance(result, qa.Answer) and result.answer == f"answer {'abcdef'[i]}: 4,000"
    assert sorted(seen) == [(n, 6) for n in range(1, 7)]


def test_aask_many(server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document) -> None:
    for _ in range(3):
        server.reply_json(GOOD)
    with qa.Index([seed_doc], _settings(server, tmp_path, cache=False)) as index:
        results = asyncio.run(index.aask_many(["a?", "b?", "c?"], concurrency=2))
    assert [r.question for r in results if isinstance(r, qa.Answer)] == ["a?", "b?", "c?"]


# --------------------------------------------------------------------------- streaming


def test_stream_yields_text_then_the_verified_answer(
    server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document
) -> None:
    server.reply_json(GOOD, prompt_tokens=700, completion_tokens=40)
    with qa.Index([seed_doc], _settings(server, tmp_path, cache=False)) as index:
        events = list(index.stream("How many casualties?"))
    deltas = [e.text for e in events if isinstance(e, qa.TextDelta)]
    assert len(deltas) > 3 and "".join(deltas) == "4,000 killed or wounded"
    assert not any(isinstance(e, qa.Retraction) for e in events)
    final = events[-1]
    assert isinstance(final, qa.Final) and final.answer.verified and final.answer.citations[0].quote == Q4000
    assert final.answer.usage.prompt_tokens == 700 and final.answer.usage.completion_tokens == 40
    assert server.requests[0]["stream"] is True


def test_stream_retracts_a_rejected_reply(server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document) -> None:
    server.reply_json(BAD_QUOTE)
    server.reply_json(GOOD)
    with qa.Index([seed_doc], _settings(server, tmp_path, cache=False)) as index:
        events = list(index.stream("How many casualties?"))
    kinds = [type(e).__name__ for e in events]
    retraction = kinds.index("Retraction")
    assert "TextDelta" in kinds[:retraction] and "TextDelta" in kinds[retraction + 1 :]
    after = "".join(e.text for e in events[retraction + 1 :] if isinstance(e, qa.TextDelta))
    assert after == "4,000 killed or wounded"
    assert isinstance(events[-1], qa.Final) and events[-1].answer.usage.reasks == 1


def test_stream_retracts_a_withheld_answer(server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document) -> None:
    settings = _settings(server, tmp_path, cache=False, max_attempts=1)
    server.reply_json(BAD_QUOTE)
    with qa.Index([seed_doc], settings) as index:
        events = list(index.stream("How many casualties?"))
    assert isinstance(events[-2], qa.Retraction) and "withheld" in events[-2].reason
    assert isinstance(events[-1], qa.Final) and not events[-1].answer.found


def test_astream_and_cached_stream(server: OpenAIServer, tmp_path: Path, seed_doc: qa.Document) -> None:
    server.reply_json(GOOD)

    async def collect(index: qa.Index) -> list[qa.StreamEvent]:
        return [event async for event in index.astream("How many casualties?")]

    with qa.Index([seed_doc], _settings(server, tmp_path)) as index:
        events = asyncio.run(collect(index))
        cached = list(index.stream("How many casualties?"))
    assert "".join(e.text for e in events if isinstance(e, qa.TextDelta)) == "4,000 killed or wounded"
    assert "".join(e.text for e in cached if isinstance(e, qa.TextDelta)) == "4,000 killed or wounded"
    last = cached[-1]
    assert isinstance(last, qa.Final) and last.answer.usage.cached_calls == 1
    assert len(server.requests) == 1

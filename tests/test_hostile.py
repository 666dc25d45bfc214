"""Hostile replies and oversized input: always a verified Answer or a typed QAError, in bounded time."""

from __future__ import annotations

import json
import time
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

import qa
from qa.limits import json_depth
from qa.testing import OpenAIServer

from .test_pipeline import GOOD, Q4000

SEED_QUOTE = Q4000
# Characters that look like others: Cyrillic a/e/o/p/c, full-width letters, zero-width and direction marks.
LOOKALIKES = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "0": "\uff10", " ": "\u200b "}


def hostile_settings(server: OpenAIServer) -> qa.Settings:
    return qa.Settings(
        base_url=server.base_url, api_key="sk-test", model="m", max_attempts=2, max_retries=1,
        retry_initial_wait=0.0, retry_max_wait=0.0, timeout=3.0, structured_output="json_schema",
    )  # fmt: skip


def lookalike(text: str, every: int) -> str:
    return "".join(LOOKALIKES.get(ch, ch) if i % every == 0 else ch for i, ch in enumerate(text))


def nested(depth: int, leaf: Any = 1) -> Any:
    for _ in range(depth):
        leaf = [leaf]
    return leaf


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**30), max_value=10**30) | st.floats() | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
passage_numbers = st.one_of(
    st.integers(min_value=-(10**12), max_value=10**12), st.just(1), st.just(0), st.just(-1), st.just(2),
    st.text(max_size=5), st.floats(allow_nan=True), st.none(), st.booleans(),
)  # fmt: skip
quotes = st.one_of(
    st.just(SEED_QUOTE), st.text(max_size=500), st.integers(), st.none(),
    st.integers(min_value=1, max_value=7).map(lambda n: lookalike(SEED_QUOTE, n)),
    st.integers(min_value=1, max_value=len(SEED_QUOTE)).map(lambda n: SEED_QUOTE[:n]),
    st.integers(min_value=1, max_value=200_000).map(lambda n: "4,000 " * n),
)  # fmt: skip
quote_objects = st.fixed_dictionaries(
    {"passage": passage_numbers, "quote": quotes},
    optional={"start": st.integers(min_value=-(10**9), max_value=10**9), "end": st.integers(), "x": json_values},
)
results = st.one_of(
    st.none(), json_values,
    st.fixed_dictionaries({"answer": st.one_of(st.text(max_size=700), json_values, st.just("4,000")),
                           "quotes": st.one_of(st.lists(quote_objects, max_size=5), json_values)}),
)  # fmt: skip


def as_content(draw: st.DrawFn) -> str:
    shape = draw(st.sampled_from(["object", "truncated", "deep", "text", "huge", "fenced", "doubled"]))
    valid = json.dumps({"result": draw(results)})
    if shape == "object":
        return valid
    if shape == "truncated":
        return valid[: draw(st.integers(min_value=0, max_value=len(valid)))]
    if shape == "deep":
        depth = draw(st.integers(min_value=1, max_value=50_000))
        opener = draw(st.sampled_from(["[", '{"a":', '{"result":']))
        return opener * depth + "1" + ("]" if opener == "[" else "}") * draw(st.integers(0, depth))
    if shape == "text":
        return draw(st.text(max_size=2000))
    if shape == "huge":
        return json.dumps({"result": {"answer": "x" * draw(st.integers(1, 3_000_000)), "quotes": []}})
    if shape == "fenced":
        return f"Sure! ```json\n{valid}\n``` hope that helps {{"
    return valid + valid


@st.composite
def replies(draw: st.DrawFn) -> tuple[str, Any]:
    """One scripted reply: (kind, payload) for the loopback server."""
    kind = draw(st.sampled_from(["content", "content", "content", "raw_body", "status"]))
    if kind == "content":
        return kind, as_content(draw)
    if kind == "raw_body":
        return kind, draw(st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode))
    return kind, draw(st.sampled_from([400, 401, 404, 422, 429, 500, 503]))


def check(answer: qa.Answer[Any], texts: dict[str, str]) -> None:
    """What every Answer guarantees, whatever the model said."""
    assert answer.found == (answer.answer is not None)
    if answer.found:
        assert answer.citations  # require_citations
    for c in answer.citations:
        assert 0 <= c.start < c.end <= len(texts[c.document_id])
        assert texts[c.document_id][c.start : c.end] == c.quote


@hsettings(
    max_examples=120, deadline=timedelta(seconds=20),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)  # fmt: skip
@given(script=st.lists(replies(), min_size=1, max_size=3))
def test_any_reply_gives_a_verified_answer_or_a_qa_error(seed_text: str, script: list[tuple[str, Any]]) -> None:
    doc = qa.Document(text=seed_text, id="nk.txt")
    with OpenAIServer() as server:
        for kind, payload in script:
            if kind == "content":
                server.reply(payload)
            elif kind == "raw_body":
                server.raw(payload)
            else:
                server.error(payload)
        for _ in range(6):  # whatever retries and re-asks are left get a valid answer
            server.reply_json(GOOD)
        started = time.monotonic()
        try:
            answer = qa.Index([doc], hostile_settings(server)).ask("How many casualties?")
        except qa.QAError:
            pass
        else:
            check(answer, {doc.id: seed_text})
        assert time.monotonic() - started < 15


# --- limits, each a Settings field with a typed error -------------------------------------------


def test_question_length_limit(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    index = qa.Index([seed_doc], settings.model_copy(update={"max_question_chars": 40}))
    with pytest.raises(qa.InputError, match=r"question is 41 characters long, over the limit of 40 .*max_question"):
        index.ask("x" * 41)
    server.reply_json(GOOD)
    assert index.ask("  How many casualties?  " + " " * 100).found  # stripped first
    assert server.requests[0]["messages"][-1]["content"].endswith("Question: How many casualties?\n")


def test_document_count_and_size_limits(seed_doc: qa.Document) -> None:
    docs = [qa.Document(text=f"Document number {i} says hello.", id=f"d{i}") for i in range(4)]
    with pytest.raises(qa.InputError, match=r"4 documents given, over the limit of 3 \(Settings.max_documents\)"):
        qa.Index(docs, qa.Settings(api_key="x", max_documents=3))
    with pytest.raises(qa.InputError, match=r"document 'nk' is 2,\d{3} characters long, over the limit of 1,000"):
        qa.Index([qa.Document(seed_doc.text, id="nk")], qa.Settings(api_key="x", max_document_chars=1000))
    qa.Index(docs, qa.Settings(api_key="x", max_documents=4))


def test_reply_over_the_completion_budget(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.reply(json.dumps({"result": {"answer": "4,000", "quotes": [{"passage": 1, "quote": Q4000}]}}) + " " * 9000)
    index = qa.Index([seed_doc], settings.model_copy(update={"max_answer_tokens": 512}))
    with pytest.raises(qa.ReplyTooLargeError, match=r"9,\d{3} characters long, more than a completion budget of 512"):
        index.ask("How many casualties?")
    assert server.requests[0]["max_tokens"] == 512
    server.reply_json(GOOD)
    assert index.ask("How many casualties?").found  # the same reply within budget is fine


def test_json_nesting_limit(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    deep = json.dumps({"result": {"answer": nested(40), "quotes": [{"passage": 1, "quote": Q4000}]}})
    server.reply(deep)
    server.reply(deep)
    index = qa.Index([seed_doc], settings.model_copy(update={"max_attempts": 2, "max_json_depth": 32}))
    with pytest.raises(qa.AnswerValidationError, match="nests JSON over 32 levels deep") as info:
        index.ask("How many casualties?")
    assert info.value.attempts == 2
    # Re-asked with the reason, like any invalid reply.
    assert "nests JSON over 32 levels deep" in server.requests[1]["messages"][-1]["content"]
    server.reply("[" * 4000 + "]" * 4000)  # past Python's recursion limit, within the size limit: re-asked
    server.reply_json(GOOD)
    assert index.ask("How many casualties?").found


def test_json_depth() -> None:
    assert json_depth('{"a": [1, {"b": "[[[{{{"}]}') == 3
    assert json_depth('"\\"[[["') == 0
    assert json_depth("[" * 1000, stop_above=5) == 6
    assert json_depth("]]]{") == 1


@pytest.mark.parametrize("field", ["max_question_chars", "max_documents", "max_json_depth", "max_answer_tokens"])
def test_limits_are_validated_settings(field: str) -> None:
    assert qa.Settings.model_fields[field].description
    with pytest.raises(qa.ConfigurationError, match=field):
        qa.Settings(**{field: 0})

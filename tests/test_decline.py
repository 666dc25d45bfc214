"""Declining on the model's own log-probabilities: the score, the request, and the threshold."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

import qa
from qa.answer import decline_probability
from qa.testing import FakeLLM, OpenAIServer

from .test_pipeline import GOOD, Q4000, reply


def lp(p: float) -> float:
    return math.log(p)


def tokens_for(content: str, split: list[str], value_top: list[tuple[str, float]]) -> list[dict[str, Any]]:
    """OpenAI-style logprobs.content for `content` cut into `split`; the token holding the "result" value
    gets `value_top` as its alternatives, the others only themselves."""
    assert "".join(split) == content
    at = content.index('"result"') + len('"result"')
    at = content.index(":", at) + 1
    while content[at] == " ":
        at += 1
    out, offset = [], 0
    for token in split:
        holds_value = offset <= at < offset + len(token)
        top = value_top if holds_value else [(token, -0.01)]
        out.append(
            {
                "token": token,
                "logprob": -0.01,
                "bytes": list(token.encode()),
                "top_logprobs": [{"token": t, "logprob": lp_, "bytes": list(t.encode())} for t, lp_ in top],
            }
        )
        offset += len(token)
    return out


def as_pairs(entries: list[dict[str, Any]]) -> list[tuple[str, list[tuple[str, float]]]]:
    return [(e["token"], [(a["token"], a["logprob"]) for a in e["top_logprobs"]]) for e in entries]


# --- the score --------------------------------------------------------------------------------------


def test_score_reads_null_against_brace_at_the_value_token() -> None:
    content = '{"result": null}'
    top = [(' "', lp(0.5)), (" null", lp(0.1)), (" {", lp(0.3))]
    entries = tokens_for(content, ['{"', "result", '":', " null", "}"], top)
    # the string alternative ' "' is not a JSON value the schema allows: left out
    assert decline_probability(content, as_pairs(entries)) == pytest.approx(0.1 / 0.4)


def test_score_sums_token_variants_and_partial_null() -> None:
    content = '{"result": {"answer": "x", "quotes": []}}'
    split = ['{"', "result", '":', ' {"', 'answer":', ' "x",', ' "quotes":', " []}}"]
    top = [(' {"', lp(0.6)), (" {", lp(0.1)), (" null", lp(0.05)), (" n", lp(0.05)), ("\n", lp(0.1))]
    entries = tokens_for(content, split, top)
    assert decline_probability(content, as_pairs(entries)) == pytest.approx(0.1 / 0.8)


def test_score_when_the_value_shares_a_token_with_the_colon() -> None:
    # Some tokenizers write '":' and the value's first character as one token; alternatives then carry
    # the same lead-in, and those without it are other paths through the JSON.
    content = '{"result":null}'
    split = ['{"result', '":null', "}"]
    top = [('":null', lp(0.2)), ('":{"', lp(0.6)), ('":', lp(0.1)), ('"', lp(0.1))]
    entries = tokens_for(content, split, top)
    assert decline_probability(content, as_pairs(entries)) == pytest.approx(0.2 / 0.8)


def test_score_is_none_without_a_result_value_or_alternatives() -> None:
    assert decline_probability("I think 4000.", [("I", [("I", -0.1)])]) is None
    content = '{"result": null}'
    only_strings = tokens_for(content, ['{"result":', " null}"], [(' "', lp(0.9))])
    assert decline_probability(content, as_pairs(only_strings)) is None
    assert decline_probability(content, []) is None
    # tokens that do not spell the content are not trusted
    assert decline_probability(content, [("xxxxxxxxxxxxxxxxxxxxx", [(" null", -0.1)])]) is None


# --- through the pipeline and the real openai client ---------------------------------------------------


def scripted(server: OpenAIServer, obj: dict[str, Any], p_null: float) -> None:
    content = json.dumps(obj)
    head = '{"result": '
    assert content.startswith(head)
    split = ['{"', "result", '":', content[len('{"result":') :]]
    first = " null" if obj["result"] is None else ' {"'
    top = [(first, lp(1 - p_null) if first != " null" else lp(p_null))]
    top.append((" null", lp(p_null)) if first != " null" else (' {"', lp(1 - p_null)))
    server.reply(content, logprobs=tokens_for(content, split, top))


def test_threshold_declines_an_answer_the_model_was_unsure_of(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    s = settings.model_copy(update={"decline_threshold": 0.2})
    scripted(server, GOOD, p_null=0.3)
    answer = qa.Index([seed_doc], s).ask("How many casualties?")
    assert answer.found is False and answer.answer is None and answer.citations == []
    assert answer.decline_probability == pytest.approx(0.3)
    assert answer.usage.calls == 1
    sent = server.requests[0]
    assert sent["logprobs"] is True and sent["top_logprobs"] == 10


def test_threshold_keeps_a_confident_answer(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    s = settings.model_copy(update={"decline_threshold": 0.2})
    scripted(server, GOOD, p_null=0.01)
    answer = qa.Index([seed_doc], s).ask("How many casualties?")
    assert answer.found and answer.verified and answer.decline_probability == pytest.approx(0.01)
    assert [c.quote for c in answer.citations][0] == Q4000


def test_model_null_reports_its_score(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    s = settings.model_copy(update={"decline_threshold": 0.5})
    scripted(server, reply([], None), p_null=0.9)
    answer = qa.Index([seed_doc], s).ask("What was the weather in Kursk?")
    assert answer.found is False and answer.decline_probability == pytest.approx(0.9)


def test_no_logprobs_returned_means_no_decision(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    s = settings.model_copy(update={"decline_threshold": 0.01})
    server.reply_json(GOOD)  # a server that ignores logprobs=true
    answer = qa.Index([seed_doc], s).ask("How many casualties?")
    assert answer.found and answer.decline_probability is None
    assert server.requests[0]["logprobs"] is True


def test_hosted_model_default_requests_no_logprobs(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    assert settings.decline_threshold == "auto" and not settings.uses_local_model
    server.reply_json(GOOD)
    index = qa.Index([seed_doc], settings)
    assert index.decline_threshold is None
    answer = index.ask("How many casualties?")
    assert answer.found and answer.decline_probability is None
    assert "logprobs" not in server.requests[0] and "top_logprobs" not in server.requests[0]


def test_auto_uses_the_local_models_calibrated_threshold() -> None:
    from qa import local

    spec = local.KNOWN_MODELS[local.DEFAULT_MODEL]
    doc = qa.Document(text="Paris is the capital of France.", id="d")
    index = qa.Index([doc], qa.Settings(), llm=FakeLLM())
    assert index.decline_threshold == spec.decline_threshold
    assert qa.Index([doc], qa.Settings(decline_threshold=None), llm=FakeLLM()).decline_threshold is None
    assert qa.Index([doc], qa.Settings(decline_threshold=0.3), llm=FakeLLM()).decline_threshold == 0.3


def test_auto_reply_form_is_the_local_models_measured_one_and_copy_for_a_server(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    from qa import local

    spec = local.KNOWN_MODELS[local.DEFAULT_MODEL]
    assert spec.quotes == "none" and set(spec.decline_thresholds) == {"none", "copy"}
    doc = qa.Document(text="Paris is the capital of France.", id="d")
    index = qa.Index([doc], qa.Settings(), llm=FakeLLM())
    assert (index.quotes, index.decline_threshold) == ("none", spec.decline_thresholds["none"])
    # the threshold follows the reply form the user chose: each was calibrated on its own replies
    copying = qa.Index([doc], qa.Settings(quotes="copy"), llm=FakeLLM())
    assert (copying.quotes, copying.decline_threshold) == ("copy", spec.decline_thresholds["copy"])
    assert spec.decline_thresholds["none"] != spec.decline_thresholds["copy"]
    # a registered model without a calibration for the chosen form does not decline on the probability
    big = qa.Settings(local_model="qwen2.5-coder-1.5b", quotes="none")
    assert qa.Index([doc], big, llm=FakeLLM()).decline_threshold is None
    # a server: quotes are copied, and the schema the model is sent asks for them
    assert settings.quotes == "auto"
    server.reply_json(GOOD)
    hosted = qa.Index([seed_doc], settings)
    assert hosted.quotes == "copy"
    hosted.ask("How many casualties?")
    assert "quotes" in json.dumps(server.requests[0]["response_format"])
    # answer-only through the same server: no quotes asked for
    server.reply_json({"result": {"answer": "4,000"}})
    qa.Index([seed_doc], settings.model_copy(update={"quotes": "none"})).ask("How many casualties?")
    assert "quotes" not in json.dumps(server.requests[-1]["response_format"])


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, "sometimes"])
def test_bad_threshold_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(qa.ConfigurationError, match="decline_threshold"):
        qa.Settings.from_env({}, decline_threshold=bad)


def test_threshold_from_the_environment() -> None:
    assert qa.Settings.from_env({"QA_DECLINE_THRESHOLD": "0.25"}).decline_threshold == 0.25
    assert qa.Settings.from_env({"QA_DECLINE_THRESHOLD": "off"}).decline_threshold is None
    assert qa.Settings.from_env({"QA_DECLINE_THRESHOLD": "auto"}).decline_threshold == "auto"
    assert qa.Settings.from_env({}).decline_threshold == "auto"
    with pytest.raises(qa.ConfigurationError, match="decline_threshold"):
        qa.Settings.from_env({"QA_DECLINE_THRESHOLD": "2"})


def test_reply_form_from_the_environment() -> None:
    assert qa.Settings.from_env({"QA_QUOTES": "none"}).quotes == "none"
    assert qa.Settings.from_env({}).quotes == "auto"
    with pytest.raises(qa.ConfigurationError, match="quotes"):
        qa.Settings.from_env({"QA_QUOTES": "sometimes"})


@pytest.mark.parametrize(
    "status, message",
    [
        (500, "logprobs is not supported for models created with logits_all=False"),  # llama-cpp-python's server
        (400, "Invalid parameter: 'logprobs' is not supported with this model."),
    ],
)
def test_server_refusing_logprobs_is_asked_again_without_them_once(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document, status: int, message: str
) -> None:
    s = settings.model_copy(update={"decline_threshold": 0.2})
    server.error(status, message)
    server.reply_json(GOOD)
    server.reply_json(GOOD)
    index = qa.Index([seed_doc], s)
    first = index.ask("How many casualties?")
    second = index.ask("How many casualties again?")
    assert first.found and second.found and first.decline_probability is None
    assert first.usage.retries == 0  # not retried as a transient 5xx
    sent = server.requests
    assert len(sent) == 3 and sent[0]["logprobs"] is True
    assert "logprobs" not in sent[1] and "logprobs" not in sent[2]  # remembered
    server.assert_done()


def test_other_errors_naming_no_logprobs_still_raise(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    s = settings.model_copy(update={"decline_threshold": 0.2, "max_retries": 0})
    server.error(400, "Invalid value for 'messages'.")
    with pytest.raises(qa.RequestRejectedError):
        qa.Index([seed_doc], s).ask("How many casualties?")

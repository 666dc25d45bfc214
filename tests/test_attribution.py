"""The library finds the sentences that state an answer; the model's quotes are hints."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

import qa
from qa.attribution import Claim, attribute, claims_of, number_key, restate_numbers
from qa.testing import OpenAIServer

from .test_pipeline import Q1200, Q4000, check_citations, reply

TELEGRAM = "The confirmation comes after Zelenskyy said in a post on the Telegram messaging app"
AP = "The Associated Press contributed to this report."
SENTENCE_4000 = (
    "On Thursday, Zelenskyy put the number of killed or wounded North Koreans at 4,000, though U.S. estimates "
    "are lower, at around 1,200."
)


def spans_of(text: str, *quotes: str) -> list[tuple[str, int, int]]:
    return [("seed", text.index(q), text.index(q) + len(q)) for q in quotes]


def attributed(answer: Any, text: str, *quotes: str, question: str = "How many casualties?") -> list[str] | None:
    found = attribute(
        answer, question, spans_of(text, *quotes), {1: ("seed", 0, text)}, {"seed": text}, max_citations=3
    )
    return None if found is None else [text[a:b] for _, a, b in found.spans]


def test_numbers_are_read_as_values() -> None:
    assert [number_key(n) for n in ("4,000", "4000", "12.50", "01", "0.5", "10.0")] == [
        "4000", "4000", "12.5", "1", "0.5", "10",
    ]  # fmt: skip
    assert Claim.of("about 4000 troops").numbers == {"4000"}
    assert restate_numbers("4000 killed, about 1200", [SENTENCE_4000]) == "4,000 killed, about 1,200"
    assert restate_numbers("9000", [SENTENCE_4000]) == "9000"


def test_the_models_quote_is_kept_when_it_states_the_answer(seed_text: str) -> None:
    assert attributed("4000", seed_text, Q4000) == [Q4000]


def test_a_wrong_quote_is_replaced_by_the_sentence_that_states_the_number(seed_text: str) -> None:
    assert attributed("4000", seed_text, TELEGRAM) == [SENTENCE_4000]
    # a range states both its ends
    assert attributed("12,000 troops", seed_text, question="How many troops has Pyongyang sent?") == [
        "Despite Ukrainian, U.S. and South Korean assertions that Pyongyang has sent 10,000 – 12,000 troops to fight "
        "alongside Russia in the Kursk border region, Moscow has never publicly acknowledged the North Korean forces."
    ]


def test_an_answer_no_sentence_states_is_unsupported(seed_text: str) -> None:
    assert attributed("cloudy", seed_text, TELEGRAM, question="What is the weather in Kyiv?") is None
    assert attributed("9,000", seed_text, Q4000) is None
    assert attributed("40,000 dead", seed_text) is None


def test_words_of_a_short_answer_must_all_be_stated(seed_text: str) -> None:
    assert attributed("Tuva", seed_text, question="Where was the ID card holder from?") == [
        "SBU also said one of the soldiers had no documents at all, while the other had been carrying a Russian "
        "military ID card in the name of a man from Tuva, a Russian region bordering Mongolia."
    ]
    assert attributed("Tuva Siberia", seed_text) is None


def test_a_typed_answer_is_checked_field_by_field(seed_text: str) -> None:
    class Casualties(BaseModel):
        killed_or_wounded: int
        estimate_by: str

    value = Casualties(killed_or_wounded=4000, estimate_by="U.S. estimates are lower, at around 1,200")
    assert [c.text for c in claims_of(value)] == ["4000", "U.S. estimates are lower, at around 1,200"]
    assert attributed(value, seed_text, AP) == [SENTENCE_4000]
    assert attributed(Casualties(killed_or_wounded=9000, estimate_by="Zelenskyy"), seed_text, AP) is None


def test_figures_from_two_sentences_cite_both(seed_text: str) -> None:
    cited = attributed("4,000 killed or wounded; 10,000 to 12,000 troops sent", seed_text, TELEGRAM)
    assert cited is not None and len(cited) == 2 and SENTENCE_4000 in cited


def test_yes_no_answers_cite_the_sentences_about_the_question(seed_text: str) -> None:
    cited = attributed("yes", seed_text, question="Has Moscow publicly acknowledged the North Korean forces?")
    assert cited is not None and "Moscow has never publicly acknowledged" in cited[0]


# --- through the pipeline ------------------------------------------------------------------------


def test_right_answer_with_the_wrong_quote_is_attributed_in_one_call(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    # What the bundled model does on the user's question: the right number, the Telegram sentence quoted.
    server.reply_json(reply([(1, TELEGRAM)], "4000"))
    answer = qa.Index([seed_doc], settings).ask("How many North Korean soldiers were killed or wounded?")
    assert answer.found and answer.verified and answer.decision == "attributed"
    assert answer.answer == "4,000" and answer.proposed == "4000"  # as the source writes it
    assert [c.quote for c in answer.citations] == [SENTENCE_4000]
    assert answer.citations[0].match == "attributed"
    assert answer.usage.calls == 1 and answer.usage.reasks == 0
    check_citations(answer, seed_doc)
    server.assert_done()


def test_an_answer_the_article_does_not_hold_is_withheld(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply_json(reply([(1, TELEGRAM)], "cloudy"))
    server.reply_json(reply([], None))  # asked again, the model says the passages do not say
    answer = qa.Index([seed_doc], settings).ask("What is the weather in Kyiv?")
    assert not answer.found and answer.answer is None and answer.citations == []
    assert answer.decision == "declined" and answer.usage.calls == 2
    reask = server.requests[1]["messages"][-1]["content"]
    assert "No sentence of the passages states your answer (cloudy)" in reask and '{"result": null}' in reask
    server.assert_done()


@pytest.mark.parametrize("quote", [AP, Q1200])
def test_typed_answer_citing_the_wrong_sentence_is_attributed(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document, quote: str
) -> None:
    class Casualties(BaseModel):
        killed_or_wounded: int
        estimate_by: str

    server.reply_json(
        reply([(1, quote)], {"killed_or_wounded": 4000, "estimate_by": "U.S. estimates are lower, at around 1,200"})
    )
    answer = qa.Index([seed_doc], settings).ask("How many casualties?", output=Casualties)
    assert answer.found and isinstance(answer.answer, Casualties) and answer.answer.killed_or_wounded == 4000
    assert [c.quote for c in answer.citations] == [SENTENCE_4000]
    assert answer.usage.calls == 1
    check_citations(answer, seed_doc)


def test_typed_answer_with_a_number_no_sentence_states_is_withheld(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    class Casualties(BaseModel):
        killed_or_wounded: int

    for _ in range(2):
        server.reply_json(reply([(1, Q4000)], {"killed_or_wounded": 9000}))
    answer = qa.Index([seed_doc], settings).ask("How many casualties?", output=Casualties)
    assert not answer.found and answer.decision == "unsupported" and answer.usage.repeats == 1
    assert isinstance(answer.proposed, Casualties) and answer.proposed.killed_or_wounded == 9000


def test_answer_only_replies_are_attributed_by_the_library(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply_json({"result": {"answer": "4000 killed or wounded"}}, completion_tokens=12)
    answer = qa.Index([seed_doc], settings.model_copy(update={"quotes": "none"})).ask("How many casualties?")
    assert answer.found and answer.answer == "4,000 killed or wounded" and answer.decision == "attributed"
    assert [c.quote for c in answer.citations] == [SENTENCE_4000]
    sent = server.requests[0]
    schema = sent["response_format"]["json_schema"]["schema"]
    assert "quotes" not in json.dumps(schema)
    assert '{"result": {"answer": ...}}' in sent["messages"][0]["content"]
    server.assert_done()


def test_an_answer_from_sentences_unrelated_to_the_question_is_withheld(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    # The words are the article's, but nothing near them is about football.
    server.reply_json(reply([(1, TELEGRAM)], "North Korean soldiers"))
    answer = qa.Index([seed_doc], settings).ask("Who won the football match?")
    assert not answer.found and answer.decision == "unrelated" and answer.proposed == "North Korean soldiers"
    assert answer.citations == [] and answer.usage.calls == 1
    # A numeric answer is judged by its number: "casualties" shares no word with "killed or wounded".
    server.reply_json(reply([(1, TELEGRAM)], "4000"))
    assert qa.Index([seed_doc], settings).ask("How many casualties?").decision == "attributed"
    # Answer only: qa picks the article's first sentence, which names the soldiers "who were fighting"; a question's
    # interrogative ("who") is not a word the sentence shares with it.
    server.reply_json({"result": {"answer": "North Korean soldiers"}})
    answer_only = qa.Index([seed_doc], settings.model_copy(update={"quotes": "none"}))
    answer = answer_only.ask("Who won the football match?")
    assert not answer.found and answer.decision == "unrelated"
    # Switched off, the answer is returned.
    server.reply_json(reply([(1, TELEGRAM)], "North Korean soldiers"))
    loose = settings.model_copy(update={"require_relevance": False})
    assert qa.Index([seed_doc], loose).ask("Who won the football match?").found
    server.assert_done()


def test_relevance_by_meaning_keeps_an_answer_that_shares_no_word_with_the_question(
    server: OpenAIServer, settings: qa.Settings
) -> None:
    pytest.importorskip("onnxruntime", reason="the embed extra is not installed")
    from qa.embed import LocalEmbedder

    report = qa.Document(
        text="Annual report 2023.\n\nAll amounts are reported in US dollars. Revenue grew in every region.",
        id="report.txt",
    )
    embedder = LocalEmbedder()
    words_only = settings.model_copy(update={"quotes": "none"})
    by_meaning = words_only.model_copy(update={"relevance_similarity": 0.3})
    # "currency" and "used" are not words of the sentence that states "US dollars": by words alone, withheld.
    server.reply_json({"result": {"answer": "US dollars"}})
    answer = qa.Index([report], words_only, embedder=embedder).ask("Which currency is used?")
    assert not answer.found and answer.decision == "unrelated"
    # The embedding model relates the question to that sentence: kept, citing it.
    server.reply_json({"result": {"answer": "US dollars"}})
    answer = qa.Index([report], by_meaning, embedder=embedder).ask("Which currency is used?")
    assert answer.found and answer.answer == "US dollars"
    assert [c.quote for c in answer.citations] == ["All amounts are reported in US dollars."]
    server.assert_done()


def test_relevance_by_meaning_still_withholds_an_answer_about_something_else(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    pytest.importorskip("onnxruntime", reason="the embed extra is not installed")
    from qa.embed import LocalEmbedder

    by_meaning = settings.model_copy(update={"quotes": "none", "relevance_similarity": 0.3})
    server.reply_json({"result": {"answer": "North Korean soldiers"}})
    answer = qa.Index([seed_doc], by_meaning, embedder=LocalEmbedder()).ask("Who won the football match?")
    assert not answer.found and answer.decision == "unrelated"
    server.assert_done()


def test_a_long_form_answer_is_checked_sentence_by_sentence(seed_text: str) -> None:
    # Four sentences of the article, restated: each is cited, more than max_citations (3) in all.
    summary = (
        "Seoul's National Intelligence Service confirmed the capture. "
        "The SBU released video of the two prisoners on beds inside jail cells. "
        "One soldier was carrying a Russian military ID card in the name of a man from Tuva. "
        "Zelenskyy put the killed or wounded at 4,000."
    )
    cited = attributed(summary, seed_text, question="What happened to the captured soldiers?")
    assert cited is not None and len(cited) == 4
    assert cited[-1] == SENTENCE_4000 and all(c in seed_text for c in cited)
    # One sentence the article does not state withholds the whole answer, however well the others are stated.
    invented = summary + " They were later sent home by ship across the Pacific."
    assert attributed(invented, seed_text, question="What happened to the captured soldiers?") is None
    assert [c.text for c in claims_of("It rained. It did not snow.")] == ["It rained.", "It did not snow."]

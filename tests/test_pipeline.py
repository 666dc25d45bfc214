"""The whole pipeline through the real openai client against a scripted server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from pydantic import BaseModel

import qa
from qa.testing import OpenAIServer

Q4000 = "Zelenskyy put the number of killed or wounded North Koreans at 4,000"
Q1200 = "U.S. estimates are lower, at around 1,200"


def reply(quotes: list[tuple[int, str]], answer: Any) -> dict[str, Any]:
    if answer is None:
        return {"result": None}
    return {"result": {"answer": answer, "quotes": [{"passage": p, "quote": q} for p, q in quotes]}}


GOOD = reply([(1, Q4000), (1, Q1200)], "4,000 killed or wounded per Zelenskyy; about 1,200 per U.S. estimates")


def check_citations(answer: qa.Answer[Any], doc: qa.Document) -> None:
    for c in answer.citations:
        assert doc.text[c.start : c.end] == c.quote
        assert c.chunk.start <= c.start < c.chunk.end


def test_cited_answer_on_seed_article(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.reply_json(GOOD, prompt_tokens=700, completion_tokens=60)
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and answer.verified
    assert "4,000" in str(answer.answer)
    quotes = [c.quote for c in answer.citations]
    assert quotes == [Q4000, Q1200]
    check_citations(answer, seed_doc)
    assert answer.usage.model_dump() == {
        "prompt_tokens": 700, "completion_tokens": 60, "calls": 1, "attempts": 1, "reasks": 0, "retries": 0,
        "cached_calls": 0,
        "repeats": 0,
    }  # fmt: skip
    assert answer.decision == "quoted" and all(c.match == "exact" for c in answer.citations)
    assert answer.model == "gpt-4o-mini"
    # The whole article fits, so it is sent whole as passage [1], with a JSON schema response_format.
    sent = server.requests[0]
    assert sent["response_format"]["type"] == "json_schema"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert schema["required"] == ["result"] and schema["$defs"]["CitedAnswer"]["required"] == ["answer", "quotes"]
    assert "[1] " + seed_doc.text.strip()[:40] in sent["messages"][1]["content"]
    assert sent["max_tokens"] == settings.max_answer_tokens and sent["temperature"] == 0.0
    server.assert_done()


def test_quote_matching_tolerates_whitespace_and_quote_marks(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    # The article has a curly apostrophe in "South Korea’s"; the model types a straight one and extra spaces.
    server.reply_json(reply([(1, "South Korea's   intelligence service said")], "South Korea's intelligence service"))
    answer = qa.Index([seed_doc], settings).ask("Who confirmed the capture?")
    (c,) = answer.citations
    assert c.quote == "South Korea’s intelligence service said"
    check_citations(answer, seed_doc)


def test_reask_after_fabricated_quote_then_success(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply_json(reply([(1, "North Korea lost 9,000 soldiers in Kursk")], "9,000"), prompt_tokens=500)
    server.reply_json(GOOD, prompt_tokens=650, completion_tokens=40)
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and answer.verified and len(answer.citations) == 2
    assert answer.usage.calls == 2 and answer.usage.reasks == 1 and answer.usage.retries == 0
    assert answer.usage.prompt_tokens == 1150 and answer.usage.completion_tokens == 45
    second = server.requests[1]["messages"]
    assert second[-2]["role"] == "assistant" and "9,000" in second[-2]["content"]
    assert second[-1]["role"] == "user" and "No sentence of the passages states your answer (9,000)" in second[-1][
        "content"
    ]


def test_a_quote_not_in_the_source_is_dropped_without_a_reask(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply_json(reply([(1, Q4000), (1, "a quote that is nowhere")], "4,000"))
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and answer.answer == "4,000" and answer.verified
    assert [c.quote for c in answer.citations] == [Q4000]
    assert answer.usage.calls == 1 and answer.usage.reasks == 0
    check_citations(answer, seed_doc)
    server.assert_done()


def test_one_word_quotes_do_not_count(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    for _ in range(2):
        server.reply_json(reply([(1, "1")], "4"))  # what SmolLM2-135M answered: "1" occurs in the article
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert not answer.found and answer.citations == [] and answer.decision == "unsupported"
    assert "states your answer (4)" in server.requests[1]["messages"][-1]["content"]
    # The second reply repeats the first: no third call.
    assert answer.usage.calls == 2 and answer.usage.repeats == 1
    server.assert_done()


def test_answer_with_no_verifiable_citation_is_withheld(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply_json(reply([(7, "Zelenskyy put the number of dead at 40,000")], "40,000"))  # no passage 7
    server.reply_json(reply([(1, "Zelenskyy put the number of dead at 40,000")], "40,000 dead"))
    server.reply_json(reply([(1, "Zelenskyy put the number of dead at 40,000")], "40,000 dead"))
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert not answer.found and answer.answer is None and answer.citations == []
    assert answer.verified is False and answer.decision == "unsupported" and answer.proposed == "40,000 dead"
    assert "(40,000)" in server.requests[1]["messages"][-1]["content"]
    assert answer.usage.calls == 3 and answer.usage.reasks == 2
    server.assert_done()


def test_verbatim_quote_under_the_wrong_passage_number_is_found(server: OpenAIServer, seed_text: str) -> None:
    # Two documents, so two passages; the model names passage 2 for a sentence of passage 1.
    other = qa.Document(text="Kursk is a city in western Russia. Its population is about 440,000.", id="kursk")
    seed = qa.Document(text=seed_text, id="seed")
    settings = qa.Settings(base_url=server.base_url, api_key="k")
    server.reply_json(reply([(2, Q4000), (9, Q1200)], "4,000"))
    answer = qa.Index([seed, other], settings).ask("How many casualties?")
    assert answer.found and answer.verified and answer.usage.calls == 1
    assert [c.document_id for c in answer.citations] == ["seed", "seed"]
    for c in answer.citations:
        assert seed_text[c.start : c.end] == c.quote
    assert Q4000 in answer.citations[0].quote and Q1200 in answer.citations[1].quote


def test_output_that_never_parses_raises_with_details(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    for n in range(3):
        server.reply(f"I think it is about {n + 4}000.")
    with pytest.raises(qa.AnswerValidationError) as info:
        qa.Index([seed_doc], settings).ask("How many casualties?")
    assert info.value.attempts == 3 and info.value.last_output == "I think it is about 6000."
    assert info.value.usage.calls == 3
    server.assert_done()


def test_a_repeated_invalid_reply_ends_the_reasks(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply("I think it is about 4000.")
    server.reply("I think it is  about 4000.\n")  # the same reply, spaced differently
    with pytest.raises(qa.AnswerValidationError) as info:
        qa.Index([seed_doc], settings).ask("How many casualties?")
    assert info.value.attempts == 2 and info.value.usage.repeats == 1 and info.value.usage.reasks == 1
    server.assert_done()


def test_raw_line_breaks_inside_json_strings_are_read(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    # Some models type a line break inside a JSON string instead of "\\n" (strict JSON forbids it): the
    # reply is read as Python's json reads it, not re-asked, and the quote is still verified.
    words = Q4000.split(" ")
    quote = " ".join(words[:5]) + "\n" + " ".join(words[5:])
    server.reply('{"result": {"answer": "4,000\nkilled or wounded", "quotes": [{"passage": 1, "quote": "'
                 + quote + '"}]}}')  # fmt: skip
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert answer.found and answer.verified and answer.answer == "4,000\nkilled or wounded"
    assert [c.quote for c in answer.citations] == [Q4000] and answer.usage.calls == 1
    check_citations(answer, seed_doc)
    server.assert_done()


def test_answer_stating_a_number_its_quotes_do_not_is_reasked(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    # The quote is verbatim, but it does not state the answer's number: re-asked with the reason.
    server.reply_json(reply([(1, Q1200)], "9,000 casualties"))
    server.reply_json(reply([(1, Q4000)], "4000 killed or wounded"))  # "4000" is the source's "4,000"
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    # ... and answered as the source writes it.
    assert answer.found and answer.verified and answer.answer == "4,000 killed or wounded"
    assert answer.proposed == "4000 killed or wounded"
    assert [c.quote for c in answer.citations] == [Q4000] and answer.usage.reasks == 1
    reask = server.requests[1]["messages"][-1]["content"]
    assert "No sentence of the passages states your answer (9,000 casualties)" in reask
    server.assert_done()


def test_answer_whose_number_no_citation_states_is_withheld(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    for _ in range(2):
        server.reply_json(reply([(1, Q1200)], "about 9,000"))
    answer = qa.Index([seed_doc], settings).ask("How many casualties?")
    assert not answer.found and answer.answer is None and not answer.citations and not answer.verified
    assert answer.usage.calls == 2 and answer.usage.repeats == 1
    # without require_citations the answer is returned, marked unverified, with the quote that does verify
    for _ in range(2):
        server.reply_json(reply([(1, Q1200)], "about 9,000"))
    kept = qa.Index([seed_doc], settings.model_copy(update={"require_citations": False})).ask("How many casualties?")
    assert kept.found and kept.answer == "about 9,000" and not kept.verified and kept.decision == "unverified"
    assert [c.quote for c in kept.citations] == [Q1200]
    server.assert_done()


def test_abstention(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.reply_json(reply([], None))
    answer = qa.Index([seed_doc], settings).ask("What was the weather in Kursk?")
    assert answer.found is False and answer.answer is None and answer.citations == []
    assert str(answer) == "Not found in the documents."


def test_no_matching_passage_abstains_without_calling(server: OpenAIServer, seed_text: str) -> None:
    long_doc = qa.Document(text=(seed_text + "\n\n") * 40, id="long")
    # By words only: retrieval by meaning always has a nearest chunk, and then the model decides.
    settings = qa.Settings(base_url=server.base_url, api_key="k", max_context_tokens=600, retrieval="bm25")
    answer = qa.Index([long_doc], settings).ask("zebra giraffe okapi?")
    assert not answer.found and answer.usage.calls == 0
    assert server.requests == []


class Casualties(BaseModel):
    killed_or_wounded: int
    estimate_by: str


def test_typed_output(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.reply_json(reply([(1, Q4000)], {"killed_or_wounded": 4000, "estimate_by": "Zelenskyy"}))
    answer = qa.Index([seed_doc], settings).ask("How many casualties?", output=Casualties)
    assert isinstance(answer.answer, Casualties)
    assert answer.answer.killed_or_wounded == 4000
    schema = server.requests[0]["response_format"]["json_schema"]["schema"]
    assert "Casualties" in json.dumps(schema)
    dumped = json.loads(answer.model_dump_json())
    assert dumped["answer"] == {"killed_or_wounded": 4000, "estimate_by": "Zelenskyy"}


def test_typed_output_reasks_on_schema_violation(
    server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document
) -> None:
    server.reply_json(reply([(1, Q4000)], {"killed_or_wounded": "four thousand", "estimate_by": "Zelenskyy"}))
    server.reply_json(reply([(1, Q4000)], {"killed_or_wounded": 4000, "estimate_by": "Zelenskyy"}))
    answer = qa.Index([seed_doc], settings).ask("How many casualties?", output=Casualties)
    assert answer.answer is not None and answer.answer.killed_or_wounded == 4000
    assert answer.usage.reasks == 1
    assert "killed_or_wounded" in server.requests[1]["messages"][-1]["content"]


def test_async_ask(server: OpenAIServer, settings: qa.Settings, seed_doc: qa.Document) -> None:
    server.reply_json(reply([(1, Q1200)], "about 1,200"))
    answer = asyncio.run(qa.Index([seed_doc], settings).aask("How many casualties?"))
    assert answer.found and answer.citations[0].quote == Q1200


def test_one_liner_with_paths(server: OpenAIServer, settings: qa.Settings, tmp_path: Any, seed_text: str) -> None:
    path = tmp_path / "article.txt"
    path.write_text(seed_text, encoding="utf-8")
    server.reply_json(GOOD)
    answer = qa.ask("How many casualties?", [path], settings)
    assert answer.citations[0].document_id == "article.txt"


def test_budget_fills_with_best_passages(server: OpenAIServer) -> None:
    filler = "\n\n".join(f"Paragraph {i} talks about farming, rain and the price of wheat in spring." for i in range(300))
    target = "The lighthouse keeper counted 417 ships passing the northern cape."
    doc = qa.Document(text=filler + "\n\n" + target + "\n\n" + filler, id="big")
    settings = qa.Settings(
        base_url=server.base_url, api_key="k", chunk_tokens=64, chunk_overlap=8, max_context_tokens=200, top_k=10
    )
    index = qa.Index([doc], settings)
    passages = index.retrieve("How many ships did the lighthouse keeper count?")
    assert sum(p.tokens for p in passages) <= 200
    assert target in passages[0].text
    for p in passages:
        assert doc.text[p.start : p.end] == p.text
    # When everything fits, documents are sent whole.
    small = qa.Index([qa.Document(text=target, id="small")], settings).retrieve("ships?")
    assert [(p.start, p.end) for p in small] == [(0, len(target))]

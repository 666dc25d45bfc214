"""Focused evidence: the sentences of the retrieved chunks that match the question, with their neighbours."""

from __future__ import annotations

import qa
from qa.chunking import chunk_text
from qa.evidence import focus, sentence_spans
from qa.tokens import get_encoding

ENC = get_encoding("o200k_base")


def count(text: str) -> int:
    return len(ENC.encode_ordinary(text))


FILLER = [
    f"Paragraph {i} is about farming. Rain came late that year. The price of wheat rose in spring."
    for i in range(120)
]
BEFORE = "The northern cape has a lighthouse built in 1871."
TARGET = "The lighthouse keeper counted 417 ships passing the northern cape."
AFTER = "Most of them carried coal to the southern ports."
DOC = "\n\n".join([*FILLER[:60], f"{BEFORE} {TARGET} {AFTER}", *FILLER[60:]])


def test_sentence_spans_are_exact_and_break_at_lines() -> None:
    text = "Title without a stop\n\nFirst sentence here. Second one!\n  Third line  "
    spans = sentence_spans(text, 0, len(text))
    assert [text[s:e] for s, e in spans] == ["Title without a stop", "First sentence here.", "Second one!", "Third line"]
    # A region in the middle of the text keeps document offsets.
    start = text.index("Second")
    assert [text[s:e] for s, e in sentence_spans(text, start, len(text))] == ["Second one!", "Third line"]


def test_focus_picks_the_matching_sentence_with_its_neighbours() -> None:
    chunks = chunk_text(DOC, document_id="d", encoding=ENC, chunk_tokens=128, overlap_tokens=16)
    hits = [c for c in chunks if TARGET in c.text] + chunks[:4]
    passages = focus("How many ships did the lighthouse keeper count?", hits, {"d": DOC}, budget_tokens=60,
                     count_tokens=count)  # fmt: skip
    assert passages[0].number == 1
    assert passages[0].text == f"{BEFORE} {TARGET} {AFTER}"
    assert sum(p.tokens for p in passages) <= 60
    for p in passages:
        assert DOC[p.start : p.end] == p.text
        assert p.chunks and all(c.start < p.end and p.start < c.end for c in p.chunks)


def test_focus_budget_smaller_than_a_window_keeps_the_best_sentence() -> None:
    chunks = chunk_text(DOC, document_id="d", encoding=ENC, chunk_tokens=128, overlap_tokens=16)
    hits = [c for c in chunks if TARGET in c.text]
    passages = focus("lighthouse keeper ships", hits, {"d": DOC}, budget_tokens=count(TARGET) + 1, count_tokens=count)
    assert [p.text for p in passages] == [TARGET]


def test_focus_without_shared_terms_falls_back_to_chunk_order() -> None:
    chunks = chunk_text(DOC, document_id="d", encoding=ENC, chunk_tokens=64, overlap_tokens=8)
    hits = [chunks[5], chunks[2]]
    passages = focus("zebra okapi?", hits, {"d": DOC}, budget_tokens=40, count_tokens=count)
    assert passages and chunks[5].start <= passages[0].start < chunks[5].start + 5
    assert sum(p.tokens for p in passages) <= 40


def test_focus_keeps_documents_apart() -> None:
    a = "Alpha station logged 12 storms. " * 3 + "The lighthouse keeper counted 417 ships."
    b = "The lighthouse keeper in Beta counted 90 ships. Nothing else happened."
    texts = {"a": a, "b": b}
    hits = [*chunk_text(b, document_id="b", encoding=ENC), *chunk_text(a, document_id="a", encoding=ENC)]
    passages = focus("how many ships did the lighthouse keeper count", hits, texts, budget_tokens=500,
                     count_tokens=count)  # fmt: skip
    for p in passages:
        assert texts[p.document_id][p.start : p.end] == p.text
    assert {p.document_id for p in passages} == {"a", "b"}


def test_index_sends_focused_sentences_when_documents_do_not_fit() -> None:
    settings = qa.Settings(base_url="http://127.0.0.1:9", api_key="k", max_context_tokens=120)
    index = qa.Index([qa.Document(text=DOC, id="d")], settings)
    passages = index.retrieve("How many ships did the lighthouse keeper count?")
    assert TARGET in passages[0].text
    assert sum(p.tokens for p in passages) <= 120
    chunks = qa.Index(
        [qa.Document(text=DOC, id="d")], settings.model_copy(update={"evidence": "chunks", "max_context_tokens": 300})
    )
    whole = chunks.retrieve("How many ships did the lighthouse keeper count?")
    assert len(whole[0].text) > len(passages[0].text)  # whole chunks, not sentences

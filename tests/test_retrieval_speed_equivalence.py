"""qa.BM25Retriever: ranks the right chunks, and scores exactly as the bm25s Tokenizer + bm25s.BM25
pipeline it replaces (same terms, same float32 scores), except that a query without any indexed term
matches nothing."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bm25s
import numpy as np
import pytest
import Stemmer
from bm25s.tokenization import Tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qa.chunking import Chunk
from qa.retrieval import BM25Retriever

EVAL = Path(__file__).resolve().parent.parent.parent / "shared" / "eval" / "squad2_dev"

# A small encyclopedia: (document id, paragraphs); every paragraph is one chunk.
DOCUMENTS = [
    ("oil_crisis", [
        "The 1973 oil crisis began in October 1973 when the members of the Organization of Arab Petroleum "
        "Exporting Countries proclaimed an oil embargo.",
        "By the end of the embargo in March 1974, the price of oil had risen from 3 US dollars per barrel to "
        "nearly 12 dollars globally; US prices were significantly higher.",
        "The crisis led to fuel rationing, long lines at gas stations and a push for smaller cars.",
    ]),
    ("photosynthesis", [
        "Photosynthesis is a process used by plants and other organisms to convert light energy into "
        "chemical energy that is stored in sugars.",
        "Most plants, algae and cyanobacteria perform photosynthesis; such organisms are called photoautotrophs.",
        "Chlorophyll, the green pigment in chloroplasts, absorbs mostly blue and red light.",
    ]),
    ("normans", [
        "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, "
        "a region in France.",
        "They were descended from Norse raiders and pirates from Denmark, Iceland and Norway who swore "
        "fealty to King Charles III of West Francia.",
        "In 1066 William the Conqueror led the Norman conquest of England after the Battle of Hastings.",
    ]),
    ("steam_engine", [
        "A steam engine is a heat engine that performs mechanical work using steam as its working fluid.",
        "James Watt patented a separate condenser in 1769, which greatly improved the efficiency of "
        "the Newcomen engine.",
        "Steam locomotives ran on railways for more than a century before diesel engines replaced them.",
    ]),
    ("amazon", [
        "The Amazon rainforest covers much of the Amazon basin of South America, about seven million "
        "square kilometres.",
        "The majority of the forest is contained within Brazil, with 60% of the rainforest, followed by "
        "Peru with 13% and Colombia with 10%.",
        "Deforestation by cattle ranching and soy farming threatens the biodiversity of the region.",
    ]),
    ("marathon", [
        "A marathon is a long-distance foot race with a distance of 42.195 kilometres, usually run as a "
        "road race.",
        "The runner Eliud Kipchoge runs about 200 kilometres a week when he trains in Kaptagat.",
        "The Boston Marathon, first held in 1897, is the oldest annual marathon in the world.",
    ]),
    ("zurich", [
        "ZÜRICH is the largest city in Switzerland; the café culture of the Niederdorf dates from the 19th "
        "century.",
        "Its lake, the Zürichsee, lies at the foot of the Alps — a naïve visitor expects it to be colder.",
    ]),
    ("greek", ["Η ΟΔΟΣ ΕΡΜΟΥ είναι ένας εμπορικός δρόμος της Αθήνας, ΟΔΟΣ'ΤΟΥ ΕΡΜΗ.", "ΟΔΟΣ"]),
    ("empty", ["", "The, of and a ... it is!", "   \n\t  "]),
]

QUESTIONS = [
    ("When did the 1973 oil crisis begin?", ("oil_crisis", 0)),
    ("What was the price of oil in March of 1974?", ("oil_crisis", 1)),
    ("What pigment absorbs blue and red light?", ("photosynthesis", 2)),
    ("What are organisms that perform photosynthesis called?", ("photosynthesis", 1)),
    ("In what country is Normandy located?", ("normans", 0)),
    ("Who did the Norse raiders swear fealty to?", ("normans", 1)),
    ("When did James Watt patent the separate condenser?", ("steam_engine", 1)),
    ("Which country contains the majority of the Amazon rainforest?", ("amazon", 1)),
    ("How far does Eliud Kipchoge run in a week of training?", ("marathon", 1)),
    ("When was the Boston Marathon first held?", ("marathon", 2)),
    ("Which lake lies at the foot of the Alps?", ("zurich", 1)),
]


def make_chunks(documents: Sequence[tuple[str, Sequence[str]]]) -> list[Chunk]:
    chunks = []
    for doc, paragraphs in documents:
        start = 0
        for i, text in enumerate(paragraphs):
            chunks.append(Chunk(doc, i, start, start + len(text), text, max(1, len(text) // 4)))
            start += len(text) + 2
    return chunks


CHUNKS = make_chunks(DOCUMENTS)


def reference(chunks: Sequence[Chunk]) -> Callable[[str], dict[int, float]]:
    """The previous implementation (bm25s' Tokenizer and BM25): the positive score of every chunk, by position."""
    tokenizer = Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
    bm25 = bm25s.BM25()
    bm25.index(tokenizer.tokenize([c.text for c in chunks], return_as="ids", show_progress=False), show_progress=False)

    def scores(query: str) -> dict[int, float]:
        ids = tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)[0]
        if ids == [tokenizer.word_to_id[""]]:  # the query has no indexed term
            return {}
        return {i: float(s) for i, s in enumerate(bm25.get_scores(ids)) if s > 0}

    return scores


def all_scores(retriever: BM25Retriever, chunks: Sequence[Chunk], query: str) -> dict[int, float]:
    position = {id(c): i for i, c in enumerate(chunks)}
    return {position[id(h.chunk)]: h.score for h in retriever.search(query, len(chunks))}


def key(chunk: Chunk) -> tuple[str, int]:
    return chunk.document_id, chunk.index


@pytest.mark.parametrize(("question", "expected"), QUESTIONS)
def test_the_chunk_with_the_answer_ranks_first(question: str, expected: tuple[str, int]) -> None:
    hits = BM25Retriever(CHUNKS).search(question, 5)
    assert key(hits[0].chunk) == expected
    assert 0 < len(hits) <= 5
    assert all(h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_same_scores_as_bm25s_on_every_chunk() -> None:
    retriever, expected = BM25Retriever(CHUNKS), reference(CHUNKS)
    queries = [q for q, _ in QUESTIONS] + [
        "running", "RUNS", "ran", "marathon marathon runner", "Zurich", "zürich café", "naive", "naïve",
        "οδος", "ΟΔΟΣ", "οδός", "Ερμού", "alps", "1973 1974", "king charles iii", "the", "xyzzy", "",
    ]  # fmt: skip
    for query in queries:
        assert all_scores(retriever, CHUNKS, query) == expected(query), query


def test_stemming_matches_other_forms_of_a_word() -> None:
    retriever = BM25Retriever(CHUNKS)
    for query in ("running", "runs", "run", "RUN!"):
        hits = retriever.search(query, 10)
        assert {key(h.chunk) for h in hits} == {("marathon", 0), ("marathon", 1)}, query
    # A word only seen in queries still matches through its stem.
    assert key(retriever.search("patents", 1)[0].chunk) == ("steam_engine", 1)
    assert key(retriever.search("training", 1)[0].chunk) == ("marathon", 1)


def test_queries_without_indexed_terms_match_nothing() -> None:
    retriever = BM25Retriever(CHUNKS)
    for query in ("", "   ", "the of and a", "It is!", "?", "x y z", "xyzzy plugh", "the zebra"):
        assert retriever.search(query, 5) == [], query


def test_empty_and_degenerate_inputs() -> None:
    empty = BM25Retriever([])
    assert empty.search("anything at all", 5) == []
    assert BM25Retriever(CHUNKS).search("oil", 0) == []
    assert BM25Retriever(CHUNKS).search("oil", -1) == []
    only_stopwords = BM25Retriever(make_chunks([("d", ["", "the of and", "a"])]))
    assert only_stopwords.search("the", 3) == []
    assert only_stopwords.search("oil", 3) == []
    one = BM25Retriever(make_chunks([("d", ["Oil prices rose."])]))
    hits = one.search("price of oil", 10)
    assert len(hits) == 1 and hits[0].score > 0


def test_k_limits_the_hits_and_ties_go_to_the_earlier_chunk() -> None:
    chunks = make_chunks([("d", ["apple pie"] * 4 + ["apple apple pie", "pear"])])
    hits = BM25Retriever(chunks).search("apple", 3)
    assert [h.chunk.index for h in hits] == [4, 0, 1]
    assert hits[1].score == hits[2].score


def test_words_split_at_unicode_punctuation_and_spaces() -> None:
    chunks = make_chunks([("d", ["e\u2014mail and snail\u00a0mail", "café\u2019s menu", "foo_bar baz", "x²y"])])
    retriever = BM25Retriever(chunks)
    assert [h.chunk.index for h in retriever.search("mail", 5)] == [0]
    assert [h.chunk.index for h in retriever.search("snail", 5)] == [0]
    assert [h.chunk.index for h in retriever.search("CAFÉ", 5)] == [1]
    assert [h.chunk.index for h in retriever.search("foo_bar", 5)] == [2]
    assert retriever.search("foo", 5) == []  # "_" is a word character, as in bm25s' token pattern
    assert all_scores(retriever, chunks, "menu mail baz x²y") == reference(chunks)("menu mail baz x²y")


def test_searches_from_several_threads() -> None:
    retriever = BM25Retriever(CHUNKS)
    queries = [q for q, _ in QUESTIONS] * 20 + ["patents", "training", "railway"] * 50
    random.Random(0).shuffle(queries)
    expected = {q: retriever.search(q, 5) for q in set(queries)}
    with ThreadPoolExecutor(4) as pool:
        assert all(pool.map(lambda q: retriever.search(q, 5) == expected[q], queries))


# Words and separators that exercise the tokenizer: stop words, one-letter words, digits, "_",
# accents, case mappings that change length or split a word (İ, ß, ǅ, ligatures), Greek final sigma,
# combining marks, CJK, and Unicode spaces, dashes and quotes.
WORDS = [
    "the", "a", "of", "it", "running", "runs", "Run", "café", "CAFÉ", "naïve", "Zürich", "İstanbul", "straße",
    "STRASSE", "ΟΔΟΣ", "οδός", "Σ", "x", "I", "_", "a_b", "3", "1973", "٣٤", "日本語", "ﬁle", "Ǆemal", "ǅ",
    "e\u0301te\u0301", "\u00bd", "x²", "Ⅻ", "don't", "U.S.A.", "e-mail", "e\u2014mail", "co\u00adop", "zero\u200bwidth",
]  # fmt: skip
SEPARATORS = [" ", "\n\n", ", ", ". ", "\u2014", "\u00a0", "\t", "'", "\u2019", "\u3000", "", "-", "\x00", "\x85", "\u2028"]
TEXTS = st.lists(st.sampled_from(WORDS) | st.sampled_from(SEPARATORS) | st.text(max_size=3), max_size=30).map("".join)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXTS, min_size=1, max_size=8), queries=st.lists(TEXTS, min_size=1, max_size=4))
def test_same_scores_as_bm25s_on_arbitrary_text(texts: list[str], queries: list[str]) -> None:
    chunks = make_chunks([("d", texts)])
    retriever, expected = BM25Retriever(chunks), reference(chunks)
    for query in [*queries, " ".join(texts)[:200]]:
        assert all_scores(retriever, chunks, query) == expected(query)


@pytest.mark.skipif(not EVAL.is_dir(), reason=f"no eval data at {EVAL}")
def test_same_top5_as_bm25s_on_squad2_dev() -> None:
    from qa.chunking import chunk_documents
    from qa.tokens import get_encoding

    docs = [(p.stem, p.read_text(encoding="utf-8")) for p in sorted((EVAL / "docs").glob("*.txt"))]
    chunks = [c for cs in chunk_documents(docs, encoding=get_encoding("o200k_base")) for c in cs]
    with (EVAL / "items.jsonl").open(encoding="utf-8") as f:
        items = [json.loads(line) for line in f if line.strip()][::40]
    retriever, expected = BM25Retriever(chunks), reference(chunks)
    for item in items:
        hits = retriever.search(item["question"], 5)
        want = sorted(expected(item["question"]).items(), key=lambda kv: (-kv[1], kv[0]))[:5]
        position = {id(c): i for i, c in enumerate(chunks)}
        assert [(position[id(h.chunk)], h.score) for h in hits] == want, item["question"]


@settings(max_examples=100, deadline=None, database=None)
@given(
    docs=st.lists(st.lists(st.integers(0, 30), max_size=40), min_size=1, max_size=12),
    method=st.sampled_from(["lucene", "robertson", "atire", "bm25l", "bm25+"]),
)
def test_index_built_from_occurrences_equals_bm25s_own_build(docs: list[list[int]], method: str) -> None:
    """The numpy-counted index holds exactly the arrays bm25s's own per-document loop builds."""
    from qa.retrieval import _BM25, _Corpus, _Occurrences

    vocab = {f"t{i}": i for i in range(31)}
    vocab[""] = 31
    ids = [d or [31] for d in docs]  # an empty document holds the empty token, as bm25s's tokenizer gives
    own = bm25s.BM25(method=method)
    own.index((ids, dict(vocab)), show_progress=False)
    rng = np.random.default_rng(len(docs))
    order = rng.permutation(sum(map(len, ids)))  # occurrences may come in any order
    doc_of = np.repeat(np.arange(len(ids), dtype=np.int32), [len(d) for d in ids])[order]
    term_of = np.concatenate([np.asarray(d, dtype=np.int32) for d in ids])[order]
    fast = _BM25(method=method)
    fast.index(_Corpus(_Occurrences(doc_of, term_of, len(ids)), dict(vocab)), show_progress=False)
    for name in ("data", "indices", "indptr"):
        np.testing.assert_array_equal(fast.scores[name], own.scores[name], err_msg=name)
        assert fast.scores[name].dtype == own.scores[name].dtype, name
    assert fast.scores["num_docs"] == own.scores["num_docs"] == len(ids)
    query = [t for d in ids for t in d][:5]
    np.testing.assert_array_equal(fast.get_scores(query), own.get_scores(query))

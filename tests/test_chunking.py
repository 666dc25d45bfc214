"""qa.chunking: chunks index the text exactly, cover it, respect the token budget and prefer natural boundaries."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import qa.chunking
from qa.chunking import MIN_CHUNK_TOKENS, Chunk, chunk_documents, chunk_text
from qa.errors import ConfigurationError, InputError
from qa.tokens import get_encoding

SEED = Path(__file__).resolve().parent.parent / "examples" / "nk_soldiers_kursk.txt"
ENCODINGS = ("cl100k_base", "o200k_base")
SETTINGS = ((16, 0), (16, 15), (24, 8), (64, 16), (256, 32))


@pytest.fixture(autouse=True, scope="module")
def offline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """An empty tiktoken cache and no network while these tests run."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path_factory.mktemp("tiktoken-cache")))

        def refuse(*args: Any, **kwargs: Any) -> None:
            raise AssertionError(f"network access attempted: {args!r}")

        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


def check(text: str, enc: tiktoken.Encoding, chunk_tokens: int, overlap: int, doc: str = "doc") -> list[Chunk]:
    """chunk_text's result, after asserting every documented invariant."""
    chunks = chunk_text(text, document_id=doc, encoding=enc, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    if not text.strip():
        assert chunks == []
        return chunks
    assert chunks
    covered_to = 0  # every visible character before this offset is in some chunk
    previous: Chunk | None = None
    for i, c in enumerate(chunks):
        assert (c.document_id, c.index) == (doc, i)
        assert 0 <= c.start < c.end <= len(text)
        assert text[c.start : c.end] == c.text
        assert c.text.strip(), "whitespace-only chunk"
        assert c.tokens == len(enc.encode_ordinary(c.text)) <= chunk_tokens
        if previous is not None:
            assert previous.start < c.start and previous.end < c.end
        assert not text[covered_to : c.start].strip(), "visible text skipped between chunks"
        covered_to = c.end
        previous = c
    assert not text[covered_to:].strip(), "visible text after the last chunk"
    return chunks


# -- property tests -------------------------------------------------------------------------------

WORDS = st.sampled_from(
    [
        "the", "Dr.", "Smith", "went", "to", "Washington.", "He", "arrived", "at", "5", "p.m.", "on",
        "Jan.", "9.", "It's", "don't", "U.S.", "e.g.", "1,234.5", "(see", "below)", "\u201cquoted\u201d",
        "naïve", "Ünïcödé", "中文句子。", "これはテストです。", "한국어", "😀", "🇺🇸", "👩‍👩‍👧", "é", "\u0301",
        "http://example.com/a/b", "/usr/bin", "--", "—", "...", "?!", "'s", "#",
    ]
)  # fmt: skip
SEPARATORS = st.sampled_from(
    [" ", " ", " ", " ", "  ", "\t", "\u00a0", "\n", "\n\n", "\r\n", "\r\n\r\n", "\n\n\n\n\n", "\n  ", "\n\t",
     " \n \n", "", ". ", "! ", "? ", ".\n", "\n/", "\x0c", "\u2028"]
)  # fmt: skip
LONG_WORDS = st.builds(
    lambda ch, n: ch * n, st.sampled_from(["a", "ab", "é", "😀", "中", "9", " ", "\n", "-"]), st.integers(20, 400)
)
RANDOM_TEXT = st.text(st.characters(codec="utf-8"), max_size=60)
PIECES = st.one_of(WORDS, WORDS, WORDS, SEPARATORS, SEPARATORS, LONG_WORDS, RANDOM_TEXT)
TEXTS = st.one_of(
    st.lists(PIECES, max_size=120).map("".join),
    st.builds(lambda parts, times: "".join(parts) * times, st.lists(PIECES, max_size=20), st.integers(2, 12)),
)


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXTS, setting=st.sampled_from(SETTINGS), name=st.sampled_from(ENCODINGS))
def test_invariants_on_random_text(text: str, setting: tuple[int, int], name: str) -> None:
    chunk_tokens, overlap = setting
    check(text, get_encoding(name), chunk_tokens, overlap)


@settings(max_examples=300, deadline=None, database=None)
@given(text=TEXTS, name=st.sampled_from(ENCODINGS))
def test_clean_cuts_do_not_change_tokens(text: str, name: str) -> None:
    """The tokenizer-splitting rules the chunker relies on for exact counts without re-encoding."""
    enc = get_encoding(name)
    whole = enc.encode_ordinary(text)
    for p in range(1, len(text)):
        if qa.chunking._is_clean(text, p):
            assert enc.encode_ordinary(text[:p]) + enc.encode_ordinary(text[p:]) == whole, p


@settings(max_examples=60, deadline=None, database=None)
@given(text=TEXTS)
def test_other_pretokenizers_are_counted_by_reencoding(text: str, r50k_like: tiktoken.Encoding) -> None:
    assert not qa.chunking._additive(r50k_like)
    check(text, r50k_like, 24, 8)


@pytest.fixture(scope="module")
def r50k_like() -> tiktoken.Encoding:
    """cl100k_base's vocabulary behind GPT-2's pre-tokenizer regex, for which no clean-cut rule was proven."""
    base = get_encoding("cl100k_base")
    pat = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
    return tiktoken.Encoding("r50k_like", pat_str=pat, mergeable_ranks=base._mergeable_ranks, special_tokens={})


# -- concrete cases -------------------------------------------------------------------------------


@pytest.fixture(params=ENCODINGS)
def enc(request: pytest.FixtureRequest) -> tiktoken.Encoding:
    return get_encoding(request.param)


def sentences(n: int, seed: int = 0) -> str:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    out = []
    for i in range(n):
        k = 6 + (i * 7 + seed) % 9
        out.append(" ".join(words[(i + j + seed) % len(words)] for j in range(k)).capitalize() + ".")
    return " ".join(out)


def test_seed_article_fits_one_chunk() -> None:
    text = SEED.read_text(encoding="utf-8")
    for name, expected in (("cl100k_base", 490), ("o200k_base", 483)):
        [chunk] = check(text, get_encoding(name), 1024, 32, doc="nk_soldiers_kursk.txt")
        assert (chunk.start, chunk.end, chunk.text) == (0, len(text), text)
        assert chunk.tokens == expected


def test_seed_article_in_small_chunks(enc: tiktoken.Encoding) -> None:
    text = SEED.read_text(encoding="utf-8")
    chunks = check(text, enc, 128, 24)
    assert len(chunks) >= 4
    paragraph_starts = {i + 2 for i in range(len(text)) if text.startswith("\n\n", i)}
    assert any(c.end in paragraph_starts for c in chunks[:-1])


def test_paragraph_boundary_is_preferred(enc: tiktoken.Encoding) -> None:
    first, second = sentences(14), sentences(14, seed=5)
    text = first + "\n\n" + second
    assert 150 < len(enc.encode_ordinary(first)) < 256 < len(enc.encode_ordinary(text))
    chunks = check(text, enc, 256, 0)
    assert chunks[0].end == len(first) + 2  # right after the blank line, not inside the second paragraph
    assert chunks[1].start == chunks[0].end and chunks[1].text == second


def test_sentence_boundary_before_word_boundary(enc: tiktoken.Encoding) -> None:
    text = " ".join(["Dr. Smith went to Washington. He arrived at 5 p.m. on Jan. 9."] * 40)
    chunks = check(text, enc, 32, 0)
    for c in chunks[1:]:
        # each cut is at the space before a sentence: never after "Dr.", "p.m." or "Jan."
        assert c.text.startswith((" Dr. Smith", " He arrived")), c.text


def test_consecutive_chunks_overlap_by_whole_sentences(enc: tiktoken.Encoding) -> None:
    text = sentences(80)
    chunks = check(text, enc, 64, 16)
    assert len(chunks) > 5
    for previous, c in zip(chunks, chunks[1:], strict=False):
        assert c.start < previous.end
        shared = text[c.start : previous.end]
        assert 0 < len(enc.encode_ordinary(shared)) <= 16
        last_sentence = " " + previous.text.rsplit(". ", 1)[-1]
        if len(enc.encode_ordinary(last_sentence)) <= 16:  # else it starts inside that sentence
            assert text[c.start - 1] == "." and shared[1].isupper()  # " Alpha ..." after a full stop


def test_no_overlap_means_adjacent_chunks(enc: tiktoken.Encoding) -> None:
    chunks = check(sentences(60), enc, 48, 0)
    assert all(a.end == b.start for a, b in zip(chunks, chunks[1:], strict=False))


@pytest.mark.parametrize(
    "text",
    [
        "a" * 5000,
        "supercalifragilistic" * 300,
        "😀" * 700,
        "🇺🇸👩‍👩‍👧" * 300,
        "中文句子没有空格但是很长" * 150,
        "这是一个句子。" * 200,
        "word " * 2000,
        "line without punctuation\n" * 300,
        "para\r\n\r\n" * 400,
        "\n" * 3000 + "x" + " " * 3000 + "y" + "\n\n\n" * 500,
        " " * 10000 + "end",
        "x" + "\t \u00a0" * 2000 + "y",
        "é" * 3000,
    ],
)
def test_degenerate_texts(text: str, enc: tiktoken.Encoding) -> None:
    for chunk_tokens, overlap in ((16, 0), (16, 8), (100, 30)):
        check(text, enc, chunk_tokens, overlap)


def test_cjk_sentences_end_at_full_stops(enc: tiktoken.Encoding) -> None:
    text = "这是一个很长的测试句子，用来检查分块。" * 60
    chunks = check(text, enc, 64, 0)
    assert all(c.text.endswith("。") for c in chunks)


def test_empty_and_whitespace_give_no_chunks(enc: tiktoken.Encoding) -> None:
    for text in ("", " ", "\n\n\r\n\t ", "\u00a0\u2028"):
        assert chunk_text(text, document_id="d", encoding=enc) == []


def test_small_text_is_one_chunk_with_its_whitespace(enc: tiktoken.Encoding) -> None:
    text = "\n  Hello, world.  \n"
    assert chunk_text(text, document_id="d", encoding=enc) == [
        Chunk("d", 0, 0, len(text), text, len(enc.encode_ordinary(text)))
    ]


@pytest.mark.parametrize(
    ("chunk_tokens", "overlap", "message"),
    [
        (MIN_CHUNK_TOKENS - 1, 0, "chunk_tokens must be an integer >= 16"),
        (0, 0, "chunk_tokens"),
        (256.0, 0, "chunk_tokens"),
        (True, 0, "chunk_tokens"),
        (64, -1, "overlap_tokens must be a non-negative integer"),
        (64, 64, r"overlap_tokens \(64\) must be smaller than chunk_tokens \(64\)"),
        (64, 100, "must be smaller"),
        (64, 1.5, "overlap_tokens"),
    ],
)
def test_invalid_settings(chunk_tokens: Any, overlap: Any, message: str) -> None:
    enc = get_encoding("o200k_base")
    with pytest.raises(ConfigurationError, match=message):
        chunk_text("text", document_id="d", encoding=enc, chunk_tokens=chunk_tokens, overlap_tokens=overlap)
    with pytest.raises(ConfigurationError, match=message):
        chunk_documents([], encoding=enc, chunk_tokens=chunk_tokens, overlap_tokens=overlap)


def test_unpaired_surrogates_are_an_input_error() -> None:
    with pytest.raises(InputError, match="surrogate"):
        chunk_text("abc \ud800 def", document_id="bad.txt", encoding=get_encoding("o200k_base"))


def test_chunk_documents_matches_chunk_text(enc: tiktoken.Encoding) -> None:
    seed = SEED.read_text(encoding="utf-8")
    items = [(f"d{i}", t) for i, t in enumerate([seed, "", sentences(200), "tiny", seed * 3, "中文。" * 500] * 15)]
    expected = [chunk_text(t, document_id=d, encoding=enc, chunk_tokens=64, overlap_tokens=8) for d, t in items]
    for threads in (1, 2, 4):
        got = chunk_documents(items, encoding=enc, chunk_tokens=64, overlap_tokens=8, num_threads=threads)
        assert got == expected
    assert chunk_documents([], encoding=enc) == []


def test_chunk_documents_pipeline_keeps_order_errors_and_long_texts(
    enc: tiktoken.Encoding, monkeypatch: pytest.MonkeyPatch
) -> None:
    # small batches, so that tokenizing runs several batches ahead of packing; one text long enough to be
    # tokenized in parallel pieces itself
    monkeypatch.setattr(qa.chunking, "_BATCH_ITEMS", 3)
    monkeypatch.setattr(qa.chunking, "_PARALLEL_CHARS", 4000)
    seed = SEED.read_text(encoding="utf-8")
    texts = [seed, " \n ", sentences(50), seed * 4, "中文。" * 300, "x"] * 6
    items = [(f"d{i}", t) for i, t in enumerate(texts)]
    expected = [chunk_text(t, document_id=d, encoding=enc, chunk_tokens=64, overlap_tokens=8) for d, t in items]
    assert chunk_documents(items, encoding=enc, chunk_tokens=64, overlap_tokens=8) == expected
    assert [c.document_id for cs in expected for c in cs[:1]] == [d for d, t in items if t.strip()]
    # a bad text anywhere is the same typed error, naming that document
    bad = [*items[:20], ("bad.txt", "ok \ud800 no"), *items[20:]]
    with pytest.raises(InputError, match="'bad.txt' contains unpaired surrogate"):
        chunk_documents(bad, encoding=enc, chunk_tokens=64, overlap_tokens=8)


def test_long_text_is_tokenized_in_parallel_pieces(enc: tiktoken.Encoding, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (SEED.read_text(encoding="utf-8") + "中文 😀 e.g. x/y\r\n  z ") * 20
    monkeypatch.setattr(qa.chunking, "_PARALLEL_CHARS", 2000)
    assert qa.chunking._encode(enc, text, 2).tolist() == enc.encode_ordinary(text)
    assert qa.chunking._encode(enc, text, 1).tolist() == enc.encode_ordinary(text)
    special = "a <|endoftext|> b <|fim_prefix|>" * 5  # special-token text is ordinary text to a chunker
    assert qa.chunking._encode(enc, special, 1).tolist() == enc.encode_ordinary(special)
    check(text, enc, 200, 40)

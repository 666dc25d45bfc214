"""BM25 retrieval over chunks, and filling a prompt's token budget with the best passages."""

from __future__ import annotations

import operator
import re
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import compress, count, repeat
from typing import Any, Protocol

import bm25s
import numpy as np
import numpy.typing as npt
import Stemmer
from bm25s.stopwords import STOPWORDS_EN

from qa.chunking import Chunk

__all__ = ["BM25Retriever", "Hit", "Passage", "Retriever", "select_passages"]


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk and its retrieval score."""

    chunk: Chunk
    score: float


class Retriever(Protocol):
    """Ranks chunks for a query."""

    def search(self, query: str, k: int) -> list[Hit]:
        """The best `k` chunks for `query`, best first, only those that match at all."""
        ...


# BM25Retriever tokenizes as bm25s' default tokenizer with English stop words and Snowball stemming
# does (lowercased text, token pattern r"(?u)\b\w\w+\b", stop words dropped, each word stemmed), but
# with a few passes of C and numpy code over the whole corpus and each distinct word stemmed once,
# instead of Python code per token, which cost twice the chunking. Scoring is bm25s's own.
# The same tokens as r"(?u)\b\w\w+\b": every maximal run of two or more word characters.
_WORD = re.compile(r"\w\w+")
_STOPWORDS = frozenset(STOPWORDS_EN)
# Texts are split as UTF-8 bytes: ASCII non-word characters become spaces, and bytes.split() cuts there.
# A piece with non-ASCII bytes is then lowercased and split by _WORD (as re sees Unicode letters, digits,
# spaces and punctuation); there are few distinct such pieces.
_ASCII_SPLIT = bytes(b if re.fullmatch(r"\w", chr(b)) else 0x20 for b in range(128)) + bytes(range(128, 256))
# Ends every text in a batch: 0xFF never occurs in UTF-8.
_END = b"\xff"
# Texts are split in batches of about this many characters, which bounds the memory of the pieces.
_BATCH_CHARS = 1 << 20

_Int32s = npt.NDArray[np.int32]


def _batches(texts: Sequence[str]) -> Iterator[Sequence[str]]:
    start, size = 0, 0
    for i, text in enumerate(texts):
        size += len(text)
        if size >= _BATCH_CHARS:
            yield texts[start : i + 1]
            start, size = i + 1, 0
    if start < len(texts):
        yield texts[start:]


@dataclass(frozen=True, slots=True)
class _Occurrences:
    """Every term occurrence of a corpus: its document number and term id (in any order)."""

    docs: _Int32s
    terms: _Int32s
    n_docs: int

    def per_document(self) -> list[list[int]]:
        """The term ids of each document, as bm25s's own build takes them."""
        order = np.argsort(self.docs, kind="stable")
        bounds = np.searchsorted(self.docs[order], np.arange(1, self.n_docs))
        return [part.tolist() for part in np.split(self.terms[order], bounds)]


@dataclass(frozen=True, slots=True)
class _Corpus:
    """What bm25s.BM25.index takes as a tokenized corpus (an object with `ids` and `vocab`)."""

    ids: _Occurrences
    vocab: dict[str, int]


class _BM25(bm25s.BM25):  # type: ignore[misc]  # bm25s has no type hints
    """bm25s.BM25 whose index is built from term occurrences counted with numpy.

    bm25s documents `build_index_from_ids` as the method to override to build the index another way.
    Its own build counts term and document frequencies with a Python loop per document, which cost as much
    as chunking the text; here they are counted in a few numpy passes. Everything BM25 is still
    bm25s's: its idf and term-frequency scorers give the scores, its CSC builder stores them, and its
    `get_scores` ranks. The scores are bit-identical to bm25s's own build (tests check it)."""

    def build_index_from_ids(
        self,
        unique_token_ids: list[int],
        corpus_token_ids: Any,
        show_progress: bool = True,
        leave_progress: bool = False,
    ) -> dict[str, Any]:
        if not isinstance(corpus_token_ids, _Occurrences):
            return super().build_index_from_ids(  # type: ignore[no-any-return]
                unique_token_ids, corpus_token_ids, show_progress=show_progress, leave_progress=leave_progress
            )
        if self.method in self.methods_requiring_nonoccurrence or self.csc_backend != "numpy":
            # BM25L and BM25+ also need bm25s's non-occurrence scores: its own build does it all.
            return super().build_index_from_ids(  # type: ignore[no-any-return]
                unique_token_ids, corpus_token_ids.per_document(), show_progress=show_progress,
                leave_progress=leave_progress,
            )  # fmt: skip
        occurrences = corpus_token_ids
        n_docs, n_vocab = occurrences.n_docs, len(unique_token_ids)
        self.nonoccurrence_array = None
        doc_lengths = np.bincount(occurrences.docs, minlength=n_docs)
        avg_doc_len = doc_lengths.mean()
        # Distinct (document, term) pairs, sorted, with how often the term occurs in the document.
        pairs, tf = np.unique(occurrences.docs.astype(np.int64) * n_vocab + occurrences.terms, return_counts=True)
        doc_idx, vocab_idx = np.divmod(pairs, n_vocab)
        doc_frequencies = np.bincount(vocab_idx, minlength=n_vocab)
        # idf: bm25s's scorer, called once per distinct document frequency.
        compute_idf = bm25s.scoring._select_idf_scorer(self.idf_method)
        distinct, inverse = np.unique(doc_frequencies, return_inverse=True)
        idf_of = np.array([compute_idf(int(df), N=n_docs) if df else 0.0 for df in distinct.tolist()])
        idf_array = idf_of[inverse].astype(self.dtype)
        tfc = bm25s.scoring._select_tfc_scorer(self.method)(
            tf_array=tf.astype(self.dtype), l_d=doc_lengths[doc_idx], l_avg=avg_doc_len, k1=self.k1, b=self.b,
            delta=self.delta,
        )  # fmt: skip
        scores_flat = (idf_array[vocab_idx] * tfc).astype(self.dtype)
        data, indices, indptr = self._np_csc(
            data=scores_flat, rows=doc_idx.astype(self.int_dtype), cols=vocab_idx.astype(self.int_dtype),
            shape=(n_docs, n_vocab),
        )  # fmt: skip
        return {"data": data.astype(self.dtype), "indices": indices, "indptr": indptr, "num_docs": n_docs}


class BM25Retriever:
    """BM25 (bm25s: Lucene variant, k1 1.5, b 0.75) over a fixed list of chunks, with English stop words
    and Snowball stemming."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        # No cache: the index stems each distinct word once, and a cache costs more than it saves there.
        self._stemmer = Stemmer.Stemmer("english", 0)
        self._stemmer_lock = threading.Lock()  # a Stemmer must not be used by two threads at once
        self._word_term: dict[str, int] = {}  # every word of the chunks but stop words -> its term
        self._stem_term: dict[str, int] = {}
        self._bm25 = _BM25()
        if not self.chunks:
            return
        docs, terms = self._index_terms([c.text for c in self.chunks])
        vocab = dict(self._stem_term)
        empty = np.flatnonzero(np.bincount(docs, minlength=len(self.chunks)) == 0)
        if empty.size:
            # As bm25s' own tokenizer does, a chunk without terms holds one empty token (it counts in
            # the average chunk length, and no query term ever matches it).
            empty_term = vocab[""] = len(vocab)
            docs = np.concatenate([docs, empty.astype(np.int32)])
            terms = np.concatenate([terms, np.full(empty.size, empty_term, dtype=np.int32)])
        self._bm25.index(_Corpus(_Occurrences(docs, terms, len(self.chunks)), vocab), show_progress=False)

    def _index_terms(self, texts: Sequence[str]) -> tuple[_Int32s, _Int32s]:
        """The (text number, term) of every term occurrence in `texts`; sets the vocabulary."""
        # Every text into pieces, each distinct piece numbered on first sight (_END is piece 0).
        piece_id: defaultdict[bytes, int] = defaultdict(count().__next__)
        end = piece_id[_END]
        parts = []
        for batch in _batches(texts):
            # Lowercasing is done per distinct piece below, but "Σ" lowercases by context (final sigma),
            # so a text with one is lowercased whole first, as bm25s does with every text.
            encoded = [(t.lower() if "\u03a3" in t else t).encode("utf-8") for t in batch]
            pieces = (b" \xff ".join(encoded) + b" \xff").translate(_ASCII_SPLIT).split()
            parts.append(np.fromiter(map(piece_id.__getitem__, pieces), dtype=np.int32, count=len(pieces)))
            del encoded, pieces
        ids = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)
        del parts
        is_end = ids == end
        docs = np.cumsum(is_end, dtype=np.int32) - is_end
        del is_end

        # The distinct pieces into words. An ASCII piece is one word (if of two characters or more);
        # any other is lowercased and split by _WORD into zero or more words.
        texts_of_pieces = ["", *map(str.lower, map(bytes.decode, list(piece_id)[1:]))]
        split: dict[int, list[str]] = {}
        for i in compress(range(1, len(piece_id)), map(operator.not_, map(str.isascii, texts_of_pieces[1:]))):
            words = _WORD.findall(texts_of_pieces[i])
            if words != [texts_of_pieces[i]]:
                split[i] = words
        candidates = dict.fromkeys(texts_of_pieces)
        for i, words in split.items():
            candidates.pop(texts_of_pieces[i], None)
            candidates.update(dict.fromkeys(words))
        vocabulary = [w for w in candidates if len(w) > 1 and w not in _STOPWORDS]
        stem_term: defaultdict[str, int] = defaultdict(count().__next__)
        self._word_term = dict(zip(vocabulary, map(stem_term.__getitem__, self._stemmer.stemWords(vocabulary))))
        self._stem_term = dict(stem_term)

        # Occurrences of the pieces that are one word, then of the others (one pair per word).
        piece_term = np.fromiter(
            map(self._word_term.get, texts_of_pieces, repeat(-1)), dtype=np.int32, count=len(texts_of_pieces)
        )
        terms = piece_term[ids]
        keep = terms >= 0
        all_docs, all_terms = [docs[keep]], [terms[keep]]
        del terms, keep
        if split:
            n_split = np.zeros(len(piece_id), dtype=np.int64)
            first = np.zeros(len(piece_id), dtype=np.int64)
            flat: list[int] = []
            for i, words in split.items():
                split_terms = [self._word_term[w] for w in words if w in self._word_term]
                n_split[i], first[i] = len(split_terms), len(flat)
                flat.extend(split_terms)
            where = np.flatnonzero(n_split[ids])
            occurrences = ids[where]
            n = n_split[occurrences]
            offsets = np.repeat(first[occurrences] - (np.cumsum(n) - n), n) + np.arange(int(n.sum()))
            all_docs.append(np.repeat(docs[where], n))
            all_terms.append(np.asarray(flat, dtype=np.int32)[offsets])
        return np.concatenate(all_docs), np.concatenate(all_terms)

    def _query_terms(self, query: str) -> list[int]:
        """The terms of `query` in order, repeats kept, unknown words and stop words left out."""
        terms = []
        for word in _WORD.findall(query.lower()):
            term = self._word_term.get(word)
            if term is None and word not in _STOPWORDS:
                with self._stemmer_lock:
                    stem = self._stemmer.stemWord(word)
                term = self._stem_term.get(stem)
            if term is not None:
                terms.append(term)
        return terms

    def search(self, query: str, k: int) -> list[Hit]:
        """The best `k` chunks for `query`, best first, only those with a positive score (ties: the
        earlier chunk first); none for a query without any word of the chunks but stop words."""
        if not self.chunks or k <= 0:
            return []
        terms = self._query_terms(query)
        if not terms:
            return []
        scores = self._bm25.get_scores(terms)
        found = np.flatnonzero(scores > 0)
        if found.size > k:
            kth = np.partition(scores[found], found.size - k)[found.size - k]
            found = found[scores[found] >= kth]
        best = found[np.lexsort((found, -scores[found]))[:k]]
        return [Hit(self.chunks[d], float(s)) for d, s in zip(best.tolist(), scores[best].tolist(), strict=True)]


@dataclass(frozen=True, slots=True)
class Passage:
    """A span of one document shown to the model under a number; one or more adjacent chunks."""

    number: int
    document_id: str
    start: int
    end: int
    text: str
    tokens: int
    chunks: tuple[Chunk, ...]


def _merge(chunks: list[Chunk], text_of: Mapping[str, str]) -> tuple[str, int, int, str, int, tuple[Chunk, ...]]:
    first = chunks[0]
    start, end = first.start, max(c.end for c in chunks)
    text = text_of[first.document_id][start:end]
    tokens = sum(c.tokens for c in chunks)
    return first.document_id, start, end, text, tokens, tuple(chunks)


def select_passages(
    question: str,
    texts: Mapping[str, str],
    retriever: Retriever,
    *,
    budget_tokens: int,
    top_k: int,
) -> list[Passage]:
    """The best `top_k` BM25 hits for `question` that fit in `budget_tokens`, adjacent hits of a document
    merged into one passage, in rank order."""
    chosen: list[Chunk] = []
    used = 0
    for hit in retriever.search(question, top_k):
        if used + hit.chunk.tokens <= budget_tokens:
            chosen.append(hit.chunk)
            used += hit.chunk.tokens
    # Keep rank order between passages, but join chunks of one document that touch or overlap.
    rank = {(c.document_id, c.index): r for r, c in enumerate(chosen)}
    groups: list[list[Chunk]] = []
    for c in sorted(chosen, key=lambda c: (c.document_id, c.index)):
        if groups and groups[-1][-1].document_id == c.document_id and groups[-1][-1].end >= c.start:
            groups[-1].append(c)
        else:
            groups.append([c])
    groups.sort(key=lambda g: min(rank[(c.document_id, c.index)] for c in g))
    passages = []
    for number, group in enumerate(groups, 1):
        doc_id, start, end, text, tokens, members = _merge(group, texts)
        passages.append(Passage(number, doc_id, start, end, text, tokens, members))
    return passages

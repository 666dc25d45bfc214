"""Attribution: the sentences of the passages that state an answer — found by the library, the model's quotes a hint.

A quote that exists in the source is not yet a quote that supports the answer. A small model often gets
the answer right and quotes the wrong sentence (or garbles the right one), and a re-ask at temperature 0
tends to bring back the same reply. So the library checks what the answer states against the sentences
of the passages itself:

- an answer *states* its numbers (digits; "4000" = "4,000", and a range "10,000 – 12,000" states 12,000)
  and its content words (lower-cased, stop words dropped, Snowball-stemmed, as retrieval reads them);
- a set of sentences *supports* it when the sentences state every number it states and enough of its
  content words (all of them for a short answer, most of them for a long one);
- the model's own verified quotes are tried first; when they do not support the answer, the library
  picks the sentences of the passages that do (preferring those the model quoted, then those that share
  words with the question), up to `max_citations` (or one per sentence of a long-form answer);
- typed answers are checked leaf by leaf: every number and every string a field states; an answer of several
  sentences, sentence by sentence.

A yes/no answer states nothing a sentence can contain; it is supported by the sentences that share the most
words with the question. When nothing supports the answer, the caller withholds it (or asks again).
Every citation is still an exact span of its document.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import Stemmer
from bm25s.stopwords import STOPWORDS_EN
from pydantic import BaseModel

from qa.evidence import sentence_spans

__all__ = [
    "NUMBER",
    "Attribution",
    "Claim",
    "SourceSentence",
    "attribute",
    "claims_of",
    "number_key",
    "numbers_in",
    "restate_numbers",
    "sentences_of",
    "words_in",
]

NUMBER = re.compile(r"\d+(?:[.,]\d+)*")  # a number written in digits: 4000, 4,000, 12.5
_WORD = re.compile(r"[^\W\d_]{2,}")
_STOPWORDS = frozenset(STOPWORDS_EN) | {"yes", "no", "not"}
_STEMMER = Stemmer.Stemmer("english")
# A claim with no number and up to this many content words must be stated whole; a longer one (a long-form
# answer, which a model paraphrases) needs this share of its words (and at least this many) stated.
_SHORT_CLAIM_WORDS = 2
_LONG_CLAIM_COVERAGE = 0.6
# The library cites at least one sentence per claim of a long-form answer, up to this many in all.
_MAX_ATTRIBUTED = 8
# Sentences on each side of a cited one that count as its context when comparing it with the question.
_CONTEXT_SENTENCES = 0


def number_key(number: str) -> str:
    """The value a written number states: "4,000" = "4000", "12.50" = "12.5", "01" = "1"."""
    whole, _, fraction = number.replace(",", "").partition(".")
    whole, fraction = whole.lstrip("0") or "0", fraction.rstrip("0")
    return f"{whole}.{fraction}" if fraction else whole


def numbers_in(text: str) -> set[str]:
    """The numbers `text` states (digits only), as `number_key`s."""
    return {number_key(n) for n in NUMBER.findall(text)}


def words_in(text: str) -> set[str]:
    """The content words of `text`: lower-cased, stop words dropped, stemmed."""
    words = [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS]
    return set(_STEMMER.stemWords(words)) if words else set()


# A question's own interrogatives say what kind of answer is wanted, not what it is about: a sentence that shares
# only "who" with "Who won the football match?" is not about the match.
_INTERROGATIVES = frozenset(words_in("who whom whose what which when where why how"))


@dataclass(frozen=True, slots=True)
class Claim:
    """What one answer (or one field of a typed answer) states: its numbers and content words."""

    text: str
    numbers: frozenset[str]
    words: frozenset[str]

    @classmethod
    def of(cls, text: str) -> Claim:
        """The claim `text` makes."""
        return cls(text, frozenset(numbers_in(text)), frozenset(words_in(text)))

    @property
    def empty(self) -> bool:
        """True for an answer such as "yes" that states no number and no content word."""
        return not self.numbers and not self.words

    def needed_words(self) -> int:
        """How many of its content words the cited sentences must state: with numbers, which carry the claim,
        half (the rest are often hedges and units: "about", "troops"); else all of a short claim's, and most
        of a long one's (a long-form answer paraphrases)."""
        n = len(self.words)
        if self.numbers:
            return n // 2
        return n if n <= _SHORT_CLAIM_WORDS else max(_SHORT_CLAIM_WORDS, round(n * _LONG_CLAIM_COVERAGE))


def claims_of(answer: Any) -> list[Claim]:
    """The claims an answer makes: the text itself, or each number and string of a typed answer (leaf by leaf)."""
    leaves: list[str] = []

    def walk(value: Any) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, Enum):
            walk(value.value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple, set, frozenset)):
            for item in value:
                walk(item)
        elif isinstance(value, (int, float)):
            leaves.append(f"{value:g}" if isinstance(value, float) else str(value))
        else:
            leaves.append(str(value))

    walk(answer)
    # A long-form answer makes one claim a sentence: each must be stated, not just most of its words overall.
    return [Claim.of(leaf[a:b]) for leaf in leaves if leaf.strip() for a, b in sentence_spans(leaf, 0, len(leaf))]


@dataclass(frozen=True, slots=True)
class SourceSentence:
    """One sentence of a passage, at its document's offsets."""

    document_id: str
    start: int
    end: int
    text: str
    passage: int  # the passage's number (its relevance rank)
    order: int  # position among all sentences, for neighbours
    numbers: frozenset[str]
    words: frozenset[str]


def sentences_of(passages: Mapping[int, tuple[str, int, str]]) -> list[SourceSentence]:
    """The sentences of each passage ({number: (document id, document offset, text)}), in passage order."""
    out: list[SourceSentence] = []
    for number in sorted(passages):
        doc, offset, text = passages[number]
        for s, e in sentence_spans(text, 0, len(text)):
            piece = text[s:e]
            out.append(
                SourceSentence(
                    doc, offset + s, offset + e, piece, number, len(out),
                    frozenset(numbers_in(piece)), frozenset(words_in(piece)),
                )
            )  # fmt: skip
    return out


@dataclass(frozen=True, slots=True)
class Attribution:
    """The spans that support an answer, and how they were found."""

    spans: tuple[tuple[str, int, int], ...]  # (document id, start, end), each an exact span of its document
    attributed: bool  # True when the library chose sentences the model had not quoted
    question_overlap: float  # share of the question's content words the cited sentences (and neighbours) state


def _supported(claims: Sequence[Claim], numbers: set[str], words: set[str]) -> bool:
    return all(c.numbers <= numbers and len(c.words & words) >= c.needed_words() for c in claims)


def _question_overlap(question: frozenset[str], chosen: Iterable[SourceSentence], sentences: Sequence[SourceSentence]) -> float:
    if not question:
        return 1.0
    context: set[str] = set()
    for s in chosen:
        for j in range(s.order - _CONTEXT_SENTENCES, s.order + _CONTEXT_SENTENCES + 1):
            if 0 <= j < len(sentences) and sentences[j].document_id == s.document_id:
                context |= sentences[j].words
    return len(question & context) / len(question)


def attribute(
    answer: Any,
    question: str,
    quoted: Sequence[tuple[str, int, int]],
    passages: Mapping[int, tuple[str, int, str]],
    texts: Mapping[str, str],
    *,
    max_citations: int,
) -> Attribution | None:
    """The spans that support `answer`, or None when no sentences of the passages do.

    `quoted` are the model's verified quotes (document id, start, end). When together they state what the
    answer states, they are the citations. Otherwise the sentences of `passages` are chosen greedily: the one
    that states the most still-unstated numbers, then words, preferring sentences the model quoted and those
    sharing words with the question, until the answer is supported or `max_citations` are chosen.
    """
    claims = claims_of(answer)
    question_words = frozenset(words_in(question)) - _INTERROGATIVES
    sentences = sentences_of(passages)
    if not sentences:
        return None
    substantive = [c for c in claims if not c.empty]

    def hinted(s: SourceSentence) -> bool:
        return any(doc == s.document_id and a < s.end and s.start < b for doc, a, b in quoted)

    if quoted:
        quoted_text = " ".join(texts[doc][a:b] for doc, a, b in quoted)
        if substantive and _supported(substantive, numbers_in(quoted_text), words_in(quoted_text)):
            inside = [s for s in sentences if hinted(s)]
            return Attribution(tuple(quoted), False, _question_overlap(question_words, inside, sentences))

    if not substantive:
        # "yes", "no": supported by the sentences that share the most words with the question.
        if not question_words:
            return None
        ranked = sorted(
            sentences, key=lambda s: (-len(s.words & question_words), not hinted(s), s.passage, s.order)
        )
        most = len(ranked[0].words & question_words)
        if not most:
            return None
        chosen = [s for s in ranked[:max_citations] if len(s.words & question_words) == most]
        if quoted and all(hinted(s) for s in chosen):
            return Attribution(tuple(quoted), False, _question_overlap(question_words, chosen, sentences))
        spans = tuple((s.document_id, s.start, s.end) for s in chosen)
        return Attribution(spans, True, _question_overlap(question_words, chosen, sentences))

    limit = max(max_citations, min(len(substantive), _MAX_ATTRIBUTED))
    need_numbers = set().union(*(c.numbers for c in substantive))
    need_words = set().union(*(c.words for c in substantive))
    have_numbers: set[str] = set()
    have_words: set[str] = set()
    chosen = []
    while len(chosen) < limit and not _supported(substantive, have_numbers, have_words):
        best: tuple[Any, ...] | None = None
        pick: SourceSentence | None = None
        for s in sentences:
            if s in chosen:
                continue
            new_numbers = len((s.numbers & need_numbers) - have_numbers)
            new_words = len((s.words & need_words) - have_words)
            if not new_numbers and not new_words:
                continue
            key = (new_numbers, new_words, hinted(s), len(s.words & question_words), -s.passage, -s.order)
            if best is None or key > best:
                best, pick = key, s
        if pick is None:
            break
        chosen.append(pick)
        have_numbers |= pick.numbers
        have_words |= pick.words
    if not _supported(substantive, have_numbers, have_words):
        return None
    chosen.sort(key=lambda s: s.order)
    overlap = _question_overlap(question_words, chosen, sentences)
    if quoted and all(hinted(s) for s in chosen):
        # The model quoted (part of) each sentence that states it; cite its words where they suffice.
        spans = tuple((s.document_id, s.start, s.end) for s in chosen)
        return Attribution(spans, False, overlap)
    return Attribution(tuple((s.document_id, s.start, s.end) for s in chosen), True, overlap)


def restate_numbers(answer: str, cited: Iterable[str]) -> str:
    """`answer` with each number written as the cited text writes it ("4000" -> "4,000" where a citation says 4,000)."""
    forms: dict[str, str] = {}
    for text in cited:
        for n in NUMBER.findall(text):
            forms.setdefault(number_key(n), n)
    return NUMBER.sub(lambda m: forms.get(number_key(m.group()), m.group()), answer)

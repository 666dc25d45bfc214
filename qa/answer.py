"""The Answer and Citation types, the schema the model must fill, and quote verification against the source."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, create_model
from rapidfuzz import fuzz

from qa.attribution import NUMBER, number_key
from qa.framing import FOLDED

__all__ = [
    "Answer",
    "ChunkRef",
    "Citation",
    "ModelQuote",
    "Usage",
    "answer_schema_model",
    "decline_probability",
    "Decision",
    "find_quote",
    "locate_quote",
]

OutputT = TypeVar("OutputT")


class Usage(BaseModel):
    """Tokens and calls spent on one question, summed over every LLM call and retry."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = Field(0, description="LLM responses received (first call plus re-asks).")
    attempts: int = Field(0, description="HTTP attempts made, transport retries included.")
    reasks: int = Field(0, description="Calls made again because the output failed validation.")
    retries: int = Field(0, description="Transport retries (429, 5xx, timeouts, connection errors).")
    cached_calls: int = Field(0, description="Replies served from the response cache, with no LLM call (not in calls).")
    repeats: int = Field(
        0, description="Times the model repeated a reply already rejected, which ends the re-asks (a call saved)."
    )

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


MatchKind = Literal["exact", "normalised", "fuzzy", "attributed"]


class ChunkRef(BaseModel):
    """The indexed chunk a citation falls in."""

    model_config = ConfigDict(frozen=True)

    index: int
    start: int
    end: int


class Citation(BaseModel):
    """A verified verbatim span of a source document: `document.text[start:end] == quote`."""

    model_config = ConfigDict(frozen=True)

    document_id: str
    start: int
    end: int
    quote: str
    chunk: ChunkRef
    match: MatchKind = Field(
        "exact",
        description="How the span was found: the model's quote word for word, after folding whitespace/quote "
        "marks/case, or as a near-verbatim span with the same numbers; or attributed: a sentence the library found "
        "to state the answer where the model's quotes did not (the quote is always the source's own text).",
    )
    page: int | None = Field(None, description="The page (1-based) of a PDF the quote starts on.")
    section: str | None = Field(
        None, description="The heading path the quote is under in an HTML, Word or PDF file, e.g. 'Results › Casualties'."
    )

    @property
    def location(self) -> str:
        """Where the quote is, as a reader finds it: "p. 3", "§ Results › Casualties", or ""."""
        parts = ([f"p. {self.page}"] if self.page is not None else []) + ([f"§ {self.section}"] if self.section else [])
        return " ".join(parts)


Decision = Literal[
    "quoted", "attributed", "declined", "unsure", "unsupported", "unrelated", "unverified", "no_passages"
]


class Answer(BaseModel, Generic[OutputT]):
    """An answer to one question, with the verified citations it rests on."""

    question: str
    answer: OutputT | None = Field(description="The answer; None when the documents do not contain it.")
    found: bool = Field(description="False when the documents do not answer the question.")
    citations: list[Citation] = Field(default_factory=list)
    verified: bool = Field(
        True,
        description="True when the citations state what the answer states (its numbers and words); False for an "
        "answer nothing in the passages supports (withheld, or returned as is when require_citations is off).",
    )
    decision: Decision = Field(
        "quoted",
        description="How the answer was reached: quoted (the model's own quotes state it), attributed (the library "
        "found the sentences that state it), declined (the model said the passages do not answer), unsure (the "
        "model's decline probability reached decline_threshold), unsupported (no sentence of the passages states "
        "what the model answered: withheld), unrelated (the sentences that state it have nothing to do with the "
        "question: withheld), unverified (returned unsupported, require_citations off), "
        "no_passages (nothing retrieved; the model was not called).",
    )
    proposed: Any = Field(
        None,
        description="What the model last answered, kept or not (None when it declined): shows what was withheld.",
    )
    usage: Usage = Field(default_factory=Usage)
    model: str = ""
    decline_probability: float | None = Field(
        None,
        description="How likely the model was to decline rather than answer, p(null) / (p(null) + p(answer)) at the "
        "first token of its result, from the server's token log-probabilities; None when they were not requested "
        "or returned. qa declines when it reaches Settings.decline_threshold.",
    )

    def __str__(self) -> str:
        if not self.found:
            return "Not found in the documents."
        answer = self.answer.model_dump_json() if isinstance(self.answer, BaseModel) else str(self.answer)
        lines = [answer]
        for n, c in enumerate(self.citations, 1):
            where = f"{c.document_id} {c.location}" if c.location else c.document_id
            lines.append(f"  [{n}] {where}:{c.start}-{c.end} \"{c.quote}\"")
        return "\n".join(lines)


# --- what the model fills in ------------------------------------------------------------------


class ModelQuote(BaseModel):
    # One quote the model gives as evidence, copied from a numbered passage. (A comment, not a
    # docstring: pydantic would put a docstring into the JSON schema shown to the model.)

    model_config = ConfigDict(extra="forbid")

    # No descriptions: the system prompt explains the fields, and in json_object mode the schema is
    # part of every prompt, so each word here costs tokens on every call.
    passage: int
    quote: str = Field(min_length=1, max_length=400)


_SCHEMA_MODELS: dict[tuple[Any, int], type[BaseModel]] = {}


def answer_schema_model(output: Any = str, max_citations: int = 3, *, quotes: bool = True) -> type[BaseModel]:
    """The Pydantic model the model's JSON must satisfy: {"result": null} or {"result": {"answer", "quotes"}}
    (without "quotes" when `quotes` is False: the library then finds the sentences that state the answer)."""
    key = (output, max_citations if quotes else 0)
    if key not in _SCHEMA_MODELS:
        _SCHEMA_MODELS[key] = _build_schema_model(output, max_citations if quotes else 0)
    return _SCHEMA_MODELS[key]


def _build_schema_model(output: Any, max_citations: int) -> type[BaseModel]:
    # {"result": null} when the passages do not say; otherwise the answer and at least one quote.
    # Nesting the quotes under a nullable result lets schema-constrained decoding require evidence
    # for every answer while still allowing a plain "not found", and keeps the root an object.
    suffix = "" if output is str else f"_{getattr(output, '__name__', 'Output')}"
    fields: dict[str, Any] = {
        # A bound on free-text answers keeps a small model's grammar-constrained output from running to max_tokens.
        "answer": (output, Field(max_length=600)) if output is str else (output, ...),
    }
    if max_citations:
        fields["quotes"] = (list[ModelQuote], Field(min_length=1, max_length=max_citations))
    else:
        suffix += "_Bare"
    cited = create_model("CitedAnswer" + suffix, __config__=ConfigDict(extra="forbid"), **fields)
    result_type: Any = cited | None
    return create_model(
        "QAResponse" + suffix,
        __config__=ConfigDict(extra="forbid"),
        result=(result_type, ...),
    )


# --- how sure the model was that it should answer ----------------------------------------------

# Where the value of "result" starts in the model's JSON: null (declines) or an object (answers).
_RESULT_VALUE = re.compile(r'"result"\s*:\s*')


def decline_probability(content: str, tokens: Sequence[tuple[str, Sequence[tuple[str, float]]]]) -> float | None:
    """p(null) / (p(null) + p({)) at the token that starts the "result" value of `content`.

    `tokens` are the reply's tokens in order, each with its most likely alternatives (token text,
    log-probability), as OpenAI's `top_logprobs` gives them. Alternatives are read as continuations of
    the text before the value (a token may begin with the `:` or the space before it); those that start
    the value with "null" count as declining, those that start it with "{" as answering, others (which
    schema-constrained decoding would not allow) not at all. None when the value or both kinds are missing.
    """
    match = _RESULT_VALUE.search(content)
    if match is None:
        return None
    value_at = match.end()
    offset = 0
    for token, top in tokens:
        end = offset + len(token)
        if end > value_at:
            if offset > value_at:
                return None  # token texts do not line up with the content
            lead = content[offset:value_at]
            p_null = p_object = 0.0
            for alternative, logprob in top:
                if not alternative.startswith(lead):
                    continue
                rest = alternative[len(lead) :].lstrip()
                if not rest:
                    continue
                if rest.startswith("null") or "null".startswith(rest):
                    p_null += math.exp(logprob)
                elif rest.startswith("{"):
                    p_object += math.exp(logprob)
            total = p_null + p_object
            return p_null / total if total > 0 else None
        offset = end
    return None


# --- locating quotes ---------------------------------------------------------------------

_QUOTE_MARKS = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'", "`": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u2033": '"', "\u00ab": '"', "\u00bb": '"',
        "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2010": "-", "\u2011": "-",
        "\u00a0": " ",
        **FOLDED,  # the full-width < > [ ] passages are shown with (qa.framing)
    }
)  # fmt: skip
_SPACE = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class _Normalised:
    text: str
    origin: list[int]  # origin[i] = index in the source of normalised character i


def _normalise(text: str) -> _Normalised:
    """Fold quote marks and dashes, collapse whitespace runs, lower-case; keep a map back to the source."""
    out: list[str] = []
    origin: list[int] = []
    folded = text.translate(_QUOTE_MARKS)
    last_space = True
    for i, ch in enumerate(folded):
        if ch.isspace():
            if last_space:
                continue
            out.append(" ")
            origin.append(i)
            last_space = True
        else:
            low = ch.lower()
            if len(low) != 1:  # 'İ'.lower() is two characters; keep the offset map one-to-one
                low = ch
            out.append(low)
            origin.append(i)
            last_space = False
    return _Normalised("".join(out), origin)


_WORD = re.compile(r"\w+")


def _too_short(quote: str) -> bool:
    """A quote of fewer than two words ("1", "Tuva") is found almost anywhere and proves nothing."""
    return len(_WORD.findall(quote)) < 2
_FUZZY_MIN_CHARS = 20


def _numbers(text: str) -> list[str]:
    return sorted(map(number_key, NUMBER.findall(text)))


def _snap_to_words(source: str, start: int, end: int) -> tuple[int, int]:
    """Widen a span that starts inside a word to the word's start; cut a partial word off its end."""
    while start > 0 and source[start - 1].isalnum() and source[start].isalnum():
        start -= 1
    if end < len(source) and source[end - 1].isalnum() and source[end].isalnum():
        cut = end
        while cut > start and not source[cut - 1].isspace():
            cut -= 1
        if cut > start:
            end = cut
    while start < end and (source[start].isspace() or source[start] in ",;:.)]}"):
        start += 1
    while end > start and source[end - 1].isspace():
        end -= 1
    return start, end


def locate_quote(quote: str, source: str, *, fuzzy: float | None = None) -> tuple[int, int, MatchKind] | None:
    """Where `quote` stands in `source`: exactly, after whitespace/quote-mark/case folding, or (when `fuzzy`
    is a score from 0 to 100) as the best near-verbatim span with the same numbers; None if absent."""
    stripped = quote.strip().strip('"').strip()
    if not stripped:
        return None
    exact = source.find(stripped)
    if exact >= 0:
        return exact, exact + len(stripped), "exact"
    needle = _normalise(stripped).text.strip()
    if not needle:
        return None
    hay = _normalise(source)
    pos = hay.text.find(needle)
    if pos >= 0:
        return hay.origin[pos], hay.origin[pos + len(needle) - 1] + 1, "normalised"
    if fuzzy is None or len(needle) < _FUZZY_MIN_CHARS or len(needle) > len(hay.text):
        return None
    # A small model often copies a sentence with a word changed or dropped. Accept the best-aligned
    # span only when it is nearly identical and states exactly the same numbers, so "40,000" can
    # never be matched to "4,000".
    aligned = fuzz.partial_ratio_alignment(needle, hay.text, score_cutoff=fuzzy)
    if aligned is None or aligned.dest_end <= aligned.dest_start:
        return None
    start = hay.origin[aligned.dest_start]
    end = hay.origin[aligned.dest_end - 1] + 1
    start, end = _snap_to_words(source, start, end)
    span = source[start:end]
    if not span or _numbers(span) != _numbers(stripped):
        return None
    if fuzz.ratio(needle, _normalise(span).text) < fuzzy:
        return None
    return start, end, "fuzzy"


def find_quote(
    quote: str, number: int, passages: Mapping[int, str], *, fuzzy: float | None = None
) -> tuple[int, tuple[int, int, MatchKind]] | None:
    """The passage holding `quote` and where in it: the passage the model named first, then the others
    (small models often copy a sentence correctly but give it the wrong number)."""
    if number in passages and (where := locate_quote(quote, passages[number], fuzzy=fuzzy)) is not None:
        return number, where
    for other, text in passages.items():
        if other != number and (where := locate_quote(quote, text, fuzzy=fuzzy)) is not None:
            return other, where
    return None


def verify_quotes(
    quotes: Sequence[ModelQuote], passages: Mapping[int, tuple[str, int, str]], *, fuzzy: float | None = None
) -> tuple[list[tuple[str, int, int, MatchKind]], list[str]]:
    """Map each quote to (document_id, start, end) in its document; also return one error per quote that fails.

    `passages` maps passage number to (document_id, document offset of the passage, passage text).
    """
    spans: list[tuple[str, int, int, MatchKind]] = []
    errors: list[str] = []
    seen: set[tuple[str, int, int]] = set()
    for n, q in enumerate(quotes):
        if _too_short(q.quote):
            errors.append(f"quotes[{n}]: too short to show anything: {q.quote!r}")
            continue
        found = find_quote(q.quote, q.passage, {k: v[2] for k, v in passages.items()}, fuzzy=fuzzy)
        if found is None:
            where_named = f"passage {q.passage}" if q.passage in passages else f"any passage (no passage {q.passage})"
            errors.append(f"quotes[{n}]: not found word for word in {where_named}: {q.quote!r}")
            continue
        doc_id, offset, _ = passages[found[0]]
        where = found[1]
        span = (doc_id, offset + where[0], offset + where[1])
        if span not in seen:
            seen.add(span)
            spans.append((*span, where[2]))
    return spans, errors

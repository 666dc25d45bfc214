"""Evaluation harness: run the pipeline over a dataset sample and score answers, abstention, citations, retrieval."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import random
import re
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from qa.errors import DocumentError, InputError

__all__ = [
    "AnswerLike",
    "CitationLike",
    "CORRECT_F1",
    "CitationResult",
    "Dataset",
    "EvalConfig",
    "EvalItem",
    "EvalReport",
    "EvalSummary",
    "IndexFactory",
    "IndexLike",
    "ItemResult",
    "PassageLike",
    "SplitSource",
    "UsageLike",
    "UsageRecord",
    "add_cli",
    "best_exact_match",
    "best_f1",
    "citation_is_valid",
    "cites_answer",
    "contains_answer",
    "evaluate",
    "exact_match_score",
    "f1_score",
    "filter_split",
    "load_dataset",
    "normalize_answer",
    "percentile",
    "run_cli",
    "sample_items",
    "summarize",
]

SplitSource = Literal["split.json", "hash", "none"]
CORRECT_F1 = 0.5
"""Token F1 at which an answer counts as right (for withheld-but-correct and citation support of right answers)."""

# --------------------------------------------------------------------------------------------
# What the harness needs from the pipeline (structural, so it depends on no pipeline module).
# --------------------------------------------------------------------------------------------


class UsageLike(Protocol):
    """Token and call counts of one answer (shaped like `qa.Usage`)."""

    @property
    def prompt_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def calls(self) -> int: ...
    @property
    def attempts(self) -> int: ...
    @property
    def reasks(self) -> int: ...
    @property
    def retries(self) -> int: ...


class CitationLike(Protocol):
    """A cited span of a document (shaped like `qa.Citation`)."""

    @property
    def document_id(self) -> str: ...
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def quote(self) -> str: ...


class AnswerLike(Protocol):
    """The result of one question (shaped like `qa.Answer`)."""

    @property
    def answer(self) -> object: ...
    @property
    def found(self) -> bool: ...
    @property
    def citations(self) -> Sequence[CitationLike]: ...
    @property
    def usage(self) -> UsageLike: ...
    @property
    def model(self) -> str: ...


class PassageLike(Protocol):
    """A retrieved passage (shaped like `qa.Passage`)."""

    @property
    def text(self) -> str: ...


class IndexLike(Protocol):
    """What the harness calls on an index (shaped like `qa.Index`)."""

    def ask(self, question: str) -> AnswerLike: ...
    def retrieve(self, question: str) -> Sequence[PassageLike]: ...


IndexFactory = Callable[[Mapping[str, str], Any], IndexLike]
"""Builds an index from `{document id: text}` and the settings (None means the pipeline's defaults)."""


def _default_index_factory(texts: Mapping[str, str], settings: Any) -> IndexLike:
    """Build a `qa.Index` over the texts (imported lazily so this module never needs the pipeline)."""
    qa = importlib.import_module("qa")
    documents = [qa.Document(text=text, id=doc_id) for doc_id, text in texts.items()]
    index: IndexLike = qa.Index(documents, settings=settings)
    return index


# --------------------------------------------------------------------------------------------
# Metrics (SQuAD v2 official normalisation and scoring).
# --------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD normalisation: lower-case, drop punctuation, drop articles a/an/the, collapse whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match_score(prediction: str | None, gold: str) -> float:
    """1.0 when the normalised prediction equals the normalised gold answer; a None prediction scores 0."""
    if prediction is None:
        return 0.0
    return float(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str | None, gold: str) -> float:
    """SQuAD token F1 between prediction and one gold answer; a None prediction scores 0."""
    if prediction is None:
        return 0.0
    pred_tokens = normalize_answer(prediction).split()
    gold_tokens = normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def best_exact_match(prediction: str | None, golds: Sequence[str]) -> float:
    """Exact match, maximised over the gold answers (0 when there are none)."""
    return max((exact_match_score(prediction, gold) for gold in golds), default=0.0)


def best_f1(prediction: str | None, golds: Sequence[str]) -> float:
    """Token F1, maximised over the gold answers (0 when there are none)."""
    return max((f1_score(prediction, gold) for gold in golds), default=0.0)


def contains_answer(golds: Sequence[str], spans: Iterable[str]) -> bool:
    """True when some normalised gold answer occurs, on token boundaries, in some normalised span."""
    needles = [f" {g} " for g in (normalize_answer(gold) for gold in golds) if g]
    if not needles:
        return False
    for span in spans:
        haystack = f" {normalize_answer(span)} "
        if any(needle in haystack for needle in needles):
            return True
    return False


LONG_ANSWER_TOKENS = 8
"""A gold answer longer than this many tokens is a long-form answer (a paraphrase of a few sentences)."""


def cites_answer(golds: Sequence[str], spans: Sequence[str]) -> bool:
    """True when the cited spans hold a gold answer: verbatim (normalised), or for a long-form gold answer, at
    least half of its tokens (such answers are written by annotators over several sentences)."""
    if contains_answer(golds, spans):
        return True
    cited = Counter(normalize_answer(" ".join(spans)).split())
    for gold in golds:
        tokens = Counter(normalize_answer(gold).split())
        if sum(tokens.values()) > LONG_ANSWER_TOKENS and sum((tokens & cited).values()) >= sum(tokens.values()) / 2:
            return True
    return False


def citation_is_valid(citation: CitationLike, texts: Mapping[str, str]) -> bool:
    """True when the citation names a known document, is a non-empty in-bounds span, and quotes it exactly."""
    text = texts.get(citation.document_id)
    if text is None:
        return False
    start, end = citation.start, citation.end
    if not (0 <= start < end <= len(text)):
        return False
    return text[start:end] == citation.quote


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th quantile (0..1) with linear interpolation between closest ranks; None for no values."""
    if not values:
        return None
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be within [0, 1], got {q}")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


# --------------------------------------------------------------------------------------------
# Dataset loading, split filtering and sampling.
# --------------------------------------------------------------------------------------------


class EvalItem(BaseModel):
    """One question of a dataset; extra keys of the source line are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    doc_ids: list[str] = Field(description="Documents that hold the answer (the line's doc_ids, else [doc_id]).")
    distractor_doc_ids: list[str] = Field(default_factory=list, description="Extra documents to search among.")
    question: str
    answers: list[str]
    answerable: bool

    @property
    def primary_doc_id(self) -> str:
        """The line's `doc_id`: the first of `doc_ids`."""
        return self.doc_ids[0]

    @property
    def index_doc_ids(self) -> tuple[str, ...]:
        """Every document the item's index is built over (answer documents plus distractors), sorted."""
        return tuple(sorted({*self.doc_ids, *self.distractor_doc_ids}))


@dataclass
class Dataset:
    """A dataset folder: its items, its split map (None without split.json) and lazily read documents."""

    path: Path
    items: list[EvalItem]
    split_map: dict[str, str] | None
    _texts: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        """The folder name, e.g. `squad2_dev`."""
        return self.path.name

    @property
    def split_source(self) -> SplitSource:
        """Where splits come from: the folder's split.json, else a hash of each item's document id."""
        return "split.json" if self.split_map is not None else "hash"

    def text(self, doc_id: str) -> str:
        """The exact text of `docs/<doc_id>.txt` (read once, bytes decoded as UTF-8 with no newline translation)."""
        cached = self._texts.get(doc_id)
        if cached is not None:
            return cached
        path = self.path / "docs" / f"{doc_id}.txt"
        try:
            text = path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            raise DocumentError(f"dataset document {doc_id!r} not found: {path}", path=str(path)) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DocumentError(f"cannot read dataset document {path}: {exc}", path=str(path)) from exc
        self._texts[doc_id] = text
        return text

    def split_of(self, item: EvalItem) -> str | None:
        """The item's split: from split.json when every document it needs maps to one split, else hashed."""
        if self.split_map is None:
            return _hash_split(item.primary_doc_id)
        splits = {self.split_map.get(doc_id) for doc_id in item.index_doc_ids}
        if len(splits) != 1:
            return None
        return splits.pop()

    def splits(self) -> list[str]:
        """The split names this dataset offers."""
        if self.split_map is None:
            return ["dev", "test"]
        return sorted(set(self.split_map.values()))


def _hash_split(doc_id: str) -> str:
    """A stable dev/test assignment of a document for datasets without split.json (about half each)."""
    return "dev" if hashlib.sha256(doc_id.encode("utf-8")).digest()[0] % 2 == 0 else "test"


def _parse_item(raw: Any, where: str) -> EvalItem:
    """One items.jsonl object as an EvalItem, with a clear error naming the line."""
    if not isinstance(raw, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    data = dict(raw)
    doc_ids = data.get("doc_ids")
    if not doc_ids:
        doc_id = data.get("doc_id")
        doc_ids = [doc_id] if doc_id else []
    elif data.get("doc_id") and data["doc_id"] != doc_ids[0]:
        doc_ids = [data["doc_id"], *(d for d in doc_ids if d != data["doc_id"])]
    if not doc_ids:
        raise InputError(f"{where}: item has neither doc_id nor doc_ids")
    data["doc_ids"] = doc_ids
    data.setdefault("distractor_doc_ids", [])
    try:
        return EvalItem.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"{where}: invalid item: {exc}") from exc


def load_dataset(dataset_dir: str | Path) -> Dataset:
    """Read `items.jsonl` and, when present, `split.json` of a dataset folder (documents are read on demand)."""
    path = Path(dataset_dir)
    items_path = path / "items.jsonl"
    if not items_path.is_file():
        raise InputError(f"not a dataset folder (no items.jsonl): {path}")
    items: list[EvalItem] = []
    seen: set[str] = set()
    with items_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{items_path}:{number}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{where}: invalid JSON: {exc}") from exc
            item = _parse_item(raw, where)
            if item.id in seen:
                raise InputError(f"{where}: duplicate item id {item.id!r}")
            seen.add(item.id)
            items.append(item)
    split_map: dict[str, str] | None = None
    split_path = path / "split.json"
    if split_path.is_file():
        try:
            loaded = json.loads(split_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{split_path}: invalid JSON: {exc}") from exc
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in loaded.items()
        ):
            raise InputError(f"{split_path}: expected an object mapping document id to split name")
        split_map = loaded
    return Dataset(path=path, items=items, split_map=split_map)


def filter_split(dataset: Dataset, split: str | None) -> list[EvalItem]:
    """The items of one split in file order (all items when split is None).

    With split.json an item belongs to a split when every document its index needs maps to that split.
    Without split.json each item is assigned by a stable hash of its `doc_id`, so dev and test are
    disjoint by document and `--split` means the same thing on every dataset.
    """
    if split is None:
        return list(dataset.items)
    available = dataset.splits()
    if split not in available:
        raise InputError(f"unknown split {split!r} for {dataset.name}; available: {', '.join(available)}")
    return [item for item in dataset.items if dataset.split_of(item) == split]


def sample_items(items: Sequence[EvalItem], limit: int | None, seed: int) -> list[EvalItem]:
    """`limit` items drawn with `random.Random(seed)` from the id-sorted list, returned in their original order."""
    if limit is None or limit >= len(items):
        return list(items)
    if limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    by_id = sorted(items, key=lambda item: item.id)
    chosen = {item.id for item in random.Random(seed).sample(by_id, limit)}
    return [item for item in items if item.id in chosen]


# --------------------------------------------------------------------------------------------
# Results.
# --------------------------------------------------------------------------------------------


class UsageRecord(BaseModel):
    """Token and call counts of one item."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    attempts: int = 0
    reasks: int = 0
    retries: int = 0

    @classmethod
    def of(cls, usage: UsageLike) -> UsageRecord:
        """Copy the counts of a `qa.Usage`-shaped object."""
        return cls(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            calls=usage.calls,
            attempts=usage.attempts,
            reasks=usage.reasks,
            retries=usage.retries,
        )


class CitationResult(BaseModel):
    """One citation of an answer and whether its quote is exactly the cited text."""

    document_id: str
    start: int
    end: int
    quote: str
    valid: bool


class ItemResult(BaseModel):
    """The outcome and scores of one item; score fields are None where they do not apply or the item failed."""

    id: str
    question: str
    doc_ids: list[str]
    answers: list[str]
    answerable: bool
    prediction: str | None = None
    found: bool | None = None
    citations: list[CitationResult] = Field(default_factory=list)
    em: float | None = Field(default=None, description="Exact match (answerable items).")
    f1: float | None = Field(default=None, description="Token F1 (answerable items).")
    abstained: bool | None = Field(default=None, description="not found (None when the item failed).")
    supported: bool | None = Field(
        default=None,
        description="The cited spans hold a gold answer (answerable items): verbatim, or half the tokens of a "
        "long-form one.",
    )
    retrieved_hit: bool | None = Field(
        default=None, description="A gold answer occurs in a retrieved passage (answerable items)."
    )
    retrieved_passages: int | None = None
    latency: float | None = Field(default=None, description="Seconds spent in index.ask.")
    model: str | None = Field(default=None, description="The model that answered.")
    decline_probability: float | None = Field(
        default=None, description="Answer.decline_probability (when log-probabilities were requested and returned)."
    )
    usage: UsageRecord | None = None
    decision: str | None = Field(default=None, description="Answer.decision: how the answer was reached or withheld.")
    proposed: str | None = Field(default=None, description="What the model answered, kept or withheld (Answer.proposed).")
    proposed_f1: float | None = Field(
        default=None, description="Token F1 of the model's proposed answer (answerable items), kept or withheld."
    )
    error: str | None = None


class EvalSummary(BaseModel):
    """Aggregate metrics; rates are fractions in [0, 1], None when their denominator is empty."""

    items: int
    answerable: int
    unanswerable: int
    errors: int
    exact_match: float | None = Field(description="Mean EM over answerable items (failed items score 0).")
    f1: float | None = Field(description="Mean token F1 over answerable items (failed items score 0).")
    squad2_exact_match: float | None = Field(
        description="SQuAD v2 overall EM: answerable items by EM, unanswerable items 1 when abstained."
    )
    squad2_f1: float | None = Field(description="SQuAD v2 overall F1, same convention as squad2_exact_match.")
    answer_rate: float | None = Field(description="Share of answerable items answered (found).")
    abstention_precision: float | None = Field(description="Abstentions on unanswerable items / all abstentions.")
    abstention_recall: float | None = Field(description="Abstentions on unanswerable items / unanswerable items.")
    abstention_accuracy: float | None = Field(
        description="Share of all items where the answer/abstain decision was right (abstained == not answerable)."
    )
    citations_total: int
    citations_valid: int
    citation_validity: float | None = Field(description="Valid citations / all citations (must be 1.0).")
    citation_support: float | None = Field(description="Answerable items with a gold answer in a cited span.")
    correct: float | None = Field(
        description="Answerable items answered with token F1 >= 0.5 (a right answer)."
    )
    correct_supported: float | None = Field(
        description="Of the right answers, the share whose citations hold a gold answer (citation support)."
    )
    withheld_correct: float | None = Field(
        description="Answerable items whose proposed answer was right (F1 >= 0.5) but which the library withheld."
    )
    proposed_f1: float | None = Field(
        description="Mean token F1 of the model's proposed answers over answerable items (nothing withheld)."
    )
    decisions: dict[str, int] = Field(default_factory=dict, description="How many answers took each decision path.")
    retrieval_recall: float | None = Field(description="Answerable items with a gold answer in a retrieved passage.")
    retrieved_passages_mean: float | None = Field(description="Mean passages returned by retrieve (the k).")
    prompt_tokens_mean: float | None
    completion_tokens_mean: float | None
    latency_median: float | None = Field(description="Seconds per successful ask, median.")
    latency_p90: float | None = Field(description="Seconds per successful ask, 90th percentile.")
    calls_total: int
    reasks_total: int
    retries_total: int


class EvalConfig(BaseModel):
    """What was evaluated: dataset, split, sampling and model."""

    dataset: str
    dataset_path: str
    split: str | None
    split_source: SplitSource
    limit: int | None
    seed: int
    model: str | None
    items_in_split: int
    items_evaluated: int


class EvalReport(BaseModel):
    """A whole evaluation run: configuration, summary metrics and per-item results."""

    config: EvalConfig
    summary: EvalSummary
    items: list[ItemResult]

    def to_markdown(self) -> str:
        """The configuration as a heading line and the summary as a markdown table."""
        c, s = self.config, self.summary
        split = c.split if c.split is not None else "all"
        if c.split is not None and c.split_source == "hash":
            split += " (hashed by document)"
        heading = (
            f"**{c.dataset}** · split {split} · {c.items_evaluated} of {c.items_in_split} items"
            f" · seed {c.seed} · model {c.model or 'unknown'}"
        )
        rows: list[tuple[str, str]] = [
            ("items", f"{s.items} ({s.answerable} answerable, {s.unanswerable} unanswerable)"),
            ("errors", str(s.errors)),
            ("exact match (answerable)", _pct(s.exact_match)),
            ("F1 (answerable)", _pct(s.f1)),
            ("SQuAD v2 EM / F1 (all)", f"{_pct(s.squad2_exact_match)} / {_pct(s.squad2_f1)}"),
            ("answer rate (answerable)", _pct(s.answer_rate)),
            ("abstention precision", _pct(s.abstention_precision)),
            ("abstention recall", _pct(s.abstention_recall)),
            ("abstention accuracy (all)", _pct(s.abstention_accuracy)),
            ("citation validity", f"{_pct(s.citation_validity)} ({s.citations_valid}/{s.citations_total})"),
            ("citation support (answerable)", _pct(s.citation_support)),
            ("right answers (F1 >= 0.5)", _pct(s.correct)),
            ("citation support of right answers", _pct(s.correct_supported)),
            ("withheld but right", _pct(s.withheld_correct)),
            ("F1 of proposed answers (nothing withheld)", _pct(s.proposed_f1)),
            ("decisions", ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items())) or "n/a"),
            (f"retrieval recall@{_num(s.retrieved_passages_mean, 1)}", _pct(s.retrieval_recall)),
            ("prompt tokens / question", _num(s.prompt_tokens_mean, 0)),
            ("completion tokens / question", _num(s.completion_tokens_mean, 0)),
            ("latency median / p90 (s)", f"{_num(s.latency_median, 2)} / {_num(s.latency_p90, 2)}"),
            ("LLM calls", str(s.calls_total)),
            ("re-asks", str(s.reasks_total)),
            ("transport retries", str(s.retries_total)),
        ]
        lines = [heading, "", "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in rows]
        return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    """A fraction as a percentage with one decimal, or n/a."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int) -> str:
    """A number with fixed decimals, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(numerator: float, denominator: int) -> float | None:
    """numerator / denominator, None when the denominator is 0."""
    return numerator / denominator if denominator else None


def _mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean, None for no values."""
    return sum(values) / len(values) if values else None


def summarize(results: Sequence[ItemResult]) -> EvalSummary:
    """Aggregate per-item results; failed items count as wrong (EM/F1 0, not answered, not abstained)."""
    answerable = [r for r in results if r.answerable]
    unanswerable = [r for r in results if not r.answerable]
    abstained = [r for r in results if r.abstained is True]
    correct_abstentions = sum(1 for r in unanswerable if r.abstained is True)
    em_sum = sum(r.em or 0.0 for r in answerable)
    f1_sum = sum(r.f1 or 0.0 for r in answerable)
    decisions_right = correct_abstentions + sum(1 for r in answerable if r.abstained is False)
    right = [r for r in answerable if r.found and (r.f1 or 0.0) >= CORRECT_F1]
    withheld_right = [
        r for r in answerable if r.found is False and r.proposed_f1 is not None and r.proposed_f1 >= CORRECT_F1
    ]
    citations = [c for r in results for c in r.citations]
    valid = sum(1 for c in citations if c.valid)
    usages = [r.usage for r in results if r.usage is not None]
    latencies = [r.latency for r in results if r.latency is not None and r.found is not None]
    retrieved = [r.retrieved_passages for r in results if r.retrieved_passages is not None]
    return EvalSummary(
        items=len(results),
        answerable=len(answerable),
        unanswerable=len(unanswerable),
        errors=sum(1 for r in results if r.error is not None),
        exact_match=_ratio(em_sum, len(answerable)),
        f1=_ratio(f1_sum, len(answerable)),
        squad2_exact_match=_ratio(em_sum + correct_abstentions, len(results)),
        squad2_f1=_ratio(f1_sum + correct_abstentions, len(results)),
        answer_rate=_ratio(sum(1 for r in answerable if r.found is True), len(answerable)),
        abstention_precision=_ratio(correct_abstentions, len(abstained)),
        abstention_recall=_ratio(correct_abstentions, len(unanswerable)),
        abstention_accuracy=_ratio(decisions_right, len(results)),
        citations_total=len(citations),
        citations_valid=valid,
        citation_validity=_ratio(valid, len(citations)),
        citation_support=_ratio(sum(1 for r in answerable if r.supported is True), len(answerable)),
        correct=_ratio(len(right), len(answerable)),
        correct_supported=_ratio(sum(1 for r in right if r.supported is True), len(right)),
        withheld_correct=_ratio(len(withheld_right), len(answerable)),
        proposed_f1=_ratio(sum(r.proposed_f1 or 0.0 for r in answerable), len(answerable)),
        decisions=dict(Counter(r.decision for r in results if r.decision is not None)),
        retrieval_recall=_ratio(sum(1 for r in answerable if r.retrieved_hit is True), len(answerable)),
        retrieved_passages_mean=_mean([float(n) for n in retrieved]),
        prompt_tokens_mean=_mean([float(u.prompt_tokens) for u in usages]),
        completion_tokens_mean=_mean([float(u.completion_tokens) for u in usages]),
        latency_median=percentile(latencies, 0.5),
        latency_p90=percentile(latencies, 0.9),
        calls_total=sum(u.calls for u in usages),
        reasks_total=sum(u.reasks for u in usages),
        retries_total=sum(u.retries for u in usages),
    )


# --------------------------------------------------------------------------------------------
# Running.
# --------------------------------------------------------------------------------------------


def _prediction(answer: AnswerLike) -> str | None:
    """The answer text scored against the golds: None when not found or empty."""
    if not answer.found or answer.answer is None:
        return None
    value = answer.answer
    return value if isinstance(value, str) else str(value)


def _describe(exc: BaseException) -> str:
    """`ExceptionType: message` for an item's error field."""
    return f"{type(exc).__name__}: {exc}"


def _usage_of_error(exc: BaseException) -> UsageRecord | None:
    """The usage an exception carries (e.g. AnswerValidationError.usage), if it looks like `qa.Usage`."""
    usage = getattr(exc, "usage", None)
    if usage is None:
        return None
    try:
        return UsageRecord.of(usage)
    except (AttributeError, ValidationError):
        return None


def _evaluate_item(
    item: EvalItem,
    index: IndexLike,
    texts: Mapping[str, str],
    clock: Callable[[], float],
) -> tuple[ItemResult, Exception | None]:
    """Ask one question, score the answer and its citations, and check retrieval; returns ask's exception."""
    result = ItemResult(
        id=item.id, question=item.question, doc_ids=item.doc_ids, answers=item.answers, answerable=item.answerable
    )
    errors: list[str] = []
    ask_error: Exception | None = None
    started = clock()
    try:
        answer = index.ask(item.question)
    except Exception as exc:  # noqa: BLE001 - one failed item must not end the run
        result.latency = clock() - started
        result.usage = _usage_of_error(exc)
        errors.append(_describe(exc))
        ask_error = exc
    else:
        result.latency = clock() - started
        result.model = answer.model or None
        prediction = _prediction(answer)
        result.prediction = prediction
        result.found = bool(answer.found)
        result.abstained = not answer.found
        result.decline_probability = getattr(answer, "decline_probability", None)
        result.usage = UsageRecord.of(answer.usage)
        result.decision = getattr(answer, "decision", None)
        proposed = getattr(answer, "proposed", None)
        result.proposed = None if proposed is None else proposed if isinstance(proposed, str) else str(proposed)
        result.citations = [
            CitationResult(
                document_id=c.document_id,
                start=c.start,
                end=c.end,
                quote=c.quote,
                valid=citation_is_valid(c, texts),
            )
            for c in answer.citations
        ]
        if item.answerable:
            result.em = best_exact_match(prediction, item.answers)
            result.f1 = best_f1(prediction, item.answers)
            result.proposed_f1 = best_f1(result.proposed, item.answers)
            cited = [texts[c.document_id][c.start : c.end] for c in result.citations if c.valid]
            result.supported = cites_answer(item.answers, cited)
    try:
        passages = index.retrieve(item.question)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"retrieve: {_describe(exc)}")
    else:
        result.retrieved_passages = len(passages)
        if item.answerable:
            result.retrieved_hit = contains_answer(item.answers, (p.text for p in passages))
    if errors:
        result.error = "; ".join(errors)
    return result, ask_error


def _failed_item(item: EvalItem, exc: BaseException) -> ItemResult:
    """The result of an item whose index could not be built."""
    return ItemResult(
        id=item.id,
        question=item.question,
        doc_ids=item.doc_ids,
        answers=item.answers,
        answerable=item.answerable,
        error=f"index: {_describe(exc)}",
    )


def _progress(items: Sequence[EvalItem], enabled: bool, desc: str) -> Iterable[EvalItem]:
    """Wrap items in a tqdm bar on stderr (tqdm imported lazily; it ships no type information)."""
    tqdm = importlib.import_module("tqdm").tqdm
    bar: Iterable[EvalItem] = tqdm(items, disable=not enabled, file=sys.stderr, desc=desc, unit="q")
    return bar


def evaluate(
    dataset_dir: str | Path,
    *,
    split: str | None = None,
    limit: int | None = None,
    seed: int = 0,
    settings: Any = None,
    index_factory: IndexFactory | None = None,
    progress: bool = True,
    max_consecutive_errors: int | None = 10,
    clock: Callable[[], float] = time.perf_counter,
) -> EvalReport:
    """Run the pipeline over a deterministic sample of a dataset split and score it.

    `index_factory(texts, settings)` builds an index over `{doc id: text}` (default: `qa.Index`); one
    index is built per distinct document set and dropped once no remaining item needs it. A failing
    item is recorded with its error and scored as wrong; after `max_consecutive_errors` failures in a
    row (None: never) the last exception is re-raised, since the endpoint or settings are likely broken.
    """
    if max_consecutive_errors is not None and max_consecutive_errors < 1:
        raise InputError(f"max_consecutive_errors must be >= 1 or None, got {max_consecutive_errors}")
    factory = index_factory if index_factory is not None else _default_index_factory
    dataset = load_dataset(dataset_dir)
    in_split = filter_split(dataset, split)
    chosen = sample_items(in_split, limit, seed)

    remaining = Counter(item.index_doc_ids for item in chosen)
    indexes: dict[tuple[str, ...], IndexLike] = {}
    results: list[ItemResult] = []
    models: Counter[str] = Counter()
    consecutive = 0
    for item in _progress(chosen, progress, dataset.name):
        key = item.index_doc_ids
        last_error: Exception | None
        try:
            texts = {doc_id: dataset.text(doc_id) for doc_id in key}
            index = indexes.get(key)
            if index is None:
                index = indexes[key] = factory(texts, settings)
        except Exception as exc:  # noqa: BLE001
            result = _failed_item(item, exc)
            last_error = exc
        else:
            result, last_error = _evaluate_item(item, index, texts, clock)
        remaining[key] -= 1
        if remaining[key] == 0:
            indexes.pop(key, None)
        results.append(result)
        if result.model:
            models[result.model] += 1
        consecutive = consecutive + 1 if last_error is not None else 0
        if last_error is not None and max_consecutive_errors is not None and consecutive >= max_consecutive_errors:
            last_error.add_note(f"evaluation aborted after {consecutive} consecutive failed items")
            raise last_error

    model = models.most_common(1)[0][0] if models else None
    if model is None:
        configured = getattr(settings, "model", None)
        model = configured if isinstance(configured, str) else None
    config = EvalConfig(
        dataset=dataset.name,
        dataset_path=str(dataset.path),
        split=split,
        split_source=dataset.split_source if split is not None else "none",
        limit=limit,
        seed=seed,
        model=model,
        items_in_split=len(in_split),
        items_evaluated=len(chosen),
    )
    return EvalReport(config=config, summary=summarize(results), items=results)


# --------------------------------------------------------------------------------------------
# Command line.
# --------------------------------------------------------------------------------------------


def _positive_int(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {number}")
    return number


def add_cli(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `eval DATASET_DIR [--split dev|test] [--limit N] [--seed S] [--json OUT] [--no-progress]`."""
    parser = subparsers.add_parser(
        "eval",
        help="score the pipeline on a QA dataset folder",
        description=(
            "Answer a deterministic sample of a dataset's questions and print a markdown table of metrics. "
            "Datasets without split.json are split dev/test by a stable hash of each item's document id."
        ),
    )
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", type=Path, help="folder with items.jsonl and docs/")
    parser.add_argument("--split", choices=("dev", "test"), default=None, help="only items of this split")
    parser.add_argument("--limit", type=_positive_int, default=None, metavar="N", help="evaluate N sampled items")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="sampling seed (default 0)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT", help="also write the full report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(handler=run_cli)


def run_cli(args: argparse.Namespace, settings: Any = None) -> int:
    """Handle `qa eval`: run `evaluate`, print the markdown summary, write JSON if asked; returns 0."""
    if settings is None:
        settings = importlib.import_module("qa").Settings.from_env()
    report = evaluate(
        args.dataset_dir,
        split=args.split,
        limit=args.limit,
        seed=args.seed,
        settings=settings,
        progress=not args.no_progress,
    )
    sys.stdout.write(report.to_markdown())
    if args.json is not None:
        Path(args.json).write_text(report.model_dump_json(indent=2) + "\n", encoding="utf-8")
    return 0

"""The one place that wires the stages: load → chunk → index → retrieve → prompt → call → verify → Answer."""

from __future__ import annotations

import bisect
import json
import logging
import re
from collections.abc import AsyncIterator, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import numpy as np
import tiktoken
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from qa.answer import (
    Answer,
    ChunkRef,
    Citation,
    MatchKind,
    Usage,
    answer_schema_model,
    decline_probability,
    verify_quotes,
)
from qa.cache import CachingLLM, ResponseCache
from qa.attribution import attribute, claims_of, restate_numbers
from qa.chunking import Chunk, chunk_documents
from qa.documents import Document
from qa.embed import Embedder, embedder_for, retrieval_mode
from qa.evidence import focus
from qa.errors import AnswerValidationError, InputError, QAError, StoreError
from qa.framing import fence, neutralise
from qa.ingest import IngestReport, ingest
from qa.limits import check_documents, check_question, check_reply, json_depth, too_deep
from qa.llm import LLM, LLMRequest, LLMResponse, OpenAILLM
from qa.loaders import load
from qa.progress import Progress, Stages, reporting
from qa.prompts import PromptSet, load_prompts
from qa.retrieval import BM25Retriever, Passage, Retriever, select_passages
from qa.settings import Settings
from qa.store import Entry, Store, StoredDocument, StoreStats, documents_of
from qa.store.memory import MemoryStore
from qa.store.sqlite import SQLiteStore
from qa.streaming import StreamEvent, arun_many, astream_flow, run_many, stream_flow
from qa.tokens import encoding_for_model, get_encoding
from qa.vectors import StoreVectors

if TYPE_CHECKING:
    from qa.local.registry import LocalModelSpec

__all__ = ["Index", "ask"]

logger = logging.getLogger("qa")

OutputT = TypeVar("OutputT", bound=BaseModel)
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)
# Room kept free in the context window for tokenizer differences between tiktoken and the server's model.
_TOKEN_MARGIN = 0.10

Flow = Generator[LLMRequest, LLMResponse, Answer[Any]]
# Alternatives asked for per reply token when the decline probability is wanted: null and { are
# among the first few whenever either is likely.
_TOP_LOGPROBS = 10


def _local_spec(settings: Settings) -> LocalModelSpec | None:
    """The registry entry of the local model these settings run, if they run a registered one."""
    if not settings.uses_local_model:
        return None
    from qa import local  # imports no llama.cpp

    return local.spec_for(settings.local_model)


def _quotes(settings: Settings, spec: LocalModelSpec | None) -> Literal["copy", "none"]:
    """Settings.quotes with "auto" resolved: the registered local model's measured reply form, else copy."""
    if settings.quotes != "auto":
        return settings.quotes
    return spec.quotes if spec is not None else "copy"


def _decline_threshold(settings: Settings, spec: LocalModelSpec | None, quotes: str) -> float | None:
    """Settings.decline_threshold with "auto" resolved: the registered local model's value calibrated for the reply
    form in use, else off."""
    threshold = settings.decline_threshold
    if threshold != "auto":
        return threshold
    return spec.decline_thresholds.get(quotes) if spec is not None else None


def _extract_json(content: str) -> str:
    """The JSON object in a reply, without Markdown fences or chatter around it."""
    if m := _FENCE.match(content):
        return m.group(1)
    start, end = content.find("{"), content.rfind("}")
    return content[start : end + 1] if 0 <= start < end else content


def _validate_reply(
    schema_model: type[BaseModel], content: str, context: dict[str, Any] | None = None, *, max_depth: int = 32
) -> BaseModel:
    """The reply's JSON validated against `schema_model`; raw control characters (a line break typed
    inside a string) are read as themselves, as many models write them and Python's json reads them.
    JSON nested over `max_depth` is rejected unparsed."""
    text = _extract_json(content)
    if json_depth(text, max_depth) > max_depth:
        raise too_deep(schema_model.__name__, max_depth)
    try:
        return schema_model.model_validate_json(text, context=context)
    except PydanticValidationError as exc:
        if [e["type"] for e in exc.errors()] != ["json_invalid"]:
            raise
        try:
            data = json.loads(text, strict=False)
        except ValueError:
            raise exc from None
        return schema_model.model_validate(data, context=context)


def _count(usage: Usage, reply: LLMResponse) -> None:
    """Add one reply's cost to `usage` (a reply from the response cache cost no call)."""
    if reply.cached:
        usage.cached_calls += 1
        return
    usage.calls += 1
    usage.attempts += reply.attempts
    usage.retries += reply.attempts - 1
    usage.prompt_tokens += reply.prompt_tokens
    usage.completion_tokens += reply.completion_tokens


def _reply_key(content: str) -> str:
    """A reply with its whitespace folded, to notice the model repeating itself."""
    return " ".join(content.split())


def _format_errors(exc: PydanticValidationError) -> list[str]:
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "reply"
        out.append(f"{loc}: {err['msg']}")
    return out


class _Documents:
    """The stored documents by id, read from the store when first needed (a few kept)."""

    def __init__(self, store: Store, keep: int = 64) -> None:
        self._store, self._keep = store, keep
        self._cache: dict[str, Document] = {}

    def __getitem__(self, document_id: str) -> Document:
        document = self._cache.get(document_id)
        if document is None:
            document = self._store.document(document_id)
            if len(self._cache) >= self._keep:
                self._cache.pop(next(iter(self._cache)))
            self._cache[document_id] = document
        return document

    def clear(self) -> None:
        self._cache.clear()


class _Texts(Mapping[str, str]):
    """The stored texts by document id, as the evidence and passage code reads them."""

    def __init__(self, documents: _Documents, store: Store) -> None:
        self._documents, self._store = documents, store

    def __getitem__(self, document_id: str) -> str:
        return self._documents[document_id].text

    def __iter__(self) -> Iterator[str]:
        return (d.id for d in self._store)

    def __len__(self) -> int:
        return len(self._store)


class Index:
    """Documents chunked and indexed for questions, held in a `Store` (in memory unless opened from a file)."""

    def __init__(
        self,
        documents: Iterable[Document],
        settings: Settings | None = None,
        *,
        llm: LLM | None = None,
        retriever: Retriever | None = None,
        embedder: Embedder | None = None,
        prompts: PromptSet | None = None,
        store: Store | None = None,
        progress: Progress | bool | None = None,
    ) -> None:
        """`progress`: told `(chunks embedded, chunks to embed)` when the index embeds chunks that have no vectors
        yet; True for a bar on stderr (default: none)."""
        self.settings = settings if settings is not None else Settings.from_env()
        documents = list(documents)
        if store is None and not documents:
            raise InputError("no documents given")
        check_documents(documents, self.settings)
        ids = [d.id for d in documents]
        if len(set(ids)) != len(ids):
            raise InputError("document ids must be unique")
        self.store: Store = store if store is not None else MemoryStore()
        self._own_store = False
        self.prompts = prompts if prompts is not None else load_prompts()
        self._encoding: tiktoken.Encoding | None = None
        self._chunk_encoding: tiktoken.Encoding | None = None
        self._chunked_with = self._check_chunking()
        self._documents = _Documents(self.store)
        self._texts = _Texts(self._documents, self.store)
        self._stats: StoreStats | None = None
        self._document_tokens: dict[str, int] | None = None  # counted on first need, see _fit_whole
        self._retriever = retriever
        mode = self.settings.retrieval
        self.retrieval = mode if mode != "auto" else "hybrid" if embedder is not None else retrieval_mode(self.settings)
        if retriever is None and self.retrieval != "bm25" and embedder is None:
            embedder = embedder_for(self.settings)
        self.embedder = embedder  # ranks chunks (dense, hybrid) and the sentences of the retrieved ones by meaning
        self._vectors = (  # none when a retriever is passed in: it does the ranking
            StoreVectors(self.store, embedder, batch_size=self.settings.embedding_batch_size)
            if retriever is None and embedder is not None and self.retrieval != "bm25"
            else None
        )
        self._own_llm = llm is None
        self._llm = llm
        self._responses: ResponseCache | None = None
        if self._own_llm and self.settings.cache:
            self._responses = ResponseCache(
                self.settings.resolved_cache_dir / "responses.sqlite3",
                max_bytes=int(self.settings.cache_max_mb * 2**20),
            )
        self._caching: CachingLLM | None = None
        spec = _local_spec(self.settings)
        self.quotes = _quotes(self.settings, spec)  # the reply form: the model copies its quotes, or answers only
        self.decline_threshold = _decline_threshold(self.settings, spec, self.quotes)
        if documents:
            self.store.add(
                Entry(d, chunks, None) for d, chunks in zip(documents, self._chunk([(d.id, d.text) for d in documents]))
            )
        # Vectors for the chunks that have none (all, in a new index), stored with them. When the documents fit the
        # prompt whole they are sent whole, so the vectors wait until retrieval first needs them: a one-file question
        # loads no embedding model.
        self._vectors_pending = False
        if self._vectors is not None:
            if self._fit_whole(self._budget("")):
                self._vectors_pending = True
            else:
                with reporting(progress, default=False) as report:
                    self._vectors.sync(Stages(report).stage("embedding", "chunk"))

    @classmethod
    def open(cls, path: str | Path, settings: Settings | None = None, **kwargs: Any) -> Index:
        """An index kept in the SQLite file at `path`, created when missing; no model client is made until a question."""
        store = SQLiteStore(path)
        try:
            index = cls([], settings, store=store, **kwargs)
        except BaseException:
            store.close()
            raise
        index._own_store = True
        return index

    @property
    def encoding(self) -> tiktoken.Encoding:
        """The model's tokenizer, for prompt budgets (built on first need: opening an index does not)."""
        if self._encoding is None:
            self._encoding = encoding_for_model(None if self.settings.uses_local_model else self.settings.model_name)
        return self._encoding

    def _check_chunking(self) -> str | None:
        """The encoding a stored index was chunked with; its chunk sizes must be the settings' ones."""
        recorded = self.store.get_meta("chunking")
        if recorded is None:
            return None
        have, s = json.loads(recorded), self.settings
        if (have["chunk_tokens"], have["chunk_overlap"]) != (s.chunk_tokens, s.chunk_overlap):
            raise StoreError(
                f"{self.store.path}: the index was chunked with chunk_tokens={have['chunk_tokens']}, "
                f"chunk_overlap={have['chunk_overlap']}, not {s.chunk_tokens} and {s.chunk_overlap}; "
                "use those settings or another index file",
                path=str(self.store.path),
            )
        return str(have["encoding"])

    def _chunk(self, items: Sequence[tuple[str, str]]) -> list[list[Chunk]]:
        if self._chunk_encoding is None:
            if self._chunked_with is None:  # the first chunks of this store: record how they are made
                s = self.settings
                self._chunked_with = self.encoding.name
                wanted = {"chunk_tokens": s.chunk_tokens, "chunk_overlap": s.chunk_overlap, "encoding": self.encoding.name}
                self.store.set_meta("chunking", json.dumps(wanted, sort_keys=True))
            self._chunk_encoding = get_encoding(self._chunked_with)
        return chunk_documents(
            items,
            encoding=self._chunk_encoding,
            chunk_tokens=self.settings.chunk_tokens,
            overlap_tokens=self.settings.chunk_overlap,
        )

    def _changed(self, progress: Progress | None = None) -> None:
        self._documents.clear()
        self._stats = None
        self._document_tokens = None
        if self._vectors is not None:
            self._vectors.sync(progress)  # documents added or refreshed are embedded as part of the ingest
            self._vectors_pending = False

    @property
    def llm(self) -> LLM:
        """The model client, made from the settings on first use unless one was passed in."""
        if self._llm is None:
            self._llm = OpenAILLM(self.settings, self.prompts)
        return self._llm

    @property
    def retriever(self) -> Retriever:
        """What ranks chunks for a question: the one passed in, else by `Settings.retrieval` the store's own BM25,
        the chunk vectors (dense), or both fused (hybrid)."""
        if self._retriever is not None:
            return self._retriever
        if self._vectors is None:
            return self.store
        if self._vectors_pending:
            self._vectors.sync()
            self._vectors_pending = False
        return self._vectors.retriever() if self.retrieval == "dense" else self._vectors.hybrid(self.store)

    @property
    def documents(self) -> list[Document]:
        """Every stored document, texts loaded (iterate over the index to list them without their texts)."""
        return list(documents_of(self.store))

    def __len__(self) -> int:
        return len(self.store)

    def __iter__(self) -> Iterator[StoredDocument]:
        """The stored documents, without their texts."""
        return iter(self.store)

    def add(
        self,
        items: Document | str | Path | Iterable[Document | str | Path],
        *,
        strict: bool = False,
        progress: Progress | bool | None = None,
    ) -> IngestReport:
        """Add Documents and files or folders (replacing stored ones with the same id; files unchanged since
        they were stored are skipped). A file that cannot be loaded is reported in the result, or raised with `strict`.
        `progress`: see `refresh`."""
        return self._ingest(items, remove_missing=False, strict=strict, progress=progress)

    def refresh(
        self,
        paths: str | Path | Iterable[str | Path],
        *,
        strict: bool = False,
        progress: Progress | bool | None = None,
    ) -> IngestReport:
        """Bring the index up to date with files and folders: re-read the files whose size, time or content
        changed, add new ones, remove stored ones gone from below these paths.

        `progress(done, total)` is told one growing count: the files, `(0, files)` first, then after each one is
        read, chunked and stored; then, if the index embeds chunks, the total grows by the chunks to embed and
        the count goes on through them. True: one bar on stderr ("loading" files, then "embedding" chunks);
        default: none."""
        return self._ingest(paths, remove_missing=True, strict=strict, progress=progress)

    def _ingest(
        self,
        items: Document | str | Path | Iterable[Document | str | Path],
        *,
        remove_missing: bool,
        strict: bool,
        progress: Progress | bool | None,
    ) -> IngestReport:
        with reporting(progress, default=False) as report:
            stages = Stages(report)
            try:
                return ingest(
                    self.store, items, self._chunk, remove_missing=remove_missing, strict=strict,
                    progress=stages.stage("loading", "file"), settings=self.settings,
                )  # fmt: skip
            finally:
                self._changed(stages.stage("embedding", "chunk"))

    def remove(self, ids: str | Iterable[str]) -> int:
        """Remove documents by id; how many were stored."""
        try:
            return self.store.remove([ids] if isinstance(ids, str) else ids)
        finally:
            self._changed()

    def close(self) -> None:
        """Release the HTTP client the index created for its model, the store it opened and the response cache."""
        if self._own_llm and isinstance(self._llm, OpenAILLM):
            self._llm.close()
        if self._own_store:
            self.store.close()
        if self._responses is not None:
            self._responses.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @classmethod
    def from_paths(
        cls,
        paths: str | Path | Iterable[str | Path],
        settings: Settings | None = None,
        *,
        progress: Progress | bool | None = None,
        **kwargs: Any,
    ) -> Index:
        """Load files or folders (text, Markdown, HTML, PDF, DOCX) and index them. `progress`: as `refresh`
        (default: a bar when stderr is a terminal, as `qa.load`)."""
        with reporting(progress, default=True) as report:
            stages = Stages(report)
            documents = load(paths, settings, progress=stages.stage("loading", "file") or False)
            return cls(documents, settings, progress=stages.stage("embedding", "chunk") or False, **kwargs)

    # --- prompt ----------------------------------------------------------------------------

    def _messages(self, question: str, passages: Sequence[Passage]) -> list[dict[str, str]]:
        # Document text is untrusted: shown neutralised, inside a fence it cannot forge (qa.framing).
        rendered = "\n\n".join(
            self.prompts.render(
                "passage", number=p.number, text=neutralise(p.text).strip(), document_id=neutralise(p.document_id)
            ).rstrip("\n")
            for p in passages
        )
        tag = fence(p.text for p in passages)
        return [
            {
                "role": "system",
                "content": self.prompts.render("system", max_citations=self.settings.max_citations)
                if self.quotes == "copy"
                else self.prompts.render("system_answer"),
            },
            {"role": "user", "content": self.prompts.render("user", question=question, passages=rendered, fence=tag)},
        ]

    def _budget(self, question: str) -> int:
        """Passage tokens that fit beside the instructions, the question and the answer."""
        s = self.settings
        overhead = sum(len(self.encoding.encode_ordinary(m["content"])) for m in self._messages(question, []))
        overhead += 600  # the JSON schema/format instructions when the server cannot take a schema
        window = int(s.effective_context_window * (1 - _TOKEN_MARGIN))
        budget = window - s.max_answer_tokens - overhead
        if (cap := s.max_context_tokens) is not None:
            budget = min(budget, cap)
        return max(budget, 0)

    def _fit_whole(self, budget: int) -> bool:
        """Whether all documents fit in `budget` tokens; they are counted (once) only when they might."""
        if self._stats is None:
            self._stats = self.store.stats()
        if self._document_tokens is None:
            if self._stats.chunks > 1 and self._stats.chunk_tokens > 2 * budget + 64:
                return False  # chunks overlap by less than half, so the documents hold over `budget` tokens
            self._document_tokens = {
                d.id: len(self.encoding.encode_ordinary(d.text)) for d in documents_of(self.store)
            }
        return sum(self._document_tokens.values()) <= budget

    def retrieve(self, question: str) -> list[Passage]:
        """The passages that would be shown to the model for `question`."""
        question = self._check_question(question)
        budget = self._budget(question)
        if self._fit_whole(budget):
            assert self._document_tokens is not None
            return [
                Passage(n, doc, 0, len(text := self._texts[doc]), text, tokens, tuple(self.store.chunks(doc)))
                for n, (doc, tokens) in enumerate(self._document_tokens.items(), 1)
            ]
        if self.settings.evidence == "chunks":
            return select_passages(
                question, self._texts, self.retriever, budget_tokens=budget, top_k=self.settings.top_k
            )
        hits = [hit.chunk for hit in self.retriever.search(question, self.settings.top_k)]
        return focus(
            question, hits, self._texts, budget_tokens=budget,
            count_tokens=lambda text: len(self.encoding.encode_ordinary(text)), embedder=self.embedder,
        )  # fmt: skip

    def _check_question(self, question: str) -> str:
        return check_question(question, self.settings)

    # --- the answer loop, shared by ask and aask ----------------------------------------------

    def _chunk_at(self, document_id: str, offset: int) -> ChunkRef:
        chunks = self.store.chunks(document_id)
        i = max(bisect.bisect_right([c.start for c in chunks], offset) - 1, 0)
        c = chunks[i]
        return ChunkRef(index=c.index, start=c.start, end=c.end)

    def _citations(self, spans: list[tuple[str, int, int, MatchKind]]) -> list[Citation]:
        return [
            Citation(
                document_id=doc, start=start, end=end, quote=self._texts[doc][start:end],
                chunk=self._chunk_at(doc, start), match=kind,
                page=loc.page if loc else None, section=loc.section if loc else None,
            )
            for doc, start, end, kind in spans
            for loc in [self._documents[doc].location_at(start)]
        ]  # fmt: skip

    def _flow(self, question: str, output: type[Any]) -> Flow:
        s = self.settings
        question = self._check_question(question)
        passages = self.retrieve(question)
        usage = Usage()
        model_name = self.llm.model
        if not passages:
            logger.debug("no passage matches %r; answering not found without calling the model", question)
            return Answer[Any](
                question=question, answer=None, found=False, usage=usage, model=model_name, decision="no_passages"
            )  # fmt: skip
        schema_model = answer_schema_model(output, s.max_citations, quotes=self.quotes == "copy")
        # Quotes are checked against the text the model was shown, which has the source's offsets.
        located = {p.number: (p.document_id, p.start, neutralise(p.text)) for p in passages}
        messages = self._messages(question, passages)
        top_logprobs = None if self.decline_threshold is None else _TOP_LOGPROBS
        request = LLMRequest(tuple(messages), schema_model.model_json_schema(), "answer", top_logprobs)
        content = ""
        errors: list[str] = []
        unsupported: Answer[Any] | None = None  # the last parsed answer that nothing supported
        rejected: set[str] = set()
        for attempt in range(1, s.max_attempts + 1):
            reply = yield request
            _count(usage, reply)
            model_name = reply.model or model_name
            content = reply.content
            check_reply(content, s)
            try:
                parsed = _validate_reply(schema_model, content, max_depth=s.max_json_depth)
            except PydanticValidationError as exc:
                errors = _format_errors(exc)
                feedback = self.prompts.render("reask", errors="\n".join(f"- {e}" for e in errors))
            else:
                decided = self._decide(question, parsed, located, usage, model_name, reply)
                if isinstance(decided, Answer):
                    return decided
                unsupported, feedback = decided
            logger.debug("attempt %d rejected: %s", attempt, feedback)
            key = _reply_key(content)
            if key in rejected:
                # At temperature 0 a model that repeats a rejected reply will keep repeating it.
                logger.debug("the model repeated a rejected reply; not asking again")
                usage.repeats += 1
                break
            rejected.add(key)
            if attempt < s.max_attempts:
                usage.reasks += 1
                messages = [
                    *messages,
                    {"role": "assistant", "content": content},
                    {"role": "user", "content": feedback},
                ]
                request = LLMRequest(tuple(messages), request.schema, request.schema_name, top_logprobs)
        if unsupported is not None:
            return unsupported
        raise AnswerValidationError(
            f"the model gave no valid answer in {usage.calls} call(s): {'; '.join(errors)}",
            attempts=usage.calls, last_output=content, errors=errors, usage=usage,
        )  # fmt: skip

    def _decide(
        self,
        question: str,
        parsed: BaseModel,
        located: dict[int, tuple[str, int, str]],
        usage: Usage,
        model_name: str,
        reply: LLMResponse,
    ) -> Answer[Any] | tuple[Answer[Any], str]:
        """The Answer for a well-formed reply, or (the withheld Answer, what to tell the model) when nothing
        in the passages supports what it answered."""
        result = parsed.result  # type: ignore[attr-defined]
        declining = None
        if reply.logprobs is not None:
            declining = decline_probability(reply.content, [(t.token, t.top) for t in reply.logprobs])
        common: dict[str, Any] = {"question": question, "usage": usage, "model": model_name}
        if result is None:
            return Answer[Any](answer=None, found=False, decision="declined", decline_probability=declining, **common)
        proposed = result.answer
        if declining is not None and self.decline_threshold is not None and declining >= self.decline_threshold:
            logger.info(
                "declining: the model's probability of declining %.4f reaches the threshold %.4f (it answered %r)",
                declining, self.decline_threshold, proposed,
            )  # fmt: skip
            return Answer[Any](
                answer=None, found=False, decision="unsure", proposed=proposed, decline_probability=declining, **common
            )  # fmt: skip
        spans, quote_errors = verify_quotes(
            getattr(result, "quotes", ()), located, fuzzy=self.settings.fuzzy_quote_score
        )
        if quote_errors:
            logger.debug("quotes that are not in the passages (hints only): %s", quote_errors)
        kinds = {(d, a, b): k for d, a, b, k in spans}
        attribution = attribute(
            proposed, question, [(d, a, b) for d, a, b, _ in spans], located, self._texts,
            max_citations=self.settings.max_citations,
        )  # fmt: skip
        if attribution is None:
            stated = "; ".join(c.text for c in claims_of(proposed)) or str(proposed)
            logger.info("no sentence of the passages states the answer %r", stated[:200])
            if self.settings.require_citations:
                withheld = Answer[Any](
                    answer=None, found=False, verified=False, decision="unsupported", proposed=proposed,
                    decline_probability=declining, **common,
                )  # fmt: skip
            else:
                withheld = Answer[Any](
                    answer=proposed, found=True, verified=False, decision="unverified", proposed=proposed,
                    citations=self._citations([(d, a, b, k) for d, a, b, k in spans]),
                    decline_probability=declining, **common,
                )  # fmt: skip
            return withheld, self.prompts.render("reask_unsupported", answer=stated[:300])
        if (
            self.settings.require_relevance
            and attribution.question_overlap == 0.0
            and not any(c.numbers for c in claims_of(proposed))
            and not self._related_by_meaning(question, attribution.spans)
        ):
            logger.info("withholding %r: the sentences that state it share no word with the question", proposed)
            return Answer[Any](
                answer=None, found=False, decision="unrelated", proposed=proposed, decline_probability=declining,
                **common,
            )  # fmt: skip
        citations = self._citations([(d, a, b, kinds.get((d, a, b), "attributed")) for d, a, b in attribution.spans])
        answer = proposed
        if isinstance(answer, str):
            answer = restate_numbers(answer, [c.quote for c in citations])
        return Answer[Any](
            answer=answer, found=True, citations=citations, decision="attributed" if attribution.attributed else "quoted",
            proposed=proposed, decline_probability=declining, **common,
        )  # fmt: skip

    def _related_by_meaning(self, question: str, spans: Sequence[tuple[str, int, int]]) -> bool:
        """Whether the embedder rates `question` and the sentences at `spans` at least `relevance_similarity` alike."""
        threshold = self.settings.relevance_similarity
        if threshold is None or self.embedder is None or not spans:
            return False
        texts = [self._texts[d][a:b] for d, a, b in spans]
        similarity = float(np.max(self.embedder.embed_passages(texts) @ self.embedder.embed_query(question)))
        logger.debug("question and cited sentences: similarity %.3f (threshold %.3f)", similarity, threshold)
        return similarity >= threshold

    def _caller(self) -> LLM:
        """The model, behind the response cache when the index keeps one."""
        if self._responses is None:
            return self.llm
        if self._caching is None or self._caching.llm is not self.llm:
            self._caching = CachingLLM(self.llm, self._responses, self.settings)
        return self._caching

    # --- public shells ------------------------------------------------------------------------

    @overload
    def ask(self, question: str) -> Answer[str]: ...
    @overload
    def ask(self, question: str, *, output: type[OutputT]) -> Answer[OutputT]: ...
    def ask(self, question: str, *, output: type[Any] = str) -> Answer[Any]:
        """Answer `question` from the documents, with verified citations."""
        flow, llm = self._flow(question, output), self._caller()
        try:
            request = next(flow)
            while True:
                request = flow.send(llm.complete(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    @overload
    async def aask(self, question: str) -> Answer[str]: ...
    @overload
    async def aask(self, question: str, *, output: type[OutputT]) -> Answer[OutputT]: ...
    async def aask(self, question: str, *, output: type[Any] = str) -> Answer[Any]:
        """Async `ask`."""
        flow, llm = self._flow(question, output), self._caller()
        try:
            request = next(flow)
            while True:
                request = flow.send(await llm.acomplete(request))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]


    def ask_many(
        self,
        questions: Iterable[str],
        *,
        concurrency: int = 4,
        output: type[Any] = str,
        progress: Progress | None = None,
    ) -> list[Answer[Any] | QAError]:
        """Answer many questions, up to `concurrency` at once: results in input order, and a QAError in place of
        each question that failed (the others still answered). `progress(done, total)` is called after each."""
        return run_many(lambda q: self.ask(q, output=output), list(questions), concurrency, progress)

    async def aask_many(
        self,
        questions: Iterable[str],
        *,
        concurrency: int = 4,
        output: type[Any] = str,
        progress: Progress | None = None,
    ) -> list[Answer[Any] | QAError]:
        """Async `ask_many`."""
        return await arun_many(lambda q: self.aask(q, output=output), list(questions), concurrency, progress)

    def stream(self, question: str, *, output: type[Any] = str) -> Iterator[StreamEvent]:
        """Answer `question`, yielding the answer text as the model writes it (`TextDelta`), a `Retraction` when
        that text is withdrawn, and last the verified Answer (`Final`); no citation is shown before it is verified."""
        return stream_flow(self._flow(question, output), self._caller())

    def astream(self, question: str, *, output: type[Any] = str) -> AsyncIterator[StreamEvent]:
        """Async `stream`."""
        return astream_flow(self._flow(question, output), self._caller())


def ask(
    question: str,
    documents: Document | str | Path | Iterable[Document | str | Path],
    settings: Settings | None = None,
    **kwargs: Any,
) -> Answer[Any]:
    """One-liner: answer `question` from Documents and/or paths to files or folders."""
    items = [documents] if isinstance(documents, (Document, str, Path)) else list(documents)
    docs: list[Document] = []
    for item in items:
        docs.extend([item] if isinstance(item, Document) else load(item, settings))
    output = kwargs.pop("output", str)
    with Index(docs, settings, **kwargs) as index:
        return index.ask(question, output=output)


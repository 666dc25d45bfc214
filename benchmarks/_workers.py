"""One question-answering system per process, driven by compare.py over JSON lines.

    python benchmarks/_workers.py {qa|llamaindex|langchain}   (config JSON in $BENCH_WORKER_CONFIG)

qa runs in its own environment (its pins: openai 3.x, PyStemmer 3.x); LlamaIndex's OpenAI integration
needs openai<3 and its BM25 retriever PyStemmer<3, so the peers run from a second environment. Each
worker reads requests on stdin and writes one JSON reply per line on the original stdout; anything a
library prints goes to stderr. Only `ask` is timed; building an index for a new document set is
timed separately.

Peers' citations are mapped to (document_id, start, end, quote) from the offsets the peer keeps:
- LlamaIndex: the answer's [N] markers name citation sources; CitationQueryEngine made source N by
  splitting a retrieved node (SentenceSplitter, start_char_idx/end_char_idx set); the citation is
  that node's start_char_idx plus the chunk's position in the node text, quote = the chunk text.
- LangChain: each citation's source_id names a retrieved chunk; start = metadata["start_index"]
  (add_start_index=True), end = start + len(page_content), quote = page_content. The model's own
  quote is kept as `model_quote` with whether it occurs verbatim in that chunk.
A citation the peer gives no offset for gets start = end = -1 (and is therefore invalid).
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

# --------------------------------------------------------------------------------------------
# The one abstention rule applied to both peers' answer text (qa reports `found` itself).
# --------------------------------------------------------------------------------------------

_SOURCES = r"(?:provided\s+|given\s+|above\s+)?(?:sources?|articles?|snippets?|documents?|passages?|context|texts?|information)"
ABSTAIN_PATTERNS: tuple[str, ...] = (
    r"\b(?:do\s+not|don'?t|does\s+not|doesn'?t)\s+know\b",
    r"\b(?:cannot|can'?t|can\s+not|unable\s+to)\s+(?:be\s+)?(?:answer(?:ed)?|determine[d]?|find|found|provide|say|tell|identify|identified)\b",
    r"\bnot\s+(?:mentioned|provided|stated|specified|given|found|available|included|present|contained|addressed|discussed|covered|answered|known|clear)\b",
    r"\bno\s+(?:information|mention|answer|relevant|data|details|specific)\b",
    r"\bnone\s+of\s+the\s+" + _SOURCES,
    r"\b(?:is\s+not|isn'?t|are\s+not|aren'?t)\s+(?:in|within|covered\s+(?:by|in)|part\s+of)\s+the\s+" + _SOURCES,
    r"\b(?:the\s+)?" + _SOURCES + r"\s+(?:do|does)\s+not\s+(?:contain|include|mention|provide|specify|say|state|give|answer|address|discuss)\b",
    r"\b(?:not\s+enough|insufficient)\s+(?:information|context|data)\b",
)
_ABSTAIN = re.compile("|".join(f"(?:{p})" for p in ABSTAIN_PATTERNS), re.IGNORECASE)
_MARKER = re.compile(r"\[(?:sources?\s*)?(\d+(?:\s*,\s*(?:sources?\s*)?\d+)*)\]", re.IGNORECASE)


def peer_abstained(answer: str | None) -> tuple[bool, str | None]:
    """Whether a peer's answer text is an abstention, and the phrase that made it one.

    Rule: an empty answer (after removing [N] citation markers), or one containing an explicit
    "I don't know" / "not in the sources"-type phrase (ABSTAIN_PATTERNS, case-insensitive), anywhere.
    """
    text = _MARKER.sub(" ", answer or "").strip()
    if not text:
        return True, "<empty>"
    m = _ABSTAIN.search(text)
    return (True, m.group(0)) if m else (False, None)


def strip_markers(answer: str) -> str:
    """The answer text without LlamaIndex's [N] citation markers (they are citations, not answer)."""
    return re.sub(r"\s+([.,;:!?])", r"\1", _MARKER.sub("", answer)).strip()


# --------------------------------------------------------------------------------------------
# Systems.
# --------------------------------------------------------------------------------------------


class System:
    """Builds an index per document set and answers one question."""

    name = ""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def build(self, texts: dict[str, str]) -> Any:
        raise NotImplementedError

    def ask(self, index: Any, question: str) -> dict[str, Any]:
        raise NotImplementedError

    def retrieved(self, index: Any, question: str, asked: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    def versions(self) -> dict[str, str]:
        raise NotImplementedError


class QASystem(System):
    name = "qa"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        import qa

        self.qa = qa
        c = config
        self.settings = qa.Settings(
            base_url=c["base_url"],
            api_key="local",
            model=c["model"],
            chunk_tokens=c["chunk_tokens"],
            chunk_overlap=c["overlap"],
            top_k=c["top_k"],
            context_window=c["n_ctx"],
            max_answer_tokens=c["max_tokens"],
            temperature=0.0,
            timeout=c["timeout"],
            **({} if c.get("qa_decline_threshold") is None else {"decline_threshold": c["qa_decline_threshold"]}),
        )

    def build(self, texts: dict[str, str]) -> Any:
        return self.qa.Index([self.qa.Document(text=t, id=d) for d, t in texts.items()], self.settings)

    def ask(self, index: Any, question: str) -> dict[str, Any]:
        answer = index.ask(question)
        value = answer.answer
        return {
            "raw_answer": None if value is None else str(value),
            "answer": None if value is None else str(value),
            "abstained": not answer.found,
            "abstain_phrase": None,
            "citations": [
                {"document_id": c.document_id, "start": c.start, "end": c.end, "quote": c.quote}
                for c in answer.citations
            ],
            "self_usage": answer.usage.model_dump(),
            "verified": answer.verified,
            "decline_probability": answer.decline_probability,
        }

    def retrieved(self, index: Any, question: str, asked: dict[str, Any]) -> list[str]:
        return [p.text for p in index.retrieve(question)]

    def versions(self) -> dict[str, str]:
        from _common import versions

        return {
            **versions("qa", "openai", "tiktoken", "bm25s", "PyStemmer", "blingfire", "pydantic"),
            "qa_imported_from": str(self.qa.__file__),
        }


class LlamaIndexSystem(System):
    """CitationQueryEngine (its defaults: citation chunks of 512 tokens, overlap 20, compact synthesis)
    over llama-index-retrievers-bm25 over SentenceSplitter nodes; LLM = OpenAILike, temperature 0."""

    name = "llamaindex"

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        import tiktoken
        from llama_index.core.node_parser import SentenceSplitter
        from llama_index.llms.openai_like import OpenAILike

        c = config
        # Same token counting as qa (o200k_base, what qa uses for a model tiktoken does not know).
        self.splitter = SentenceSplitter(
            chunk_size=c["chunk_tokens"],
            chunk_overlap=c["overlap"],
            tokenizer=tiktoken.get_encoding("o200k_base").encode,
        )
        self.llm = OpenAILike(
            model=c["model"],
            api_base=c["base_url"],
            api_key="local",
            is_chat_model=True,
            is_function_calling_model=False,
            context_window=c["n_ctx"],
            max_tokens=c["max_tokens"],
            temperature=0.0,
            timeout=c["timeout"],
        )

    def build(self, texts: dict[str, str]) -> Any:
        from llama_index.core import Document
        from llama_index.core.base.base_retriever import BaseRetriever
        from llama_index.core.query_engine import CitationQueryEngine
        from llama_index.retrievers.bm25 import BM25Retriever

        documents = [Document(text=t, id_=d) for d, t in texts.items()]
        nodes = self.splitter.get_nodes_from_documents(documents)
        bm25 = BM25Retriever.from_defaults(nodes=nodes, similarity_top_k=self.config["top_k"])

        class Recording(BaseRetriever):
            """The BM25 retriever, remembering what it returned last (to map [N] back to nodes)."""

            def __init__(self) -> None:
                super().__init__()
                self.last: list[Any] = []

            def _retrieve(self, query_bundle: Any) -> list[Any]:
                self.last = bm25.retrieve(query_bundle)
                return self.last

        retriever = Recording()
        engine = CitationQueryEngine(retriever=retriever, llm=self.llm)
        return {"engine": engine, "retriever": retriever, "texts": texts, "nodes": len(nodes)}

    def ask(self, index: Any, question: str) -> dict[str, Any]:
        from llama_index.core.schema import MetadataMode

        engine, retriever, texts = index["engine"], index["retriever"], index["texts"]
        response = engine.query(question)
        raw = str(response.response or "")
        # Source N is the N-th chunk CitationQueryEngine cut from the retrieved nodes, in order.
        sources: list[tuple[Any, str]] = []
        for hit in retriever.last:
            for chunk in engine.text_splitter.split_text(hit.node.get_content(metadata_mode=MetadataMode.NONE)):
                sources.append((hit.node, chunk))
        if len(sources) != len(response.source_nodes):
            raise RuntimeError(f"{len(sources)} sources rebuilt, engine gave {len(response.source_nodes)}")
        cited: list[int] = []
        for m in _MARKER.finditer(raw):
            for n in re.findall(r"\d+", m.group(1)):
                if int(n) not in cited:
                    cited.append(int(n))
        citations = []
        for n in cited:
            if not 1 <= n <= len(sources):
                citations.append({"document_id": "", "start": -1, "end": -1, "quote": "", "source": n})
                continue
            node, chunk = sources[n - 1]
            doc_id = node.ref_doc_id or ""
            start = end = -1
            if node.start_char_idx is not None:
                at = node.get_content(metadata_mode=MetadataMode.NONE).find(chunk)
                if at >= 0:
                    start = node.start_char_idx + at
                    end = start + len(chunk)
            citations.append({"document_id": doc_id, "start": start, "end": end, "quote": chunk, "source": n})
        abstained, phrase = peer_abstained(raw)
        return {
            "raw_answer": raw,
            "answer": strip_markers(raw),
            "abstained": abstained,
            "abstain_phrase": phrase,
            "citations": citations,
            "sources_offered": len(sources),
        }

    def retrieved(self, index: Any, question: str, asked: dict[str, Any]) -> list[str]:
        return [hit.node.get_content() for hit in index["retriever"].last]

    def versions(self) -> dict[str, str]:
        from _common import versions

        return versions(
            "llama-index-core", "llama-index-retrievers-bm25", "llama-index-llms-openai-like",
            "llama-index-llms-openai", "openai", "tiktoken", "bm25s", "PyStemmer", "nltk",
        )  # fmt: skip


class LangChainSystem(System):
    """LangChain's documented citation recipe ("cite snippets": tool-calling structured output with
    source ids and verbatim quotes) over langchain_community's BM25Retriever (its defaults) over
    RecursiveCharacterTextSplitter.from_tiktoken_encoder chunks with add_start_index=True."""

    name = "langchain"

    SYSTEM_PROMPT = (
        "You're a helpful AI assistant. Given a user question "
        "and some article snippets, answer the user "
        "question. If none of the articles answer the question, "
        "just say you don't know."
        "\n\nHere are the articles: "
        "{context}"
    )

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        from langchain_core.prompts import ChatPromptTemplate
        from langchain_openai import ChatOpenAI
        from langchain_text_splitters import RecursiveCharacterTextSplitter
        from pydantic import BaseModel, Field

        c = config

        class Citation(BaseModel):
            source_id: int = Field(
                ...,
                description="The integer ID of a SPECIFIC source which justifies the answer.",
            )
            quote: str = Field(
                ...,
                description="The VERBATIM quote from the specified source that justifies the answer.",
            )

        class QuotedAnswer(BaseModel):
            """Answer the user question based only on the given sources, and cite the sources used."""

            answer: str = Field(
                ...,
                description="The answer to the user question, which is based only on the given sources.",
            )
            citations: list[Citation] = Field(..., description="Citations from the given sources that justify the answer.")

        self.splitter = RecursiveCharacterTextSplitter.from_tiktoken_encoder(
            encoding_name="o200k_base",  # the default, gpt2, is not available offline; o200k_base is what qa counts with
            chunk_size=c["chunk_tokens"],
            chunk_overlap=c["overlap"],
            add_start_index=True,
        )
        llm = ChatOpenAI(
            model=c["model"],
            base_url=c["base_url"],
            api_key="local",
            temperature=0.0,
            max_tokens=c["max_tokens"],
            # ChatOpenAI sends max_tokens as max_completion_tokens, which llama.cpp's server ignores
            # (a looping model then runs to the end of the context); say it the way the server reads it.
            extra_body={"max_tokens": c["max_tokens"]},
            timeout=c["timeout"],
        )
        # llama.cpp's server takes response_format json_object only, so the json_schema method (the
        # default) is refused; tool calling with a forced tool is the recipe's own method and llama.cpp
        # constrains the arguments to the schema with a grammar.
        self.structured = llm.with_structured_output(QuotedAnswer, method="function_calling")
        self.prompt = ChatPromptTemplate.from_messages([("system", self.SYSTEM_PROMPT), ("human", "{input}")])

    @staticmethod
    def format_docs_with_id(docs: list[Any]) -> str:
        formatted = [
            f"Source ID: {i}\nArticle Title: {doc.metadata['title']}\nArticle Snippet: {doc.page_content}"
            for i, doc in enumerate(docs)
        ]
        return "\n\n" + "\n\n".join(formatted)

    def build(self, texts: dict[str, str]) -> Any:
        from langchain_community.retrievers import BM25Retriever
        from langchain_core.documents import Document
        from langchain_core.runnables import RunnablePassthrough

        docs = self.splitter.create_documents(
            list(texts.values()), metadatas=[{"doc_id": d, "title": d.replace("_", " ")} for d in texts]
        )
        retriever = BM25Retriever.from_documents(docs, k=self.config["top_k"])
        rag_chain_from_docs = (
            RunnablePassthrough.assign(context=(lambda x: self.format_docs_with_id(x["context"])))
            | self.prompt
            | self.structured
        )
        retrieve_docs = (lambda x: x["input"]) | retriever
        chain = RunnablePassthrough.assign(context=retrieve_docs).assign(answer=rag_chain_from_docs)
        return {"chain": chain, "retriever": retriever, "texts": texts, "chunks": len(docs)}

    def ask(self, index: Any, question: str) -> dict[str, Any]:
        result = index["chain"].invoke({"input": question})
        docs = result["context"]
        quoted = result["answer"]
        if quoted is None:  # the tool call's arguments did not parse (e.g. cut off at max_tokens)
            raise ValueError("no structured answer: the model's tool call could not be parsed")
        raw = quoted.answer
        citations = []
        seen: set[int] = set()
        for c in quoted.citations:
            if c.source_id in seen:
                continue
            seen.add(c.source_id)
            if not 0 <= c.source_id < len(docs):
                citations.append(
                    {"document_id": "", "start": -1, "end": -1, "quote": "", "source": c.source_id,
                     "model_quote": c.quote, "model_quote_verbatim": False}
                )  # fmt: skip
                continue
            doc = docs[c.source_id]
            start = doc.metadata.get("start_index")
            start = -1 if start is None or start < 0 else int(start)
            end = -1 if start < 0 else start + len(doc.page_content)
            citations.append(
                {"document_id": doc.metadata["doc_id"], "start": start, "end": end, "quote": doc.page_content,
                 "source": c.source_id, "model_quote": c.quote,
                 "model_quote_verbatim": bool(c.quote) and c.quote in doc.page_content}
            )  # fmt: skip
        abstained, phrase = peer_abstained(raw)
        return {
            "raw_answer": raw,
            "answer": raw.strip(),
            "abstained": abstained,
            "abstain_phrase": phrase,
            "citations": citations,
            "retrieved_docs": [d.page_content for d in docs],
        }

    def retrieved(self, index: Any, question: str, asked: dict[str, Any]) -> list[str]:
        return list(asked.get("retrieved_docs") or [d.page_content for d in index["retriever"].invoke(question)])

    def versions(self) -> dict[str, str]:
        from _common import versions

        return versions(
            "langchain", "langchain-core", "langchain-community", "langchain-openai", "langchain-text-splitters",
            "rank-bm25", "openai", "tiktoken",
        )  # fmt: skip


SYSTEMS: dict[str, type[System]] = {s.name: s for s in (QASystem, LlamaIndexSystem, LangChainSystem)}


# --------------------------------------------------------------------------------------------
# The worker loop.
# --------------------------------------------------------------------------------------------


def main() -> int:
    name = sys.argv[1]
    config = json.loads(os.environ["BENCH_WORKER_CONFIG"])
    # Keep the protocol on the original stdout; whatever libraries print goes to stderr.
    out = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    system = SYSTEMS[name](config)
    reply({"ready": True, "system": name, "versions": system.versions(), "python": sys.executable})
    dataset = Path(config["dataset"])
    indexes: dict[tuple[str, ...], Any] = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        key = tuple(request["doc_ids"])
        result: dict[str, Any] = {"index_seconds": None}
        try:
            if key not in indexes:
                texts = {d: (dataset / "docs" / f"{d}.txt").read_bytes().decode("utf-8") for d in key}
                started = time.perf_counter()
                indexes[key] = system.build(texts)
                result["index_seconds"] = time.perf_counter() - started
            index = indexes[key]
        except Exception as exc:  # noqa: BLE001
            reply({**result, "error": f"index: {type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
            continue
        started = time.perf_counter()
        try:
            asked = system.ask(index, request["question"])
        except Exception as exc:  # noqa: BLE001 - one failed item must not end the run
            seconds = time.perf_counter() - started
            reply({**result, "seconds": seconds, "error": f"{type(exc).__name__}: {exc}",
                   "traceback": traceback.format_exc()})  # fmt: skip
            continue
        seconds = time.perf_counter() - started
        try:
            retrieved: list[str] | None = system.retrieved(index, request["question"], asked)
        except Exception as exc:  # noqa: BLE001
            retrieved, asked["retrieve_error"] = None, f"{type(exc).__name__}: {exc}"
        asked.pop("retrieved_docs", None)
        reply({**result, **asked, "seconds": seconds, "retrieved": retrieved, "error": None})
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    raise SystemExit(main())

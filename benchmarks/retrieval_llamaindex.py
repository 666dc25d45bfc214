"""LlamaIndex's default retriever on retrieval_dense.py's corpus-level multi-hop benchmark, same embedding model.

    .venv/bin/python benchmarks/retrieval_llamaindex.py prepare                   # qa's venv: chunks and vectors
    /tmp/benchvenv-peers/bin/python benchmarks/retrieval_llamaindex.py run        # the peers' venv: LlamaIndex

LlamaIndex and qa cannot share a virtualenv (benchmarks/README.md), so `prepare` (in qa's) writes the benchmark's
chunks (qa's 256/32-token chunks of the 2,884 multi-hop passages and the 98 COVID-QA papers, 5,851 chunks), their
vectors by qa's bundled embedder (all-MiniLM-L6-v2 int8, from retrieval_dense.py's cache) and the vector of each of
the 200 questions, and `run` (in the peers') builds a `VectorStoreIndex` over `TextNode`s carrying those vectors,
with an embedding class (`BaseEmbedding`) that returns the question vectors `prepare` computed with qa's
`LocalEmbedder`, and retrieves with `index.as_retriever(similarity_top_k=...)` — LlamaIndex's default retriever
(VectorIndexRetriever over its in-memory SimpleVectorStore). Recall@5/@20 of the gold passages as retrieval_dense.py
counts it (a passage counts when one of its chunks is retrieved), on the same dev/test halves.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "out"
INPUT = OUT / "llamaindex-input"
KS = (5, 20)


def prepare() -> None:
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import numpy as np

    from qa.chunking import chunk_documents
    from qa.embed import LocalEmbedder
    from qa.tokens import encoding_for_model
    from retrieval_dense import load_corpus, split_of

    docs, items = load_corpus(ROOT.parent / "shared" / "eval", ["covidqa"])
    chunks = [c for cs in chunk_documents(docs, encoding=encoding_for_model(None), chunk_tokens=256, overlap_tokens=32)
              for c in cs]
    key = hashlib.sha256("\x00".join(c.text for c in chunks).encode()).hexdigest()[:16]
    embedder = LocalEmbedder(query_cache=0)
    vectors = np.load(OUT / f"vectors-{embedder.model_id}-{key}.npy").astype(np.float32)
    questions = [it["question"] for it in items]
    queries = np.stack([embedder.embed_query(q) for q in questions])
    INPUT.mkdir(parents=True, exist_ok=True)
    np.save(INPUT / "chunk_vectors.npy", vectors)
    np.save(INPUT / "query_vectors.npy", queries)
    (INPUT / "chunks.json").write_text(json.dumps([[c.document_id, c.index, c.text] for c in chunks]))
    (INPUT / "items.json").write_text(json.dumps([
        {"id": it["id"], "question": it["question"], "gold": it.get("doc_ids") or [it["doc_id"]],
         "split": split_of(it["id"])} for it in items
    ]))
    print(f"{len(chunks)} chunks, {len(items)} questions -> {INPUT}")


def recall(ranked: list[list[str]], gold: list[set[str]], k: int) -> float:
    values = [len(set(r[:k]) & g) / len(g) for r, g in zip(ranked, gold, strict=True)]
    return 100 * sum(values) / len(values)


def run() -> None:
    import numpy as np
    import llama_index.core
    from llama_index.core import Settings, VectorStoreIndex
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.schema import TextNode

    chunks = json.loads((INPUT / "chunks.json").read_text())
    items = json.loads((INPUT / "items.json").read_text())
    vectors = np.load(INPUT / "chunk_vectors.npy")
    queries = np.load(INPUT / "query_vectors.npy")
    by_question = {it["question"]: queries[i].tolist() for i, it in enumerate(items)}

    class QAEmbedding(BaseEmbedding):
        """qa's LocalEmbedder, its question vectors computed by `prepare` (LlamaIndex's venv has no onnxruntime)."""

        def _get_query_embedding(self, query: str) -> list[float]:
            return by_question[query]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return by_question[query]

        def _get_text_embedding(self, text: str) -> list[float]:
            raise RuntimeError("every node carries its vector")

    embed_model = QAEmbedding(model_name="all-MiniLM-L6-v2-int8-w128")
    Settings.embed_model = embed_model
    started = time.perf_counter()
    nodes = [TextNode(text=text, id_=f"{doc}#{index}", metadata={"doc_id": doc}, embedding=vectors[i].tolist())
             for i, (doc, index, text) in enumerate(chunks)]
    index = VectorStoreIndex(nodes, embed_model=embed_model, show_progress=False)
    build = time.perf_counter() - started
    retriever = index.as_retriever(similarity_top_k=100)
    ranked: list[list[str]] = []
    seconds: list[float] = []
    for it in items:
        t0 = time.perf_counter()
        hits = retriever.retrieve(it["question"])
        seconds.append(time.perf_counter() - t0)
        docs: list[str] = []
        for h in hits:
            if h.node.metadata["doc_id"] not in docs:
                docs.append(h.node.metadata["doc_id"])
        ranked.append(docs)
    row: dict[str, Any] = {}
    for split in ("dev", "test", "all"):
        idx = [i for i, it in enumerate(items) if split in ("all", it["split"])]
        for k in KS:
            row[f"{split}@{k}"] = recall([ranked[i] for i in idx], [set(items[i]["gold"]) for i in idx], k)
    seconds.sort()
    result = {"llama_index_core": llama_index.core.__version__, "chunks": len(chunks), "items": len(items),
              "build_seconds": build, "retrieve_p50_ms": 1000 * seconds[len(seconds) // 2], "recall": row}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"retrieval_llamaindex-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))
    print("| LlamaIndex VectorStoreIndex default retriever | " +
          " | ".join(f"{row[f'{s}@{k}']:.1f}" for s in ("dev", "test", "all") for k in KS) + " |")


if __name__ == "__main__":
    {"prepare": prepare, "run": run}[sys.argv[1] if len(sys.argv) > 1 else ""]()

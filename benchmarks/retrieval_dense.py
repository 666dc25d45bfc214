"""Corpus-level retrieval: BM25 vs dense vs hybrid on the multi-hop questions, plus the cost of vectors.

    .venv/bin/python benchmarks/retrieval_dense.py                       # all 2,884 passages + distractors
    .venv/bin/python benchmarks/retrieval_dense.py --distractors ""      # the multi-hop passages alone

Indexes every passage of ../shared/eval/multihop_hotpot_musique plus the documents of the distractor datasets
(chunked as qa chunks them: 256/32 tokens), asks its 200 questions over the whole corpus and reports recall@5 and
recall@20 of the gold passages (a gold passage counts when one of its chunks is in the top k). The dataset has no
split, so items are split by a hash of their id: fusion parameters are chosen on dev, reported on test.

Cost: embedding throughput (chunks/s), ingest time with and without vectors, vector bytes, and hybrid query latency
p50/p95 at --latency-chunks chunks (the real chunks repeated for BM25, their vectors repeated with small noise for
the dense part; the query embedded for real every time). Vectors are cached in benchmarks/out/ by model and chunk
texts, so a re-run does not embed again (the throughput of the run that embedded them is kept with them).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from qa.chunking import Chunk, chunk_documents  # noqa: E402
from qa.dense import DenseRetriever, HybridRetriever, reciprocal_rank_fusion  # noqa: E402
from qa.embed import LocalEmbedder, embed_in_batches  # noqa: E402
from qa.retrieval import BM25Retriever, Hit  # noqa: E402
from qa.tokens import encoding_for_model  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
KS = (5, 20)


def load_corpus(eval_dir: Path, distractors: list[str]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    multihop = eval_dir / "multihop_hotpot_musique"
    docs = [(p.stem, p.read_text(encoding="utf-8")) for p in sorted((multihop / "docs").glob("*.txt"))]
    for name in distractors:
        docs += [(f"{name}/{p.stem}", p.read_text(encoding="utf-8")) for p in sorted((eval_dir / name / "docs").glob("*.txt"))]
    items = [json.loads(line) for line in (multihop / "items.jsonl").read_text(encoding="utf-8").splitlines() if line]
    return docs, items


def split_of(item_id: str) -> str:
    return "dev" if hashlib.sha256(item_id.encode()).digest()[0] % 2 == 0 else "test"


def recall(ranked_docs: list[list[str]], gold: list[set[str]], k: int) -> float:
    values = []
    for docs, g in zip(ranked_docs, gold, strict=True):
        seen: list[str] = []
        for d in docs:
            if d not in seen:
                seen.append(d)
        values.append(len(set(seen[:k]) & g) / len(g))
    return 100 * float(np.mean(values)) if values else float("nan")


def doc_ranking(hits: list[Hit]) -> list[str]:
    """Documents in order of their best chunk."""
    out: list[str] = []
    for h in hits:
        if h.chunk.document_id not in out:
            out.append(h.chunk.document_id)
    return out


def cached_vectors(chunks: list[Chunk], embedder: LocalEmbedder, batch: int) -> tuple[np.ndarray, dict[str, Any]]:
    key = hashlib.sha256("\x00".join(c.text for c in chunks).encode()).hexdigest()[:16]
    path = OUT / f"vectors-{embedder.model_id}-{key}.npy"
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        return np.load(path).astype(np.float32), json.loads(meta_path.read_text()) | {"cached": True}
    started, cpu = time.perf_counter(), time.process_time()
    vectors = embed_in_batches(embedder, [c.text for c in chunks], batch_size=batch,
                               progress=lambda done, total: print(f"\r  embedded {done}/{total}", end="", file=sys.stderr))
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    print(file=sys.stderr)
    meta = {"chunks": len(chunks), "seconds": seconds, "cpu_seconds": cpu, "chunks_per_second": len(chunks) / seconds,
            "load_average": os.getloadavg()[0]}
    OUT.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors.astype(np.float16))
    meta_path.write_text(json.dumps(meta))
    return vectors, meta | {"cached": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dir", type=Path, default=ROOT.parent / "shared" / "eval")
    parser.add_argument("--distractors", default="covidqa,timeqa_human_test",
                        help="comma-separated eval datasets whose documents are added as distractors")
    parser.add_argument("--chunk-tokens", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=32)
    parser.add_argument("--latency-chunks", type=int, default=100_000)
    parser.add_argument("--latency-queries", type=int, default=100)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()

    distractors = [d for d in args.distractors.split(",") if d]
    docs, items = load_corpus(args.eval_dir, distractors)
    encoding = encoding_for_model(None)
    started = time.perf_counter()
    chunked = chunk_documents(docs, encoding=encoding, chunk_tokens=args.chunk_tokens, overlap_tokens=args.overlap)
    chunks = [c for cs in chunked for c in cs]
    chunk_seconds = time.perf_counter() - started
    started = time.perf_counter()
    bm25 = BM25Retriever(chunks)
    bm25_seconds = time.perf_counter() - started
    print(f"{len(docs)} documents, {len(chunks)} chunks; chunking {chunk_seconds:.1f}s, BM25 {bm25_seconds:.1f}s",
          file=sys.stderr)

    embedder = LocalEmbedder(query_cache=0)  # every query embedded for real, as a new question would be
    embedder.embed_query("warm up")  # model load, not counted in throughput
    vectors, embed_meta = cached_vectors(chunks, embedder, args.batch)
    dense = DenseRetriever(chunks, embedder, vectors=vectors)

    questions = [it["question"] for it in items]
    gold = [set(it.get("doc_ids") or [it["doc_id"]]) for it in items]
    splits = [split_of(it["id"]) for it in items]
    depth = 100
    lexical_hits = [bm25.search(q, depth) for q in questions]
    dense_scores = [dense.scores(q) for q in questions]
    dense_hits = []
    for s in dense_scores:
        top = np.argsort(-s)[:depth]
        dense_hits.append([Hit(chunks[i], float(s[i])) for i in top])

    def weighted(i: int, w: float, n: int = 50) -> list[Hit]:
        hybrid = HybridRetriever(bm25, dense, fusion="weighted", weight=w, candidates=n)
        return hybrid.fuse(lexical_hits[i], dense_scores[i], n)

    systems: dict[str, list[list[str]]] = {
        "bm25": [doc_ranking(h) for h in lexical_hits],
        "dense": [doc_ranking(h) for h in dense_hits],
    }
    for c in (60, 10, 1):
        systems[f"rrf k={c}"] = [doc_ranking(reciprocal_rank_fusion([a[:50], b[:50]], k=c))
                                 for a, b in zip(lexical_hits, dense_hits, strict=True)]
    for w in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8):
        systems[f"weighted w={w}"] = [doc_ranking(weighted(i, w)) for i in range(len(items))]
    # The shipped search path with the binary-code shortlist forced on (it starts above EXACT_LIMIT chunks):
    # how much the shortlist changes what is retrieved.
    coded = DenseRetriever(chunks, embedder, vectors=vectors, exact_limit=0)
    coded_hybrid = HybridRetriever(bm25, coded)
    systems["dense, shortlisted (codes on)"] = [doc_ranking(coded.search(q, depth)) for q in questions]
    systems["hybrid w=0.7, shortlisted (codes on)"] = [doc_ranking(coded_hybrid.search(q, 50)) for q in questions]

    table = {}
    for name, ranked in systems.items():
        row = {}
        for split in ("dev", "test", "all"):
            idx = [i for i, s in enumerate(splits) if split in ("all", s)]
            for k in KS:
                row[f"{split}@{k}"] = recall([ranked[i] for i in idx], [gold[i] for i in idx], k)
        table[name] = row

    # Latency of the shipped hybrid retriever at --latency-chunks chunks.
    reps = -(-args.latency_chunks // len(chunks))
    big_chunks = [Chunk(f"{c.document_id}#{r}", c.index, c.start, c.end, c.text, c.tokens)
                  for r in range(reps) for c in chunks][: args.latency_chunks]
    rng = np.random.default_rng(0)
    big_vectors = np.concatenate([vectors + rng.normal(0, 0.01, vectors.shape).astype(np.float32)
                                  for _ in range(reps)])[: args.latency_chunks]
    started = time.perf_counter()
    big_bm25 = BM25Retriever(big_chunks)
    big_bm25_seconds = time.perf_counter() - started
    started = time.perf_counter()
    big_dense = DenseRetriever(big_chunks, embedder, vectors=big_vectors)
    big_dense_seconds = time.perf_counter() - started
    big = HybridRetriever(big_bm25, big_dense)
    timings: dict[str, list[float]] = {"hybrid top-5 (all of it)": [], "embed query": [], "bm25 top-50": [],
                                       "dense top-50 (shortlisted)": [], "dense top-50 (exact, every vector)": [],
                                       "fusion": []}
    same_top50: list[float] = []
    same_hybrid5: list[bool] = []
    for q in questions[: args.latency_queries]:
        t0 = time.perf_counter(); hits = big.search(q, 5); t1 = time.perf_counter()
        vector = embedder.embed_query(q); t2 = time.perf_counter()
        lexical = big_bm25.search(q, 50); t3 = time.perf_counter()
        top, top_scores = big_dense.nearest(vector, 50); t4 = time.perf_counter()
        exact_scores = big_dense.vectors @ vector; exact_top = np.argsort(-exact_scores)[:50]; t5 = time.perf_counter()
        big._fuse(lexical, top, top_scores, lambda p: big_dense.similarity(vector, p), 5); t6 = time.perf_counter()
        timings["hybrid top-5 (all of it)"].append(t1 - t0); timings["embed query"].append(t2 - t1)
        timings["bm25 top-50"].append(t3 - t2); timings["dense top-50 (shortlisted)"].append(t4 - t3)
        timings["dense top-50 (exact, every vector)"].append(t5 - t4); timings["fusion"].append(t6 - t5)
        same_top50.append(len(set(top.tolist()) & set(exact_top.tolist())) / 50)
        same_hybrid5.append([h.chunk for h in hits] == [h.chunk for h in big.fuse(lexical, exact_scores, 5)])
    latency = {name: {"p50_ms": 1000 * statistics.median(v), "p95_ms": 1000 * float(np.percentile(v, 95))}
               for name, v in timings.items()}
    latency["agreement with exact search"] = {"top50_overlap": float(np.mean(same_top50)),
                                              "hybrid_top5_identical": float(np.mean(same_hybrid5))}
    latency["dense_build_seconds"] = big_dense_seconds  # type: ignore[assignment]
    latency["load_average_during"] = os.getloadavg()[0]  # type: ignore[assignment]

    result = {
        "documents": len(docs), "chunks": len(chunks), "distractors": distractors, "items": len(items),
        "split_sizes": {s: splits.count(s) for s in ("dev", "test")},
        "model": embedder.model_id, "chunk_seconds": chunk_seconds, "bm25_seconds": bm25_seconds,
        "embedding": embed_meta, "vector_bytes_float16": int(vectors.shape[0] * vectors.shape[1] * 2),
        "recall": table, "latency_chunks": len(big_chunks), "latency_bm25_build_seconds": big_bm25_seconds,
        "latency": latency, "load_average_end": os.getloadavg()[0], "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"retrieval_dense-{stamp}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "recall"}, indent=2))
    print(f"\n| retriever | dev R@5 | dev R@20 | test R@5 | test R@20 | all R@5 | all R@20 |\n|---|---|---|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[f'{s}@{k}']:.1f}" for s in ("dev", "test", "all") for k in KS) + " |")


if __name__ == "__main__":
    main()

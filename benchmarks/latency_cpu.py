"""CPU time (and wall time) of one hybrid top-5 search at 100,000 chunks, as `Index` runs it.

    nice -n 10 .venv/bin/python benchmarks/latency_cpu.py

The same 100,000-chunk set as retrieval_dense.py (its 5,851 real chunks repeated for BM25, their cached vectors
repeated with 1% noise), the first 100 multi-hop questions, each embedded for real. On a shared machine wall time
measures the load; CPU time of the process (`time.process_time`, all its threads) is what a question costs, and
what it takes on a machine with a free core.
"""
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT)); sys.path.insert(0, str(ROOT / 'benchmarks'))
from qa.embed import LocalEmbedder
from qa.dense import DenseRetriever, HybridRetriever
from qa.chunking import chunk_documents, Chunk
from qa.retrieval import BM25Retriever
from qa.tokens import encoding_for_model
from retrieval_dense import load_corpus
docs, items = load_corpus(ROOT.parent / 'shared' / 'eval', ['covidqa'])
chunks = [c for cs in chunk_documents(docs, encoding=encoding_for_model(None), chunk_tokens=256, overlap_tokens=32) for c in cs]
v = np.load(next((ROOT / 'benchmarks' / 'out').glob('vectors-all-MiniLM-L6-v2-int8-w128-*.npy'))).astype(np.float32)
reps = -(-100_000 // len(v)); rng = np.random.default_rng(0)
big = np.concatenate([v + rng.normal(0, 0.01, v.shape).astype(np.float32) for _ in range(reps)])[:100_000]
bc = [Chunk(f"{c.document_id}#{r}", c.index, c.start, c.end, c.text, c.tokens) for r in range(reps) for c in chunks][:100_000]
e = LocalEmbedder(query_cache=0); e.embed_query("warm up")
h = HybridRetriever(BM25Retriever(bc), DenseRetriever(bc, e, vectors=big))
qs = [it["question"] for it in items][:100]
h.search(qs[0], 5)
cpu, wall, emb = [], [], []
for q in qs:
    a, b = time.process_time(), time.perf_counter(); h.search(q, 5); cpu.append(time.process_time() - a); wall.append(time.perf_counter() - b)
for q in qs:
    a = time.process_time(); e.embed_query(q); emb.append(time.process_time() - a)
print("hybrid top-5 cpu p50 %.1f p95 %.1f ms; wall p50 %.1f p95 %.1f ms; embed-only cpu p50 %.1f ms" % (
    1000*statistics.median(cpu), 1000*np.percentile(cpu, 95), 1000*statistics.median(wall), 1000*np.percentile(wall, 95), 1000*statistics.median(emb)), os.getloadavg())

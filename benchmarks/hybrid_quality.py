"""Answer quality over a whole corpus with the default local model: BM25 vs hybrid retrieval, same items.

    .venv/bin/python benchmarks/hybrid_quality.py multihop --split test --limit 30
    .venv/bin/python benchmarks/hybrid_quality.py paraphrase                      # benchmarks/paraphrase/cases.jsonl
    .venv/bin/python benchmarks/hybrid_quality.py paraphrase --split all --passages   # no LLM: what it would read
    .venv/bin/python benchmarks/hybrid_quality.py --report benchmarks/out/hybrid_quality-multihop.json

The corpus is benchmarks/retrieval_dense.py's: every passage of ../shared/eval/multihop_hotpot_musique plus the
COVID-QA papers as distractors (5,851 chunks of 256/32 tokens), and for the paraphrase set also the example article
(examples/nk_soldiers_kursk.txt). Chunk vectors come from retrieval_dense.py's cache (benchmarks/out/vectors-*.npy;
run it first), put into the index's store, so the index embeds only chunks missing there (the article's).

Each question is asked of one index twice, once with `retrieval="bm25"` and once with `retrieval="hybrid"` (the
order alternating, so a load that comes and goes hits both alike), with the bundled model in-process (temperature 0,
no response cache). Scored like qa.evaluate: token F1 against the gold answers (SQuAD normalisation, best over
golds) and citation support (a gold answer inside a cited span, qa.evaluate.cites_answer). `--passages` asks no
model: it records whether the passages `Index.retrieve` would send to the model hold a gold answer (for the paraphrase
set: the whole answer sentence), for bm25 and hybrid. Multi-hop items are split
by retrieval_dense.py's hash of their id (tuned on nothing: both systems use their defaults).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402

import qa  # noqa: E402
from qa.chunking import chunk_documents  # noqa: E402
from qa.embed import LocalEmbedder  # noqa: E402
from qa.evaluate import best_f1, cites_answer, citation_is_valid  # noqa: E402
from qa.store.memory import MemoryStore  # noqa: E402
from qa.tokens import encoding_for_model  # noqa: E402
from retrieval_dense import OUT, load_corpus, split_of  # noqa: E402

CASES = ROOT / "benchmarks" / "paraphrase" / "cases.jsonl"
ARTICLE = ROOT / "examples" / "nk_soldiers_kursk.txt"
MODES = ("bm25", "hybrid")


def cached_vectors_by_text(chunk_texts: list[str], model_id: str) -> dict[str, np.ndarray]:
    """Vectors of retrieval_dense.py's chunks, by chunk text (from its cache file)."""
    import hashlib

    key = hashlib.sha256("\x00".join(chunk_texts).encode()).hexdigest()[:16]
    path = OUT / f"vectors-{model_id}-{key}.npy"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/retrieval_dense.py --distractors covidqa first")
    vectors = np.load(path).astype(np.float32)
    return dict(zip(chunk_texts, vectors, strict=True))


def build_store(
    docs: list[tuple[str, str]], base: list[tuple[str, str]], settings: qa.Settings, embedder: LocalEmbedder
) -> MemoryStore:
    """A store holding `docs`, chunked as the index chunks them, with the cached vectors of the chunks of `base`
    (retrieval_dense.py's corpus); chunks not among them are embedded now (at most a few hundred)."""
    store = MemoryStore()
    with qa.Index([qa.Document(text=t, id=d) for d, t in docs], settings.model_copy(update={"retrieval": "bm25"}),
                  store=store):
        pass
    encoding = encoding_for_model(None)
    chunks = [c for cs in chunk_documents(base, encoding=encoding, chunk_tokens=256, overlap_tokens=32) for c in cs]
    by_text = cached_vectors_by_text([c.text for c in chunks], embedder.model_id)
    out: dict[str, np.ndarray] = {}
    missing: list[tuple[str, int, str]] = []
    for document in store:
        chunks = store.chunks(document.id)
        rows = [by_text.get(c.text) for c in chunks]
        if any(r is None for r in rows):
            missing.extend((document.id, i, c.text) for i, c in enumerate(chunks))
            continue
        out[document.id] = np.stack([r for r in rows if r is not None])
    if len(missing) > 300:
        raise SystemExit(f"{len(missing)} chunks have no cached vector: the index chunks otherwise than retrieval_dense")
    if missing:
        vectors = embedder.embed_passages([t for _, _, t in missing])
        for doc in {d for d, _, _ in missing}:
            out[doc] = np.stack([v for (d, _, _), v in zip(missing, vectors, strict=True) if d == doc])
    print(f"{sum(len(v) for v in out.values())} chunk vectors ({len(missing)} embedded now)", file=sys.stderr)
    store.set_meta("embedding_model", embedder.model_id)
    store.set_vectors(embedder.model_id, out)
    return store


def run(args: argparse.Namespace) -> dict[str, Any]:
    eval_dir = ROOT.parent / "shared" / "eval"
    docs, multihop = load_corpus(eval_dir, ["covidqa"])
    base = list(docs)
    if args.set == "multihop":
        items = [{"id": it["id"], "question": it["question"], "answers": it["answers"], "split": split_of(it["id"])}
                 for it in multihop]
    else:
        items = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines() if line.strip()]
        docs = [*docs, ("nk_soldiers_kursk", ARTICLE.read_text(encoding="utf-8"))]
    items = [it for it in items if args.split in ("all", it["split"])][: args.limit]
    settings = qa.Settings.from_env(cache=False)
    embedder = LocalEmbedder()
    started = time.perf_counter()
    store = build_store(docs, base, settings, embedder)
    print(f"index ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    texts = dict(docs)
    indexes = {mode: qa.Index([], settings.model_copy(update={"retrieval": mode}), store=store,
                              embedder=embedder if mode != "bm25" else None) for mode in MODES}
    results: list[dict[str, Any]] = []
    load: list[float] = []
    if args.passages:
        for item in items:
            row = {"id": item["id"], "question": item["question"], "split": item["split"]}
            for mode in MODES:
                t0 = time.perf_counter()
                passages = indexes[mode].retrieve(item["question"])
                sent = " ".join(p.text for p in passages)
                held = item["sentence"] in sent if "sentence" in item else cites_answer(item["answers"], [sent])
                row[mode] = {"held": held, "seconds": time.perf_counter() - t0,
                             "documents": sorted({p.document_id for p in passages})}
            results.append(row)
            load.append(os.getloadavg()[0])
        out = {"command": " ".join(sys.argv), "set": args.set, "split": args.split, "items": results,
               "load_average": {"min": min(load), "max": max(load), "mean": statistics.mean(load)}}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
        return out
    for n, item in enumerate(items):
        row: dict[str, Any] = {"id": item["id"], "question": item["question"], "answers": item["answers"],
                               "split": item["split"]}
        for mode in MODES if n % 2 == 0 else MODES[::-1]:
            t0 = time.perf_counter()
            try:
                answer = indexes[mode].ask(item["question"])
            except qa.QAError as exc:
                row[mode] = {"error": f"{type(exc).__name__}: {exc}", "seconds": time.perf_counter() - t0}
                continue
            spans = [c.quote for c in answer.citations]
            prediction = answer.answer if isinstance(answer.answer, str) else None
            row[mode] = {
                "answer": prediction, "found": answer.found, "decision": answer.decision,
                "f1": best_f1(prediction, item["answers"]) if answer.found else 0.0,
                "supported": answer.found and cites_answer(item["answers"], spans),
                "valid": all(citation_is_valid(c, texts) for c in answer.citations),
                "citations": [[c.document_id, c.quote] for c in answer.citations],
                "seconds": time.perf_counter() - t0, "calls": answer.usage.calls,
            }
        load.append(os.getloadavg()[0])
        results.append(row)
        print(f"[{n + 1}/{len(items)}] " + "  ".join(
            f"{m} f1={row[m].get('f1', 0):.2f} sup={int(bool(row[m].get('supported')))}" for m in MODES
        ) + f"  {item['question'][:60]}", file=sys.stderr)
        out = {"command": " ".join(sys.argv), "set": args.set, "split": args.split, "items": results,
               "load_average": {"min": min(load), "max": max(load), "mean": statistics.mean(load)},
               "model": settings.model_name}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


def passages_table(out: dict[str, Any]) -> str:
    lines = ["| split | items | retrieval | gold answer in the passages sent to the model |", "|---|---|---|---|"]
    splits = sorted({r["split"] for r in out["items"]})
    for split in [*splits, "all"] if len(splits) > 1 else splits:
        rows = [r for r in out["items"] if split in ("all", r["split"])]
        for mode in MODES:
            held = sum(r[mode]["held"] for r in rows)
            lines.append(f"| {split} | {len(rows)} | {mode} | {held}/{len(rows)} ({100 * held / len(rows):.0f}%) |")
    return "\n".join(lines) + "\n"


def table(out: dict[str, Any]) -> str:
    if out["items"] and "held" in out["items"][0][MODES[0]]:
        return passages_table(out)
    lines = ["| split | items | retrieval | token F1 | answered | gold answer in a cited span | citations valid "
             "| s / question (median) |", "|---|---|---|---|---|---|---|---|"]
    splits = sorted({r["split"] for r in out["items"]})
    for split in [*splits, "all"] if len(splits) > 1 else splits:
        rows = [r for r in out["items"] if split in ("all", r["split"])]
        for mode in MODES:
            got = [r[mode] for r in rows]
            ok = [g for g in got if "error" not in g]
            lines.append(
                f"| {split} | {len(rows)} | {mode} | {100 * statistics.mean(g.get('f1', 0.0) for g in got):.1f}% "
                f"| {sum(bool(g.get('found')) for g in got)}/{len(rows)} "
                f"| {sum(bool(g.get('supported')) for g in got)}/{len(rows)} "
                f"| {sum(bool(g.get('valid')) for g in ok)}/{len(ok)} "
                f"| {statistics.median(g['seconds'] for g in got):.1f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("set", nargs="?", choices=("multihop", "paraphrase"))
    parser.add_argument("--split", choices=("dev", "test", "all"), default="test")
    parser.add_argument("--limit", type=int)
    parser.add_argument("--out")
    parser.add_argument("--passages", action="store_true", help="no LLM: is a gold answer in the passages sent")
    parser.add_argument("--report", help="print the table of an earlier --out file")
    args = parser.parse_args()
    if args.report:
        print(table(json.loads(Path(args.report).read_text(encoding="utf-8"))))
        return
    if args.set is None:
        parser.error("choose multihop or paraphrase")
    args.out = args.out or str(OUT / f"hybrid_quality-{args.set}-{args.split}{'-passages' if args.passages else ''}.json")
    out = run(args)
    print(f"load average {out['load_average']}")
    print(table(out))


if __name__ == "__main__":
    main()

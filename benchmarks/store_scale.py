"""The persistent index at scale: ingest MB/s, peak RSS and file size (SQLite store vs the in-memory index), BM25 top-5
query latency, reopen-and-retrieve vs a full rebuild, adding 10 files to ~3,000 vs a rebuild, and how the SQLite
store's ranking (tantivy's BM25) agrees with bm25s's.

    python benchmarks/store_scale.py --eval ../shared/eval --sizes 10,100 --out benchmarks/out/store_scale.json
    python benchmarks/store_scale.py --eval ../shared/eval --skip ingest,reopen,incremental,agreement --sizes 100 \
        --grow 1000000   # queries at ~1M chunks: the 100 MB store's documents copied in SQL, the term index made from them

Every measurement runs in a fresh subprocess (peak RSS is that process's own, `ru_maxrss`); times exclude the
Python start and imports. The corpora are copies of the eval documents under distinct paths (so distinct ids),
written to a temporary folder and indexed from there, as `qa index` would.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def eval_docs(root: Path) -> list[Path]:
    return sorted(root.glob("*/docs/*.txt"))


def eval_questions(root: Path, n: int, seed: int = 1) -> list[dict[str, Any]]:
    items = []
    for f in sorted(root.glob("*/items.jsonl")):
        rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
        items.extend(r for r in rows if r.get("doc_id"))
    random.Random(seed).shuffle(items)
    return items[:n]


def copy_doc(doc: Path, folder: Path) -> Path:
    """Copy an eval document to `folder`/<dataset>/<name>, as the corpora lay them out."""
    dest = folder / doc.parent.parent.name / doc.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(doc, dest)
    return dest


def build_corpus(target: Path, docs: list[Path], megabytes: float) -> tuple[int, int]:
    """Copies of `docs` under target/cNNNN/<dataset>/ until `megabytes` of text; (files, bytes)."""
    want, size, files, copy = int(megabytes * 1e6), 0, 0, 0
    while size < want:
        for doc in docs:
            dest = copy_doc(doc, target / f"c{copy:04d}")
            size += dest.stat().st_size
            files += 1
            if size >= want:
                break
        copy += 1
    return files, size


def move_in(group: Path, folder: Path) -> None:
    """Move the files staged under `group` into `folder`, at the same relative paths."""
    for src in sorted(p for p in group.rglob("*") if p.is_file()):
        dest = folder / src.relative_to(group)
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dest)


def remove_store(db: Path) -> None:
    for p in db.parent.glob(db.name + "*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- workers (run in a fresh process each) -------------------------------------------------------------------


def worker(argv: list[str]) -> dict[str, Any]:
    import qa
    from qa.retrieval import BM25Retriever

    # BM25 only: embedding chunks is not what is measured; the 1 GB corpus is 460k files, over the default limit
    settings = qa.Settings(api_key="unused", retrieval="bm25", max_documents=10_000_000)
    job = argv[0]
    if job == "ingest-sqlite":
        folders, db = argv[1].split(","), Path(argv[2])
        t = time.perf_counter()
        with qa.Index.open(db, settings) as index:
            report = index.refresh(folders)
        seconds = time.perf_counter() - t
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
        size += sum(p.stat().st_size for p in (db.parent / (db.name + ".terms")).glob("*"))
        return {"seconds": seconds, "rss_mb": peak_rss_mb(), "chunks": report.chunks, "file_mb": size / 1e6,
                "added": report.added, "unchanged": report.unchanged, "failed": len(report.failed)}  # fmt: skip
    if job == "ingest-memory":
        folders = argv[1].split(",")
        t = time.perf_counter()
        index = qa.Index.from_paths(folders, settings)
        index.retriever.search("warm up the bm25s index", 5)  # the in-memory BM25 index is built on first search
        seconds = time.perf_counter() - t
        return {"seconds": seconds, "rss_mb": peak_rss_mb(), "chunks": index.store.stats().chunks}
    if job in ("query-sqlite", "query-memory"):
        questions = json.loads(Path(argv[2]).read_text(encoding="utf-8"))
        if job == "query-sqlite":
            opened = qa.Index.open(argv[1], settings)
            search = opened.store.search
        else:
            index = qa.Index.from_paths(argv[1].split(","), settings)
            retriever = BM25Retriever([c for d in index for c in index.store.chunks(d.id)])
            search = retriever.search
        for q in questions[:20]:
            search(q, 5)  # warm the page cache / caches
        times = []
        for q in questions:
            t = time.perf_counter()
            search(q, 5)
            times.append(time.perf_counter() - t)
        times.sort()
        return {"median_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
                "queries": len(times), "chunks": (opened if job == "query-sqlite" else index).store.stats().chunks}  # fmt: skip
    if job == "embed-sqlite":  # the store with every chunk's vector, as the default (hybrid) retrieval makes it
        t = time.perf_counter()
        with qa.Index.open(argv[1], qa.Settings(api_key="unused", retrieval="hybrid")) as index:  # embeds on open
            index.retrieve("embed every chunk")
            return {"seconds": time.perf_counter() - t, "chunks": index.store.stats().chunks}
    if job == "reopen-hybrid":  # the default retrieval: words and meaning fused, sentences focused by meaning
        t = time.perf_counter()
        with qa.Index.open(argv[1], qa.Settings(api_key="unused", retrieval="hybrid")) as index:
            passages = index.retrieve(argv[2])
            first = time.perf_counter() - t
            t = time.perf_counter()
            index.retrieve("Which virus causes MERS?")
        return {"seconds": first, "second_question_s": time.perf_counter() - t, "passages": len(passages),
                "rss_mb": peak_rss_mb()}  # fmt: skip
    if job == "reopen":
        t = time.perf_counter()
        with qa.Index.open(argv[1], settings) as index:
            passages = index.retrieve(argv[2])
        return {"seconds": time.perf_counter() - t, "passages": len(passages), "rss_mb": peak_rss_mb()}
    if job == "rebuild":
        t = time.perf_counter()
        index = qa.Index.from_paths(argv[1].split(","), settings)
        passages = index.retrieve(argv[2])
        return {"seconds": time.perf_counter() - t, "passages": len(passages), "rss_mb": peak_rss_mb()}
    if job == "add-vs-rebuild":  # in one warm process (the tokenizer already built), as a long-lived app runs
        from qa.chunking import chunk_documents
        from qa.tokens import encoding_for_model

        # The tokenizer and its per-token character table are built once per process (~0.3 s), as a long-lived
        # app has them after its first document; chunking two short texts builds both.
        chunk_documents([("a", "Warm up the tokenizer."), ("b", "And its tables.")], encoding=encoding_for_model(None))
        folder, db, fresh, staged = Path(argv[1]), Path(argv[2]), Path(argv[3]), Path(argv[4])
        adds, rebuilds, memory, added = [], [], [], []
        for group in sorted(staged.iterdir()):  # each round: 10 more files, added; then the whole folder rebuilt
            move_in(group, folder)
            t = time.perf_counter()
            with qa.Index.open(db, settings) as index:
                report = index.refresh([folder])
            adds.append(time.perf_counter() - t)
            added.append(report.added)
            remove_store(fresh)
            t = time.perf_counter()
            with qa.Index.open(fresh, settings) as index:
                index.refresh([folder])
            rebuilds.append(time.perf_counter() - t)
            t = time.perf_counter()
            qa.Index.from_paths(folder, settings).retriever.search("warm up the bm25s index", 5)
            memory.append(time.perf_counter() - t)
        return {"add_s": adds, "added": added, "rebuild_sqlite_s": rebuilds, "rebuild_memory_s": memory}
    if job == "grow":
        return grow(Path(argv[1]), Path(argv[2]), int(argv[3]))
    if job == "agreement":
        return agreement(argv[1].split(","), argv[2], Path(argv[3]), Path(argv[4]), settings)
    raise SystemExit(f"unknown job {job}")


def grow(source: Path, db: Path, want: int) -> dict[str, Any]:
    """`source`'s documents copied (ids "<id>#<n>") into `db` until it holds `want` chunks or more, by SQL; then the
    store is opened, which makes its term index from every stored chunk (as for a file whose index went missing)."""
    import sqlite3

    from qa.store.sqlite import SQLiteStore

    shutil.copyfile(source, db)
    shutil.rmtree(db.with_name(db.name + ".terms"), ignore_errors=True)
    conn = sqlite3.connect(db, isolation_level=None)
    (docs, chunks, max_doc, max_chunk) = conn.execute(
        "SELECT (SELECT COUNT(*) FROM documents), (SELECT COUNT(*) FROM chunks), (SELECT MAX(id) FROM documents),"
        " (SELECT MAX(id) FROM chunks)"
    ).fetchone()
    copies = -(-want // chunks) - 1
    t = time.perf_counter()
    conn.execute("BEGIN")
    for k in range(1, copies + 1):
        d, c = k * max_doc, k * max_chunk
        conn.execute(
            "INSERT INTO documents (id, doc_id, length, sha256, chunks, tokens, metadata, locations) SELECT id + ?,"
            " doc_id || '#' || ?, length, sha256, chunks, tokens, metadata, locations FROM documents WHERE id <= ?",
            (d, k, max_doc),
        )
        conn.execute("INSERT INTO document_texts SELECT document + ?, text FROM document_texts WHERE document <= ?", (d, max_doc))
        conn.execute(
            'INSERT INTO chunks SELECT id + ?, document + ?, idx, start, "end", tokens FROM chunks WHERE id <= ?',
            (c, d, max_chunk),
        )
    conn.execute("DELETE FROM term_log")
    conn.execute("UPDATE term_state SET next_chunk = (SELECT MAX(id) + 1 FROM chunks)")
    conn.execute("COMMIT")
    conn.close()
    copy_s = time.perf_counter() - t
    t = time.perf_counter()
    SQLiteStore(db).close()  # the term index is missing: made from the stored chunks
    size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    terms = sum(p.stat().st_size for p in (db.parent / (db.name + ".terms")).glob("*"))
    return {"documents": docs * (copies + 1), "chunks": chunks * (copies + 1), "copy_s": copy_s,
            "term_index_build_s": time.perf_counter() - t, "rss_mb": peak_rss_mb(), "sqlite_mb": size / 1e6,
            "terms_mb": terms / 1e6}  # fmt: skip


def agreement(folders: list[str], db: str, db_incremental: Path, questions_file: Path, settings: Any) -> dict[str, Any]:
    """tantivy (SQLite store) vs bm25s (in-memory) top-5 on the same chunks; an incrementally built file vs one built at once."""
    import qa

    items = json.loads(questions_file.read_text(encoding="utf-8"))
    memory = qa.Index.from_paths(folders, settings)
    stored = qa.Index.open(db, settings)
    incremental = qa.Index.open(db_incremental, settings)
    top1 = overlap = gold_mem = gold_sql = same_incremental = 0
    taus = []
    for item in items:
        q = item["question"]
        a = [(h.chunk.document_id, h.chunk.index) for h in memory.retriever.search(q, 5)]
        b = [(h.chunk.document_id, h.chunk.index) for h in stored.store.search(q, 5)]
        c = [(h.chunk.document_id, h.chunk.index) for h in incremental.store.search(q, 5)]
        top1 += bool(a and b and a[0] == b[0])
        overlap += len(set(a) & set(b)) / max(len(a), 1)
        gold = item["doc_id"] + ".txt"
        gold_mem += any(d == gold for d, _ in a)
        gold_sql += any(d == gold for d, _ in b)
        same_incremental += b == c
        common = [x for x in a if x in b]
        if len(common) >= 2:
            pairs = [(i, j) for i in range(len(common)) for j in range(i + 1, len(common))]
            concordant = sum((b.index(common[i]) < b.index(common[j])) for i, j in pairs)
            taus.append((2 * concordant - len(pairs)) / len(pairs))
    n = len(items)
    return {
        "questions": n,
        "top1_same": top1 / n,
        "overlap_at_5": overlap / n,
        "kendall_tau_common": statistics.mean(taus) if taus else None,
        "gold_doc_in_top5_bm25s": gold_mem / n,
        "gold_doc_in_top5_store": gold_sql / n,
        "incremental_equals_at_once": same_incremental / n,
    }


def run_worker(*args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--worker", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"worker {args[0]} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--eval", type=Path, default=HERE.parent.parent / "shared" / "eval")
    parser.add_argument("--sizes", default="10,100", help="corpus sizes in MB, comma-separated")
    parser.add_argument("--questions", type=int, default=300)
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: ingest,query,reopen,reopen-hybrid,incremental,agreement")
    parser.add_argument("--grow", type=int, default=0, help="also query a copy of the largest size's store grown to this many chunks")
    parser.add_argument("--memory-max-mb", type=float, default=100, help="no in-memory baseline above this size (RAM)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed after)")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    docs = eval_docs(args.eval)
    items = eval_questions(args.eval, args.questions)
    work = args.work or Path(tempfile.mkdtemp(prefix="qa-store-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    questions_file = work / "questions.json"
    questions_file.write_text(json.dumps([i["question"] for i in items]), encoding="utf-8")
    items_file = work / "items.json"
    items_file.write_text(json.dumps(items), encoding="utf-8")
    results: dict[str, Any] = {"eval_files": len(docs), "eval_mb": sum(d.stat().st_size for d in docs) / 1e6}

    def report(key: str, value: Any) -> None:
        results[key] = value
        print(f"{key}: {json.dumps(value)}", flush=True)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(results, indent=2), encoding="utf-8")

    eval_folders = ",".join(sorted({str(d.parent) for d in docs}))
    question = "What is the main cause of HIV-1 infection in children?"
    try:
        if "reopen" not in skip or "agreement" not in skip or "reopen-hybrid" not in skip:
            db = work / "eval.sqlite"
            report("eval_ingest_sqlite", run_worker("ingest-sqlite", eval_folders, str(db)))
        if "reopen" not in skip:
            reopen = [run_worker("reopen", str(db), question) for _ in range(3)]
            rebuild = [run_worker("rebuild", eval_folders, question) for _ in range(3)]
            r, b = statistics.median(x["seconds"] for x in reopen), statistics.median(x["seconds"] for x in rebuild)
            report("reopen_vs_rebuild", {"reopen_s": r, "rebuild_s": b, "ratio": r / b,
                                         "reopen_rss_mb": reopen[0]["rss_mb"], "rebuild_rss_mb": rebuild[0]["rss_mb"]})  # fmt: skip
        if "reopen-hybrid" not in skip:
            report("embed_eval", run_worker("embed-sqlite", str(db)))
            runs = [run_worker("reopen-hybrid", str(db), question) for _ in range(3)]
            report("reopen_hybrid", {"seconds": statistics.median(r["seconds"] for r in runs),
                                     "second_question_s": statistics.median(r["second_question_s"] for r in runs),
                                     "rss_mb": max(r["rss_mb"] for r in runs)})  # fmt: skip
        if "agreement" not in skip:
            dirs = sorted({d.parent for d in docs})
            first, second = dirs[: len(dirs) // 2], dirs[len(dirs) // 2 :]
            inc = work / "incremental.sqlite"
            run_worker("ingest-sqlite", ",".join(map(str, first)), str(inc))
            run_worker("ingest-sqlite", ",".join(map(str, first + second)), str(inc))
            report("agreement", run_worker("agreement", eval_folders, str(db), str(inc), str(items_file)))
        if "incremental" not in skip:
            base = work / "inc3000"
            picked = docs[:3000]
            for d in picked:
                copy_doc(d, base)
            db3 = work / "inc3000.sqlite"
            built = run_worker("ingest-sqlite", str(base), str(db3))
            rounds = 3
            extra = iter(docs[3000 : 3000 + 20 * rounds])
            for name in ("warm", "cold"):
                for r in range(rounds):
                    for d in itertools.islice(extra, 10):
                        copy_doc(d, work / "staged" / name / f"r{r}")
            warm = run_worker("add-vs-rebuild", str(base), str(db3), str(work / "rebuild.sqlite"), str(work / "staged" / "warm"))
            cold: dict[str, list[float]] = {"add_s": [], "rebuild_sqlite_s": []}
            for group in sorted((work / "staged" / "cold").iterdir()):  # added by a fresh process, as `qa index` does
                move_in(group, base)
                cold["add_s"].append(run_worker("ingest-sqlite", str(base), str(db3))["seconds"])
                remove_store(work / "rebuild.sqlite")
                cold["rebuild_sqlite_s"].append(run_worker("ingest-sqlite", str(base), str(work / "rebuild.sqlite"))["seconds"])
            med = statistics.median
            report("add_10_to_3000", {
                "initial_s": built["seconds"], "rounds": rounds,
                "warm": {**warm, "ratio_vs_sqlite_rebuild": med(warm["add_s"]) / med(warm["rebuild_sqlite_s"]),
                         "ratio_vs_memory_rebuild": med(warm["add_s"]) / med(warm["rebuild_memory_s"])},
                "cold_process": {**cold, "ratio": med(cold["add_s"]) / med(cold["rebuild_sqlite_s"])},
            })  # fmt: skip
        for mb in [float(s) for s in args.sizes.split(",") if s]:
            corpus = work / f"corpus{mb:g}"
            files, size = build_corpus(corpus, docs, mb)
            if "ingest" not in skip:
                sql = run_worker("ingest-sqlite", str(corpus), str(work / f"c{mb:g}.sqlite"))
                row = {"files": files, "mb": size / 1e6, "chunks": sql["chunks"], "sqlite_s": sql["seconds"],
                       "sqlite_mb_s": size / 1e6 / sql["seconds"], "sqlite_rss_mb": sql["rss_mb"],
                       "sqlite_file_mb": sql["file_mb"]}  # fmt: skip
                if mb <= args.memory_max_mb:
                    mem = run_worker("ingest-memory", str(corpus))
                    row.update({"memory_s": mem["seconds"], "memory_mb_s": size / 1e6 / mem["seconds"],
                                "memory_rss_mb": mem["rss_mb"], "throughput_ratio": mem["seconds"] / sql["seconds"]})  # fmt: skip
                report(f"ingest_{mb:g}mb", row)
            if "query" not in skip and (work / f"c{mb:g}.sqlite").exists():
                sql_q = run_worker("query-sqlite", str(work / f"c{mb:g}.sqlite"), str(questions_file))
                mem_q = run_worker("query-memory", str(corpus), str(questions_file)) if mb <= args.memory_max_mb else None
                report(f"query_{mb:g}mb", {"sqlite": sql_q, "memory_bm25s": mem_q})
            if args.grow and mb == max(float(s) for s in args.sizes.split(",") if s):
                grown = work / "grown.sqlite"
                report("grow", run_worker("grow", str(work / f"c{mb:g}.sqlite"), str(grown), str(args.grow)))
                report(f"query_{args.grow}_chunks", {"sqlite": run_worker("query-sqlite", str(grown), str(questions_file))})
            shutil.rmtree(corpus)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

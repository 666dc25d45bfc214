"""Chunking speed of the working tree's qa/chunking.py against the one of another commit, in one process.

    python benchmarks/chunking_ab.py --against b69fb7b               # 7 rounds, round-robin, ~10 MB of eval docs

Both versions chunk the same documents (256/32 tokens, o200k_base, their default threads) and must give the same
chunks; tiktoken's two-thread `encode_ordinary_batch` runs in the same rounds as the reference. Prints best and
median seconds and each version's ratio to tiktoken.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from throughput import load_corpus  # noqa: E402

from qa import chunking  # noqa: E402
from qa.tokens import get_encoding  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--against", required=True, help="a commit whose qa/chunking.py is the baseline")
    p.add_argument("--eval-dir", type=Path, default=Path("/work/shared/eval"))
    p.add_argument("--mb", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=7)
    args = p.parse_args()

    source = subprocess.run(
        ["git", "show", f"{args.against}:qa/chunking.py"], cwd=HERE.parent, check=True, capture_output=True, text=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "chunking_baseline.py"
        path.write_text(source, encoding="utf-8")
        spec = importlib.util.spec_from_file_location("chunking_baseline", path)
        assert spec is not None and spec.loader is not None
        baseline = importlib.util.module_from_spec(spec)
        sys.modules["chunking_baseline"] = baseline
        spec.loader.exec_module(baseline)

    enc = get_encoding("o200k_base")
    corpus = load_corpus(args.eval_dir, args.mb)
    texts = [t for _, t in corpus]

    def spans(result: list[list[chunking.Chunk]]) -> list[list[tuple[int, int, int]]]:
        return [[(c.start, c.end, c.tokens) for c in cs] for cs in result]

    if spans(baseline.chunk_documents(corpus, encoding=enc)) != spans(chunking.chunk_documents(corpus, encoding=enc)):
        print("the two versions give different chunks", file=sys.stderr)
        return 1
    methods = {
        f"qa/chunking.py @ {args.against}": lambda: baseline.chunk_documents(corpus, encoding=enc),
        "qa/chunking.py (working tree)": lambda: chunking.chunk_documents(corpus, encoding=enc),
        "tiktoken encode_ordinary_batch, 2 threads": lambda: enc.encode_ordinary_batch(texts, num_threads=2),
    }
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, run in methods.items():
            started = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - started)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    ref = sorted(times["tiktoken encode_ordinary_batch, 2 threads"])
    print(f"{len(corpus)} documents, {mb:.2f} MB, {args.rounds} rounds\n")
    print("| method | best s | median s | × tiktoken 2 threads (best) | × tiktoken 2 threads (median) |")
    print("|---|---|---|---|---|")
    for name, values in times.items():
        values.sort()
        best, median = values[0], values[len(values) // 2]
        print(f"| {name} | {best:.3f} | {median:.3f} | {ref[0] / best:.2f}× | {ref[len(ref) // 2] / median:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

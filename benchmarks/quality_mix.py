"""One quality report over every dataset of ../shared/eval: a fixed mix of items, one table.

    python benchmarks/quality_mix.py --split test --per-dataset 10 --seed 0 --out benchmarks/out/mix-test.json
    python benchmarks/quality_mix.py --report benchmarks/out/mix-test.json            # the table again
    python benchmarks/quality_mix.py --curve benchmarks/out/mix-dev.json               # decline-threshold curves

Each dataset contributes `--per-dataset` items of the split, sampled with `--seed` (qa.evaluate's sampling, so
the same flags give the same items). Per dataset and overall: token F1, answer rate on answerable items,
abstention on unanswerable ones, right answers (F1 >= 0.5), citation support of the right answers,
withheld-but-right (the model's proposed answer was right, the library withheld it), F1 of the proposed
answers (what the model said, nothing withheld), calls and seconds per question, and the decision paths.

`--replay FILE` keeps every LLM reply in a JSONL file keyed by the exact request, so a second run with other
library rules over the same items calls the model only for requests it has not seen (re-asks that changed).
`--set key=value` overrides a Settings field (e.g. `--set decline_threshold=1.0` to record decline
probabilities without declining; JSON values). `--local-model NAME` picks a registered local model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# --qa-root runs another checkout of qa (e.g. an older commit, as a baseline on the same items and replies).
_root = sys.argv[sys.argv.index("--qa-root") + 1] if "--qa-root" in sys.argv else str(ROOT)
sys.path.insert(0, _root)

import qa  # noqa: E402
from qa.evaluate import EvalReport, ItemResult, evaluate, summarize  # noqa: E402
from qa.llm import LLMRequest, LLMResponse, OpenAILLM, TokenLogprob  # noqa: E402

CORRECT_F1 = 0.5  # as qa.evaluate.CORRECT_F1 (not imported: an older --qa-root has none)

DEFAULT_EVAL = ROOT.parent / "shared" / "eval"


class ReplayLLM:
    """An LLM that answers a request it has seen from a JSONL file and asks the real one otherwise."""

    def __init__(self, inner: OpenAILLM, path: Path) -> None:
        self.inner = inner
        self.path = path
        self.replies: dict[str, dict[str, Any]] = {}
        self.hits = self.misses = 0
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.replies[entry["key"]] = entry["reply"]

    @property
    def model(self) -> str:
        return self.inner.model

    def _key(self, request: LLMRequest) -> str:
        # Asking for log-probabilities does not change the reply (they are recorded, not used to sample), so a
        # reply recorded with them also answers the same request without them.
        # (The key's last element is the top_logprobs every recording asks for, 10, whatever this request asks.)
        blob = json.dumps([self.inner.model, request.messages, request.schema, 10], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def complete(self, request: LLMRequest) -> LLMResponse:
        key = self._key(request)
        if key in self.replies and (request.top_logprobs is None or self.replies[key]["logprobs"] is not None):
            self.hits += 1
            r = dict(self.replies[key])
            logprobs = r.pop("logprobs") if request.top_logprobs is not None else r.pop("logprobs") and None
            return LLMResponse(
                **r,
                logprobs=None if logprobs is None else tuple(
                    TokenLogprob(t["token"], t["logprob"], tuple(tuple(x) for x in t["top"])) for t in logprobs
                ),
            )  # fmt: skip
        self.misses += 1
        reply = self.inner.complete(request)
        entry = asdict(reply)
        self.replies[key] = entry
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps({"key": key, "reply": entry}) + "\n")
        return reply

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        return self.complete(request)


def _settings(args: argparse.Namespace) -> qa.Settings:
    overrides: dict[str, Any] = {}
    for item in args.set or []:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    if args.local_model:
        overrides["local_model"] = args.local_model
    return qa.Settings.from_env(**overrides)


def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = _settings(args)
    llm: Any = OpenAILLM(settings, qa.load_prompts())
    if args.replay:
        llm = ReplayLLM(llm, Path(args.replay))

    def factory(texts: Mapping[str, str], s: Any) -> qa.Index:
        return qa.Index([qa.Document(text=t, id=d) for d, t in texts.items()], s, llm=llm)

    datasets = sorted(p for p in Path(args.eval).iterdir() if (p / "items.jsonl").is_file())
    if args.datasets:
        datasets = [p for p in datasets if p.name in args.datasets.split(",")]
    reports: dict[str, Any] = {}
    started = time.perf_counter()
    for path in datasets:
        report = evaluate(
            path, split=args.split, limit=args.per_dataset, seed=args.seed, settings=settings, index_factory=factory,
            progress=not args.no_progress, max_consecutive_errors=None,
        )  # fmt: skip
        reports[path.name] = report.model_dump()
        print(f"{path.name}: done ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        _write(args, settings, llm, started, reports)
    return _write(args, settings, llm, started, reports)


def _write(args: argparse.Namespace, settings: Any, llm: Any, started: float, reports: dict[str, Any]) -> dict[str, Any]:
    """The result so far, written to --out after every dataset (a long run can be read before it ends)."""
    out = {
        "command": " ".join(sys.argv),
        "settings": json.loads(settings.model_dump_json(exclude={"api_key"})),
        "model": settings.model_name,
        "replay": {"hits": llm.hits, "misses": llm.misses} if args.replay else None,
        "seconds": time.perf_counter() - started,
        "qa_root": _root,
        "reports": reports,
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")
    return out


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def table(out: Mapping[str, Any]) -> str:
    rows = []
    everything: list[ItemResult] = []
    for name, raw in out["reports"].items():
        items = [ItemResult.model_validate(i) for i in raw["items"]]
        everything.extend(items)
        rows.append((name, items))
    rows.append(("**all**", everything))
    head = (
        "| dataset | items (ans/unans) | F1 | answer rate | abstention | right | support of right | withheld but right "
        "| F1 proposed | calls/q | s/q (median) | decisions |"
    )
    lines = [head, "|" + "---|" * 12]
    for name, items in rows:
        s = summarize(items)
        calls = s.calls_total / s.items if s.items else 0.0
        decisions = ", ".join(f"{k} {v}" for k, v in sorted(s.decisions.items()))
        lines.append(
            f"| {name} | {s.items} ({s.answerable}/{s.unanswerable}) | {_pct(s.f1)} | {_pct(s.answer_rate)} "
            f"| {_pct(s.abstention_recall)} | {_pct(s.correct)} | {_pct(s.correct_supported)} "
            f"| {_pct(s.withheld_correct)} | {_pct(s.proposed_f1)} | {calls:.2f} "
            f"| {s.latency_median or 0:.1f} | {decisions} |"
        )
    return "\n".join(lines) + "\n"


_THRESHOLDS = (None, 0.0061, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5)


def curve(out: Mapping[str, Any]) -> str:
    """Answer rate (answerable) and abstention (unanswerable) if answers were declined at each threshold, per dataset
    and over all of them ("wrong given": answers a user would be misled by, a wrong answer or any answer to an
    unanswerable question)."""
    lines = [
        "| dataset | threshold | answer rate | abstention | right decisions | right answers kept | wrong given |",
        "|---|---|---|---|---|---|---|",
    ]
    groups = {name: [i for i in (ItemResult.model_validate(x) for x in raw["items"]) if i.error is None]
              for name, raw in out["reports"].items()}  # fmt: skip
    groups["**all**"] = [i for items in groups.values() for i in items]
    for name, items in groups.items():
        for t in _THRESHOLDS:
            def declined(i: ItemResult) -> bool:
                if not i.found:
                    return True
                return t is not None and i.decline_probability is not None and i.decline_probability >= t

            ans = [i for i in items if i.answerable]
            un = [i for i in items if not i.answerable]
            right = [i for i in ans if i.found and (i.f1 or 0) >= CORRECT_F1]
            rate = sum(not declined(i) for i in ans) / len(ans) if ans else None
            abst = sum(declined(i) for i in un) / len(un) if un else None
            ok = (sum(not declined(i) for i in ans) + sum(declined(i) for i in un)) / len(items) if items else None
            kept = sum(not declined(i) for i in right) / len(right) if right else None
            wrong = sum(not declined(i) and (i.f1 or 0) < CORRECT_F1 for i in ans) + sum(not declined(i) for i in un)
            lines.append(
                f"| {name} | {t if t is not None else 'off'} | {_pct(rate)} | {_pct(abst)} | {_pct(ok)} | {_pct(kept)} "
                f"| {wrong} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval", default=str(DEFAULT_EVAL), help="the eval folder (default ../shared/eval)")
    parser.add_argument("--datasets", help="comma-separated dataset folder names (default: all)")
    parser.add_argument("--split", choices=("dev", "test"), default="test")
    parser.add_argument("--per-dataset", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="a Settings override (JSON value)")
    parser.add_argument("--local-model", help="a registered local model name or GGUF path")
    parser.add_argument("--replay", help="JSONL file of recorded LLM replies, read and appended")
    parser.add_argument("--out", help="write the full result JSON here")
    parser.add_argument("--report", help="print the table of an earlier --out file")
    parser.add_argument("--curve", help="print decline-threshold curves of an earlier --out file")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--qa-root", help="import qa from this checkout instead (a baseline); writes --out only")
    args = parser.parse_args()
    if args.report or args.curve:
        out = json.loads(Path(args.report or args.curve).read_text(encoding="utf-8"))
        print(table(out) if args.report else curve(out))
        return
    out = run(args)
    print(f"model {out['model']}, {out['seconds']:.0f} s, replay {out['replay']}")
    if not args.qa_root:
        print(table(out))


if __name__ == "__main__":
    main()

"""Choose Settings.decline_threshold for a model from a `qa eval` report (dev split only).

    QA_DECLINE_THRESHOLD=1 qa eval ../shared/eval/squad2_dev --split dev --limit 100 --seed 1 --json dev.json
    python benchmarks/calibrate_decline.py dev.json                  # --min-answer-rate 0.85

Threshold 1 makes qa ask for token log-probabilities and record Answer.decline_probability on every
item while declining only where the model gave answering no probability at all, so the report holds
what every lower threshold would do: an item is declined exactly when its probability reaches the
threshold (temperature 0: the answer itself does not depend on the threshold). For each candidate
threshold this prints the answer rate on answerable items, the abstention recall on unanswerable ones
and token F1 (declined answerable items score 0), and picks the one with the most right decisions
(answer rate + abstention recall) among those that still answer at least --min-answer-rate of the
answerable items.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def outcomes(items: list[dict[str, Any]], threshold: float) -> dict[str, float]:
    answerable = [i for i in items if i["answerable"]]
    unanswerable = [i for i in items if not i["answerable"]]

    def answered(item: dict[str, Any]) -> bool:
        p = item.get("decline_probability")
        return bool(item.get("found")) and not (p is not None and p >= threshold)

    answer_rate = sum(map(answered, answerable)) / len(answerable)
    abstention = sum(not answered(i) for i in unanswerable) / len(unanswerable)
    f1 = sum((i.get("f1") or 0.0) for i in answerable if answered(i)) / len(answerable)
    return {"threshold": threshold, "answer_rate": answer_rate, "abstention_recall": abstention, "f1": f1}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("report", type=Path, help="JSON written by qa eval --json, run with QA_DECLINE_THRESHOLD=1")
    p.add_argument("--min-answer-rate", type=float, default=0.85)
    args = p.parse_args()

    report = json.loads(args.report.read_text(encoding="utf-8"))
    items = [i for i in report["items"] if not i.get("error")]
    if report["config"].get("split") == "test":
        print("calibrate on dev items only", file=sys.stderr)
        return 2
    scored = [i for i in items if i.get("found") and i.get("decline_probability") is not None]
    if not scored:
        print("no item carries a decline_probability: run qa eval with QA_DECLINE_THRESHOLD=1", file=sys.stderr)
        return 2
    # Every distinct probability of an answered item is a threshold that changes the outcome.
    candidates = sorted({i["decline_probability"] for i in scored} | {1.0})
    rows = [outcomes(items, t) for t in candidates]
    answerable = sum(1 for i in items if i["answerable"])
    print(f"{len(items)} items ({answerable} answerable, {len(items) - answerable} unanswerable)")
    print("| threshold | answer rate | abstention recall | F1 (answerable) |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['threshold']:.5f} | {r['answer_rate']:.1%} | {r['abstention_recall']:.1%} | {r['f1']:.1%} |")
    # The most right decisions (answer rate + abstention recall), never below the answer-rate floor;
    # on a tie the higher threshold, which declines fewer answers.
    ok = [k for k, r in enumerate(rows) if r["answer_rate"] >= args.min_answer_rate]
    k = max(ok, key=lambda k: (round(rows[k]["answer_rate"] + rows[k]["abstention_recall"], 9), k))
    best = rows[k]
    # Any threshold above the next lower candidate declines the same items here; the geometric midpoint
    # (the probabilities span orders of magnitude) leaves the most room on both sides.
    chosen = best["threshold"] if k == 0 else (best["threshold"] * rows[k - 1]["threshold"]) ** 0.5
    print(
        f"\nthreshold {chosen:.5f}: the most right decisions while answering >= {args.min_answer_rate:.0%} of "
        f"answerable items (answer rate {best['answer_rate']:.1%}, abstention recall {best['abstention_recall']:.1%}, "
        f"F1 {best['f1']:.1%}; with no threshold {rows[-1]['abstention_recall']:.1%} / F1 {rows[-1]['f1']:.1%})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Can the local model's own confidence tell answerable from unanswerable questions? (dev split only)

    python benchmarks/abstention_probe.py --limit 60 --seed 1          # squad2_dev, split dev

For each sampled question qa builds the prompt it would send (same retrieval, same passages, same
messages), the default local model reads it in the chat template followed by the start of qa's answer,
`{"result":`, and the probability of the next token is read straight from llama.cpp's logits:
`null` (the model declines) against `{` (it answers). No answer is generated. The report is how well
p(null) / (p(null) + p({)) ranks the unanswerable questions above the answerable ones (ROC AUC; 0.5 is
chance) and the best abstention a threshold would give while still answering >= 85% of the answerable
questions (tuned on the same items, so it is an upper bound).

This decides whether a confidence threshold is worth building into qa for this model: it is not when
the AUC stays near chance. It reads llama-cpp-python's context logits (`Llama._ctx`), an internal of
the pinned 0.3.36; it is a measurement script, not part of the library.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import add_sample_arguments  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_sample_arguments(p, split="dev", seed=1)
    p.add_argument("--min-answer-rate", type=float, default=0.85)
    p.add_argument("--out", type=Path, default=HERE / "out")
    args = p.parse_args()

    import numpy as np
    from llama_cpp import llama_chat_format

    import qa
    from qa import local
    from qa.evaluate import filter_split, load_dataset, sample_items

    dataset = load_dataset(args.dataset)
    items = sample_items(filter_split(dataset, args.split), args.limit, args.seed)
    settings = qa.Settings.from_env()
    if not settings.uses_local_model:
        print("this probe reads the local model's logits: unset OPENAI_BASE_URL / OPENAI_API_KEY", file=sys.stderr)
        return 2
    engine = local.get_engine()
    llama = engine.llama
    template = llama_chat_format.Jinja2ChatFormatter(
        template=llama.metadata["tokenizer.chat_template"], eos_token="<|im_end|>", bos_token=""
    )

    def token_ids(*texts: str) -> list[int]:
        return sorted({llama.tokenize(t.encode(), add_bos=False, special=False)[0] for t in texts})

    null_ids, answer_ids = token_ids("null", " null"), token_ids("{", " {", ' {"')
    indexes: dict[tuple[str, ...], qa.Index] = {}
    records = []
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"abstention-probe-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    with out.open("w", encoding="utf-8") as f:
        for n, item in enumerate(items, 1):
            key = item.index_doc_ids
            if key not in indexes:
                indexes[key] = qa.Index([qa.Document(id=i, text=dataset.text(i)) for i in key], settings=settings)
            index = indexes[key]
            messages = index._messages(item.question, index.retrieve(item.question))
            prompt = template(messages=messages).prompt + '{"result":'
            tokens = llama.tokenize(prompt.encode(), add_bos=False, special=True)
            started = time.perf_counter()
            llama.reset()
            llama.eval(tokens)
            logits = np.ctypeslib.as_array(llama._ctx.get_logits(), shape=(llama.n_vocab(),)).astype(np.float64)
            logp = logits - (logits.max() + math.log(float(np.exp(logits - logits.max()).sum())))
            p_null = float(np.exp(logp[null_ids]).sum())
            p_answer = float(np.exp(logp[answer_ids]).sum())
            record = {
                "id": item.id,
                "answerable": item.answerable,
                "p_null": p_null,
                "p_answer": p_answer,
                "score": p_null / (p_null + p_answer),
                "prompt_tokens": len(tokens),
                "seconds": time.perf_counter() - started,
            }
            records.append(record)
            f.write(json.dumps(record) + "\n")
            print(f"{n}/{len(items)} answerable={item.answerable} score={record['score']:.4f}", file=sys.stderr)

    unanswerable = [r["score"] for r in records if not r["answerable"]]
    answerable = [r["score"] for r in records if r["answerable"]]
    pairs = [(u > a) + 0.5 * (u == a) for u in unanswerable for a in answerable]
    auc = sum(pairs) / len(pairs) if pairs else float("nan")
    best = (float("inf"), 0.0, 1.0)  # threshold, abstention recall, answer rate
    for threshold in sorted({r["score"] for r in records}):
        rate = sum(s < threshold for s in answerable) / max(len(answerable), 1)
        recall = sum(s >= threshold for s in unanswerable) / max(len(unanswerable), 1)
        if rate >= args.min_answer_rate and recall > best[1]:
            best = (threshold, recall, rate)
    summary = (
        f"model {engine.name} ({engine.model_path.name})\n"
        f"{len(records)} {args.split} items of {args.dataset.name} (seed {args.seed}): {len(answerable)} answerable, "
        f"{len(unanswerable)} unanswerable\n"
        f"median p(null) answerable {np.median(answerable) if answerable else float('nan'):.5f}, "
        f"unanswerable {np.median(unanswerable) if unanswerable else float('nan'):.5f}\n"
        f"ROC AUC of p(null)/(p(null)+p({{)) for unanswerable: {auc:.3f}\n"
        f"best threshold answering >= {args.min_answer_rate:.0%} of answerable: {best[0]:.5f} -> abstains on "
        f"{best[1]:.1%} of unanswerable, answers {best[2]:.1%} of answerable (in-sample)\n"
        f"per item: {out}"
    )
    print(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

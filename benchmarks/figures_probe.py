"""Can the local model tell which other figures in a cited sentence answer the question too?

    python benchmarks/figures_probe.py                                   # the bundled 0.5B
    python benchmarks/figures_probe.py --local-model qwen2.5-coder-1.5b  # the registered 1.5B

Issue 11 asks that when the passages give several figures from different sources (the example article's 4,000 from
Zelenskyy and about 1,200 from U.S. estimates) the answer gives each with its source. The system prompt already asks
for it; neither local model does it. This probe asks the two narrowest questions a library step could ask after the
answer is found, on eight sentences written for it (half of them have a second figure for the same thing from
another source, half a figure of something else: another year, another quantity, a date):

  list    "List every figure that answers the question, each with its source" (figures constrained by the JSON
          schema to the numbers the sentence holds);
  yes/no  "The sentence answers with A. Is B another answer to the same question from a different source?",
          read as the probability of "yes" from the reply's token log-probabilities.

A step worth adding to the library must separate the two halves; the figures printed say whether it can.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import create_model

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import qa  # noqa: E402
from qa.llm import LLMRequest  # noqa: E402

# (question, the first answer, another figure of the sentence, the sentence, whether that figure answers too)
CASES: list[tuple[str, str, str, str, bool]] = [
    ("How many casualties?", "4,000", "1,200",
     "On Thursday, Zelenskyy put the number of killed or wounded North Koreans at 4,000, though U.S. estimates are "
     "lower, at around 1,200.", True),
    ("How many people live in the city?", "45,000", "52,300",
     "According to the 2010 census the city had 45,000 inhabitants, while the 2020 estimate by the state put it at "
     "52,300.", True),
    ("How many soldiers died in the battle?", "3,000", "7,500",
     "The army said 3,000 soldiers died, but the rebels claimed 7,500 were killed.", True),
    ("How many troops were deployed?", "5,000", "2,000",
     "Officials said 5,000 troops were deployed, while opposition sources put the figure at 2,000.", True),
    ("What was the revenue in 2019?", "$1,952 million", "1,033.5",
     "Revenue was $1,952 million in 2019 compared with $1,033.5 million in 2018.", False),
    ("How many people died?", "12", "40", "The storm killed 12 people and injured 40 others, officials said.", False),
    ("How many goals did Messi score?", "30", "45", "Messi scored 30 goals in the league and played 45 matches.", False),
    ("How long is the bridge?", "1,200 metres", "1990", "The bridge, opened in 1990, is 1,200 metres long.", False),
]

LIST_PROMPT = (
    "List every figure in the sentence that answers the question, each with the source the sentence names for it "
    "(a person, organisation or document, in the sentence's words). Do not list figures about other things (years, "
    'other quantities). Reply in JSON: {"figures": [{"figure": ..., "according_to": ...}]}.'
)
YES_NO_PROMPT = (
    "Sentence: {sentence}\nQuestion: {question}\nThe sentence answers the question with {answer}. Is {other} in the "
    "sentence another answer to the same question, given by a different source? Reply in JSON: "
    '{{"answer": "yes"}} or {{"answer": "no"}}.'
)
NUMBER = re.compile(r"\d[\d,.]*\d|\d")


def p_yes(logprobs: Any) -> float | None:
    """The probability of "yes" against "no" at the first reply token that is one of them."""
    for token in logprobs or ():
        top = dict(token.top)
        yes = sum(math.exp(v) for k, v in top.items() if k.strip().strip('"').lower().startswith("y"))
        no = sum(math.exp(v) for k, v in top.items() if k.strip().strip('"').lower().startswith("n"))
        if yes + no > 0.5:
            return yes / (yes + no)
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local-model", help="a registered local model name or GGUF path (default: the bundled)")
    args = parser.parse_args()
    settings = qa.Settings(cache=False, local_model=args.local_model) if args.local_model else qa.Settings(cache=False)
    llm = qa.Index([qa.Document(text="-", id="-")], settings).llm
    YesNo = create_model("YesNo", answer=(Literal["yes", "no"], ...))
    listed_right = yes_right = 0
    seconds = 0.0
    for question, answer, other, sentence, answers_too in CASES:
        Figure = create_model(
            "Figure", figure=(Literal[tuple(NUMBER.findall(sentence))], ...), according_to=(str, ...)  # type: ignore[valid-type]
        )
        Figures = create_model("Figures", figures=(list[Figure], ...))  # type: ignore[valid-type]
        start = time.perf_counter()
        listed = llm.complete(LLMRequest(
            ({"role": "system", "content": LIST_PROMPT},
             {"role": "user", "content": f"Sentence: {sentence}\nQuestion: {question}"}),
            Figures.model_json_schema(), "figures",
        ))  # fmt: skip
        figures = {f.get("figure") for f in json.loads(listed.content).get("figures", [])}
        listed_ok = (other in figures) == answers_too
        asked = llm.complete(LLMRequest(
            ({"role": "user", "content": YES_NO_PROMPT.format(
                sentence=sentence, question=question, answer=answer, other=other)},),
            YesNo.model_json_schema(), "yes_no", 5,
        ))  # fmt: skip
        seconds += time.perf_counter() - start
        p = p_yes(asked.logprobs)
        yes_ok = p is not None and (p >= 0.5) == answers_too
        listed_right += listed_ok
        yes_right += yes_ok
        print(f"{'yes' if answers_too else 'no ':3}  list {sorted(figures)!s:28} {'ok ' if listed_ok else 'BAD'}  "
              f"p(yes) {p if p is None else round(p, 3)!s:6} {'ok ' if yes_ok else 'BAD'}  {question}")
    n = len(CASES)
    print(f"\n{llm.model}: list right {listed_right}/{n}, yes/no right {yes_right}/{n} "
          f"(chance {n // 2}/{n}), {seconds / n:.1f} s per case for both calls")


if __name__ == "__main__":
    main()

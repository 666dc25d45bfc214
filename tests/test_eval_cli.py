"""`qa eval` end to end: a tiny dataset, the real CLI, the real openai client, a scripted server on 127.0.0.1."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from qa.testing import OpenAIServer

from .test_cli import run_cli

DOCS = {
    "lighthouse": "The Cape Wrath lighthouse was built in 1828.\n\nIts keeper counted 417 ships in one winter.",
    "orchard": "The orchard has 40 apple trees.\n\nPears were planted in 1990 by the owner.",
}
ITEMS = [
    {"id": "q1", "doc_id": "lighthouse", "question": "When was the lighthouse built?", "answers": ["1828"],
     "answerable": True},
    {"id": "q2", "doc_id": "orchard", "question": "How many apple trees are there?", "answers": ["40", "forty"],
     "answerable": True},
    {"id": "q3", "doc_id": "orchard", "question": "Who painted the barn?", "answers": [], "answerable": False},
]  # fmt: skip


def answer_from_prompt(request: dict[str, Any]) -> str:
    """Answers as a model would, from the question in the prompt: two right, one wrong, one abstention."""
    question = request["messages"][-1]["content"].rsplit("Question:", 1)[1]
    if "lighthouse built" in question:
        result: Any = {"answer": "1828.", "quotes": [{"passage": 1, "quote": "built in 1828"}]}
    elif "apple trees" in question:
        # Wrong, but stated by the sentence it quotes (the library checks support, not truth).
        result = {"answer": "40 pear trees", "quotes": [{"passage": 1, "quote": "The orchard has 40 apple trees."}]}
    else:
        result = None
    return json.dumps({"result": result})


def test_eval_cli_reports_metrics(server: OpenAIServer, tmp_path: Path) -> None:
    data = tmp_path / "tiny"
    (data / "docs").mkdir(parents=True)
    for doc_id, text in DOCS.items():
        (data / "docs" / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    (data / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS), encoding="utf-8")
    for _ in ITEMS:
        server.respond_with(answer_from_prompt)
    out = tmp_path / "report.json"
    done = run_cli(["eval", str(data), "--json", str(out), "--no-progress"], server)
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    s = report["summary"]
    assert (s["items"], s["answerable"], s["unanswerable"], s["errors"]) == (3, 2, 1, 0)
    assert s["exact_match"] == 0.5  # "1828." normalises to "1828"; "40 pear trees" is wrong
    assert s["answer_rate"] == 1.0 and s["abstention_recall"] == 1.0
    assert s["citation_validity"] == 1.0 and s["citations_total"] == 2
    assert s["citation_support"] == 1.0  # both cited spans contain a gold answer, even the wrong answer's
    assert s["calls_total"] == 3
    assert [i["id"] for i in report["items"]] == ["q1", "q2", "q3"]
    assert s["decisions"] == {"quoted": 2, "declined": 1} and s["withheld_correct"] == 0.0
    assert re.search(r"\| exact match \(answerable\) \| 50\.0", done.stdout)
    assert "| citation validity | 100.0" in done.stdout

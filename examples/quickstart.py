"""Answer the README's question about the example article and print the answer with its citations.

Run: python examples/quickstart.py   (offline with the local model, or any server via OPENAI_BASE_URL)
"""

from pathlib import Path

from pydantic import BaseModel

import qa

ARTICLE = Path(__file__).with_name("nk_soldiers_kursk.txt")


class Casualties(BaseModel):
    """A typed answer: the number and who gave it."""

    killed_or_wounded: int
    estimate_by: str


with qa.Index.from_paths(ARTICLE) as index:
    answer = index.ask("How many casualties?")
    print(answer)  # the answer, then each citation as document:start-end "quote"
    for citation in answer.citations:
        document = index.documents[0]
        assert document.text[citation.start : citation.end] == citation.quote  # always true

    typed = index.ask("How many North Koreans were killed or wounded, according to Zelenskyy?", output=Casualties)
    print(typed.answer, f"({len(typed.citations)} citation(s), {typed.usage.prompt_tokens} prompt tokens)")

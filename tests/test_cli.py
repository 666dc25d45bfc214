"""The `qa` command line, against a scripted server on 127.0.0.1, run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import qa
from qa.testing import FakeLLM, OpenAIServer

from .conftest import SEED
from .test_pipeline import GOOD, Q4000


# Against a server no model file is needed, so `qa ask PATH...` keeps its indexes in a folder of this test run's
# own: an index cached under the user's cache directory by another version of qa must not change what a test sees.
_RUN_CACHE = Path(tempfile.mkdtemp(prefix="qa-tests-cache-"))


def run_cli(
    args: list[str], server: OpenAIServer | None, cache_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QA_"))}
    if cache_dir is not None:
        env |= {"QA_CACHE_DIR": str(cache_dir)}
    else:
        env |= {"QA_CACHE": "0"} | ({"QA_CACHE_DIR": str(_RUN_CACHE)} if server is not None else {})
    if server is not None:
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "QA_MODEL": "gpt-4o-mini"}
    return subprocess.run(
        [sys.executable, "-m", "qa", *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_ask_json_is_exactly_the_answer_model(server: OpenAIServer) -> None:
    server.reply_json(GOOD, prompt_tokens=640, completion_tokens=70)
    done = run_cli(["ask", "How many casualties?", str(SEED), "--json"], server)
    assert done.returncode == 0, done.stderr
    answer = qa.Answer[str].model_validate_json(done.stdout)
    assert answer.found and answer.model == "gpt-4o-mini"
    text = SEED.read_text(encoding="utf-8")
    data = json.loads(done.stdout)
    assert set(data) == {
        "question", "answer", "found", "citations", "verified", "decision", "proposed", "usage", "model",
        "decline_probability",
    }  # fmt: skip
    for c in data["citations"]:
        assert text[c["start"] : c["end"]] == c["quote"]
        assert {"document_id", "start", "end", "quote", "chunk"} <= set(c)
    assert data["usage"]["prompt_tokens"] == 640


def test_ask_prints_numbered_citations(server: OpenAIServer) -> None:
    server.reply_json(GOOD)
    done = run_cli(["ask", "How many casualties?", str(SEED.parent)], server)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "4,000" in lines[0]
    assert lines[1].startswith("  [1] nk_soldiers_kursk.txt:") and Q4000 in lines[1]
    assert lines[2].startswith("  [2] ")


def test_cli_errors_are_one_line_and_exit_1(server: OpenAIServer, tmp_path: Path) -> None:
    done = run_cli(["ask", "How many casualties?", str(tmp_path / "nope.txt")], server)
    assert done.returncode == 1
    assert done.stderr.strip() == f"qa: error: {tmp_path / 'nope.txt'}: no such file or directory"
    server.error(401, "bad key")
    done = run_cli(["ask", "How many casualties?", str(SEED)], server)
    assert done.returncode == 1 and "HTTP 401" in done.stderr and "Traceback" not in done.stderr


def test_fake_llm_records_requests(seed_doc: qa.Document) -> None:
    llm = FakeLLM()
    llm.enqueue(GOOD, prompt_tokens=3, completion_tokens=2)
    answer = qa.Index([seed_doc], qa.Settings(api_key="unused"), llm=llm).ask("How many casualties?")
    assert answer.found and answer.usage.prompt_tokens == 3 and answer.model == "fake-model"
    assert llm.requests[0].messages[-1]["content"].endswith("Question: How many casualties?\n")


def test_ask_questions_file_writes_jsonl_in_order(server: OpenAIServer, tmp_path: Path) -> None:
    questions = tmp_path / "questions.txt"
    questions.write_text("How many casualties?\n\nWho captured the soldiers?\n", encoding="utf-8")
    server.reply_json(GOOD)
    server.error(400, "refused")
    done = run_cli(["ask", "--questions", str(questions), str(SEED), "--json", "--concurrency", "1"], server)
    assert done.returncode == 1, done.stderr  # one question failed
    first, second = (json.loads(line) for line in done.stdout.splitlines())
    assert first["question"] == "How many casualties?" and first["found"]
    assert second == {"question": "Who captured the soldiers?", "error": second["error"], "error_type": "RequestRejectedError"}
    assert "HTTP 400" in second["error"]


def test_repeated_ask_is_answered_from_the_cache(server: OpenAIServer, tmp_path: Path) -> None:
    server.reply_json(GOOD)
    first = run_cli(["ask", "How many casualties?", str(SEED), "--json"], server, cache_dir=tmp_path)
    again = run_cli(["ask", "How many casualties?", str(SEED), "--json"], server, cache_dir=tmp_path)
    assert first.returncode == 0 and again.returncode == 0, again.stderr
    assert len(server.requests) == 1
    assert json.loads(again.stdout)["usage"]["cached_calls"] == 1
    assert json.loads(again.stdout)["citations"] == json.loads(first.stdout)["citations"]
    fresh = run_cli(["ask", "How many casualties?", str(SEED), "--json", "--no-cache"], server, cache_dir=tmp_path)
    assert fresh.returncode == 1 and "ran out" in fresh.stderr  # --no-cache asked the server, whose script is done

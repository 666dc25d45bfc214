"""No API key anywhere: every CLI command and error path, run with a canary key, leaves no trace of it."""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

import pytest

import qa
from qa.redact import RedactingFilter, redact, redact_data
from qa.testing import OpenAIServer

from .conftest import SEED
from .test_eval_cli import DOCS, ITEMS, answer_from_prompt
from .test_pipeline import GOOD

CANARY = f"sk-CANARY-{secrets.token_hex(12)}"
PASSWORD = f"pw{secrets.token_hex(8)}"


def fragments(secret: str) -> list[str]:
    """Every 8-character piece of the secret's random part: a leaked head or tail is caught too."""
    random_part = secret.removeprefix("sk-CANARY-")
    return [random_part[i : i + 8] for i in range(len(random_part) - 7)]


def assert_clean(text: str, where: str) -> None:
    for secret in (CANARY, PASSWORD):
        leaked = [f for f in fragments(secret) if f in text]
        assert not leaked, f"a piece of a secret ({leaked[0]}) in {where}: ...{text[:2000]}"
    assert "CANARY" not in text, f"the canary key in {where}"


def error_text(error: BaseException) -> str:
    """What a traceback of `error` shows of it and of the exceptions it shows chained to it (no source lines)."""
    parts: list[str] = []
    seen: BaseException | None = error
    while seen is not None:
        parts += [*traceback.format_exception_only(seen), repr(seen), repr(vars(seen))]
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    return "\n".join(parts)


class Run:
    """The CLI run as a real subprocess with the canary key, its HOME, cache and working directory in tmp."""

    def __init__(self, tmp_path: Path) -> None:
        self.root = tmp_path
        self.outputs: list[tuple[str, str]] = []
        for sub in ("home", "cache", "work"):
            (tmp_path / sub).mkdir()

    def __call__(self, args: list[str], server: OpenAIServer | None, **env: str) -> subprocess.CompletedProcess[str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QA_"))}
        base |= {"HOME": str(self.root / "home"), "QA_CACHE_DIR": str(self.root / "cache"), "OPENAI_API_KEY": CANARY}
        base |= {"QA_PDF_PASSWORD": PASSWORD}
        if server is not None:
            base |= {"OPENAI_BASE_URL": server.base_url, "QA_MODEL": "gpt-4o-mini"}
        done = subprocess.run(
            [sys.executable, "-m", "qa", *args], env=base | env, cwd=self.root / "work",
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        self.outputs.append((f"qa {' '.join(args)}", done.stdout + done.stderr))
        return done

    def assert_no_secret_anywhere(self) -> None:
        for name, text in self.outputs:
            assert_clean(text, name)
        written = [p for p in self.root.rglob("*") if p.is_file()]
        for path in written:
            assert_clean(path.read_bytes().decode("utf-8", "replace"), str(path))


def echo_401(server: OpenAIServer) -> None:
    # As OpenAI does: the key, partly masked, in the message; here also whole in the body.
    masked = CANARY[:7] + "*" * 20 + CANARY[-4:]
    server.error(401, f"Incorrect API key provided: {masked}.", body={
        "error": {"message": f"Incorrect API key provided: {masked}.", "type": "invalid_request_error",
                  "code": "invalid_api_key", "key": CANARY},
    })  # fmt: skip


def test_every_cli_path_with_a_canary_key(server: OpenAIServer, tmp_path: Path) -> None:
    run = Run(tmp_path)
    q = "How many casualties?"

    # Bad settings, from an option and from the environment: one line naming the setting, no values.
    done = run(["ask", "--chunk-tokens", "16", q, str(SEED)], server)
    assert done.returncode == 1
    assert done.stderr == "qa: error: invalid settings: chunk_overlap (32) must be smaller than chunk_tokens (16)\n"
    done = run(["ask", q, str(SEED)], server, QA_DECLINE_THRESHOLD="2")
    assert done.returncode == 1 and len(done.stderr.splitlines()) == 1
    assert "decline_threshold" in done.stderr and "QA_DECLINE_THRESHOLD" in done.stderr
    done = run(["-vv", "ask", q, str(SEED)], server, OPENAI_BASE_URL=f"http://u:{PASSWORD}@127.0.0.1:{server.port}/v1",
               QA_DECLINE_THRESHOLD="x")  # fmt: skip
    assert done.returncode == 1

    # 401 with the key echoed back, at every verbosity.
    for verbosity in ([], ["-v"], ["-vv"]):
        echo_401(server)
        done = run([*verbosity, "ask", q, str(SEED)], server)
        assert done.returncode == 1 and "HTTP 401" in done.stderr, done.stderr
    assert server.request_headers[-1]["authorization"] == f"Bearer {CANARY}"  # the key did reach the server

    # 400 and 500 whose bodies repeat the request's Authorization header and the key (500: after every retry).
    server.error(400, f"bad request from Authorization: Bearer {CANARY}")
    done = run(["-vv", "ask", q, str(SEED)], server)
    assert done.returncode == 1 and "HTTP 400" in done.stderr
    for _ in range(5):
        server.raw(f"upstream failed; api_key={CANARY}", status=500, content_type="text/plain")
    done = run(["-vv", "ask", q, str(SEED), "--json"], server)
    assert done.returncode == 1 and "HTTP 500" in done.stderr

    # An empty slow reply, re-asked, then the answer; -vv logs every request and reply (timeouts: below).
    server.delay(0.5, None)
    server.reply_json(GOOD)
    done = run(["-vv", "ask", q, str(SEED), "--json"], server)
    assert done.returncode == 0, done.stderr
    assert "DEBUG" in done.stderr  # the openai and HTTP libraries' debug logs were on

    # Bad files.
    (tmp_path / "work" / "bin.txt").write_bytes(b"\x00\x01")
    (tmp_path / "work" / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    for path in ("missing.txt", "bin.txt", "latin1.txt"):
        assert run(["-vv", "ask", q, path], server).returncode == 1

    # qa eval, its JSON report included, with an item that fails with the key echoed back.
    data = tmp_path / "work" / "tiny"
    (data / "docs").mkdir(parents=True)
    for doc_id, text in DOCS.items():
        (data / "docs" / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    (data / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS), encoding="utf-8")
    echo_401(server)
    for _ in ITEMS[1:]:
        server.respond_with(answer_from_prompt)
    done = run(["-vv", "eval", str(data), "--json", "report.json", "--no-progress"], server)
    assert done.returncode == 0, done.stderr
    report = json.loads((tmp_path / "work" / "report.json").read_text(encoding="utf-8"))
    assert report["summary"]["errors"] == 1

    run.assert_no_secret_anywhere()


@pytest.mark.parametrize(
    "script",
    [
        pytest.param(lambda s: echo_401(s), id="401"),
        pytest.param(lambda s: s.error(403, f"key {CANARY} is not allowed"), id="403"),
        pytest.param(lambda s: s.error(404, f"no model for {CANARY}"), id="404"),
        pytest.param(lambda s: [s.error(429, f"slow down {CANARY}") for _ in range(2)], id="429"),
        pytest.param(lambda s: [s.raw(f"Authorization: Bearer {CANARY}", status=502) for _ in range(2)], id="502"),
        pytest.param(lambda s: s.error(500, f"response_format json_schema not supported for {CANARY}"),
                     id="format-rejected"),  # fmt: skip
        pytest.param(lambda s: [s.raw(f'{{"id": "{CANARY}", "choices": [', status=200) for _ in range(2)],
                     id="malformed"),  # fmt: skip
        pytest.param(lambda s: [s.delay(1.0) for _ in range(2)], id="timeout"),
    ],
)
def test_library_errors_and_logs_hold_no_key(
    server: OpenAIServer, seed_doc: qa.Document, caplog: pytest.LogCaptureFixture, script: Any
) -> None:
    script(server)
    settings = qa.Settings(
        base_url=server.base_url, api_key=CANARY, model="m", structured_output="json_schema",
        max_retries=1, retry_initial_wait=0.01, timeout=0.3,
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    with pytest.raises(qa.QAError) as info:
        qa.Index([seed_doc], settings).ask("How many casualties?")
    error = info.value
    shown = error_text(error) + repr(settings)
    assert_clean(shown, "the error")
    assert_clean("\n".join(r.getMessage() for r in caplog.records), "the library's own log records")


def test_redact() -> None:
    key = "sk-proj-abcdefghijklmnop"
    assert redact(f"key {key}!") == "key [redacted]!"
    assert redact("Authorization: Bearer abcdefghijklmnop") == "Authorization: [redacted]"
    assert redact("headers: {'authorization': 'Basic dXNlcjpwYXNz'}") == "headers: {'authorization': '[redacted]'}"
    assert redact('{"api_key": "hunter2hunter2"}') == '{"api_key": "[redacted]"}'
    assert redact("postgresql://app:hunter2@db:5432/x") == "postgresql://app:[redacted]@db:5432/x"
    assert redact("my token is 0123456789abcdef", ["0123456789abcdef"]) == "my token is [redacted]"
    # Ordinary prose stays as it is.
    text = "The risk-averse task-specific model used 640 prompt tokens; basic understanding of passwords."
    assert redact(text) == text
    assert redact_data({"error": {"message": f"bad {key}", "n": 1}}) == {"error": {"message": "bad [redacted]", "n": 1}}


def test_redacting_filter_covers_other_libraries(caplog: pytest.LogCaptureFixture) -> None:
    record = logging.LogRecord("httpx", logging.DEBUG, __file__, 1, "sent %s", (f"Bearer {CANARY}",), None)
    assert RedactingFilter([CANARY]).filter(record)
    assert record.getMessage() == "sent Bearer [redacted]"


def test_settings_hide_secrets() -> None:
    s = qa.Settings(api_key=CANARY, base_url=f"http://user:{PASSWORD}@h/v1", pdf_password=PASSWORD + "pdf")
    assert_clean(repr(s) + str(s), "repr(Settings)")
    assert set(s.secret_values()) == {CANARY, PASSWORD, PASSWORD + "pdf"}
    with pytest.raises(qa.ConfigurationError) as info:
        qa.Settings(api_key=CANARY, base_url=f"http://user:{PASSWORD}@h/v1", top_k=0)
    assert str(info.value) == "invalid settings: top_k should be greater than or equal to 1"
    assert_clean(error_text(info.value), "a settings error")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"chunk_tokens": 16}, "chunk_overlap (32) must be smaller than chunk_tokens (16)"),
        ({"top_k": 0, "timeout": -1}, "top_k should be greater than or equal to 1; timeout should be greater than 0"),
        ({"chunk_size": 3}, "unknown setting 'chunk_size' (every setting is listed in qa.Settings)"),
        ({"chunk_tokens": "many"}, "chunk_tokens should be a valid integer, unable to parse string as an integer"),
    ],
)
def test_configuration_errors_are_one_line_without_values(values: dict[str, Any], message: str) -> None:
    with pytest.raises(qa.ConfigurationError) as info:
        qa.Settings.from_env({"OPENAI_API_KEY": CANARY}, **values)
    assert str(info.value) == f"invalid settings: {message}"
    assert "\n" not in str(info.value) and info.value.__cause__ is None


def test_environment_errors_name_the_variable() -> None:
    with pytest.raises(qa.ConfigurationError, match=r"decline_threshold comes from QA_DECLINE_THRESHOLD\)$"):
        qa.Settings.from_env({"QA_DECLINE_THRESHOLD": "2", "OPENAI_API_KEY": CANARY})

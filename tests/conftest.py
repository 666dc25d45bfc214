"""Shared fixtures: the seed article, a scripted OpenAI-compatible server on 127.0.0.1, and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import qa
from qa.testing import OpenAIServer

ROOT = Path(__file__).resolve().parent.parent
SEED = ROOT / "examples" / "nk_soldiers_kursk.txt"


@pytest.fixture(scope="session")
def seed_text() -> str:
    return SEED.read_text(encoding="utf-8")


@pytest.fixture
def seed_doc(seed_text: str) -> qa.Document:
    return qa.Document(text=seed_text, id="nk_soldiers_kursk.txt")


@pytest.fixture(autouse=True, scope="session")
def _no_response_cache() -> Iterator[None]:
    """Settings.from_env() (the CLI, qa.ask, the local engine's defaults) keeps no response cache and no KV states
    on disk in tests: every test reaches its model. Session-wide, so module fixtures that load the model see it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("QA_CACHE", "0")
        yield


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    with OpenAIServer() as srv:
        yield srv


@pytest.fixture
def settings(server: OpenAIServer) -> qa.Settings:
    return qa.Settings(
        cache=False,
        base_url=server.base_url,
        api_key="sk-test",
        model="gpt-4o-mini",
        retry_initial_wait=0.01,
        retry_max_wait=2.0,
        timeout=5.0,
        retrieval="bm25",  # tests of retrieval by meaning ask for it (tests/test_embed.py)
    )

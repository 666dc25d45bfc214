"""Document text framed as untrusted data for the prompt: markup look-alikes neutralised, a fence it cannot forge.

A document may contain text written to steer the model: "ignore previous instructions", a fake passage
marker "[2] ...", a fake closing tag, or a chat template's special tokens ("<|im_start|>system"), which
llama.cpp would read as real tokens. Before passages reach the prompt, the characters every such marker
needs (< > [ ]) are replaced one for one by their full-width forms (＜ ＞ ［ ］): same meaning to a reader,
but no tag, special token or passage marker can be formed, and every offset stays where it was, so a
quote found in the shown text is at the same offsets in the source. The passages are then wrapped in a
fence named by a hash of their own text: deterministic (the same passages give the same prompt, so a
server can reuse its cache), and not something a document can contain, since it would have to contain
its own hash.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

__all__ = ["FOLDED", "fence", "neutralise"]

_NEUTRAL = str.maketrans({"<": "\uff1c", ">": "\uff1e", "[": "\uff3b", "]": "\uff3d"})
FOLDED: dict[str, str] = {"\uff1c": "<", "\uff1e": ">", "\uff3b": "[", "\uff3d": "]"}
"""The full-width forms back to the characters they stand for (quote matching folds them)."""


def neutralise(text: str) -> str:
    """`text` with < > [ ] replaced by their full-width forms: the same length, offset for offset."""
    return text.translate(_NEUTRAL)


def fence(texts: Iterable[str]) -> str:
    """The name of the tag that frames these passages, e.g. "passages-3fa9c1d2", derived from their text."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return f"passages-{digest.hexdigest()[:8]}"

"""The terms of a text as `BM25Retriever` sees them: lowercased words, stop words out, Snowball stems."""

from __future__ import annotations

import re
import threading

import Stemmer
from bm25s.stopwords import STOPWORDS_EN

__all__ = ["Terms"]

# As bm25s's default tokenizer (and qa.retrieval) reads text: every run of two or more word characters.
_WORD = re.compile(r"\w\w+")
_STOPWORDS = frozenset(STOPWORDS_EN)
# The cache of word -> term is dropped when it grows past this many words (a few hundred MB at most).
_MAX_CACHED = 2_000_000


class Terms:
    """Turns texts into terms; each distinct word is stemmed once (the result is cached)."""

    def __init__(self) -> None:
        self._stemmer = Stemmer.Stemmer("english", 0)
        self._cache: dict[str, str] = {}  # word -> term, "" for a stop word
        self._lock = threading.Lock()  # a Stemmer must not be used by two threads at once

    def of(self, text: str) -> list[str]:
        """The terms of `text` in order, repeats kept (none holds a space: they are words)."""
        return list(filter(None, map(self._cache.__getitem__, self._words(text))))

    def line(self, text: str) -> str:
        """The terms of `text` in order, space-separated."""
        return " ".join(self.of(text))

    def _words(self, text: str) -> list[str]:
        """The words of `text`, each of them in the cache once this returns."""
        words = _WORD.findall(text.lower())
        cache = self._cache
        if len(cache) > _MAX_CACHED:
            cache.clear()
        new = set(words).difference(cache)  # a dict, not its keys view: C looks each word up
        if new:
            kept = [w for w in new if w not in _STOPWORDS]
            with self._lock:
                stems = self._stemmer.stemWords(kept)
            cache.update(dict.fromkeys(new, ""))
            cache.update(zip(kept, stems))
        return words

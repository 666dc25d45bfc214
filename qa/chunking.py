"""Split document text into overlapping chunks of at most N tokens whose offsets index the text exactly."""

from __future__ import annotations

import bisect
import ctypes
import functools
import itertools
import re
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import tiktoken

from qa.errors import ConfigurationError, InputError
from qa.tokens import _pattern

__all__ = ["MIN_CHUNK_TOKENS", "Chunk", "chunk_documents", "chunk_text"]

MIN_CHUNK_TOKENS = 16
"""The smallest `chunk_tokens` accepted."""

# A chunk ends at the best kind of boundary (paragraph > sentence > line > word) that fills at
# least this share of the budget; below that the next kind is tried.
_MIN_FILL = 0.5
# Texts longer than this (characters) are tokenized in pieces on two threads.
_PARALLEL_CHARS = 1 << 20
_THREADS = 2
# chunk_documents tokenizes documents in batches of about this size.
_BATCH_CHARS = 1 << 16
_BATCH_ITEMS = 64
# Sentence ends are looked for in windows of the text; blingfire also sees this many characters
# on each side so that it can judge the sentence ends near a window's edges.
_MARGIN = 24
# How far before (chunk limit - overlap) the first window for a chunk's last sentence end starts.
_LOOK_BACK_TOKENS = 32

_Tokens = npt.NDArray[np.uint32]  # token ids, as tiktoken's encode_to_numpy returns them
_Offsets = npt.NDArray[np.int64]

# Line breaks: the run of blank lines and indentation from a "\n" up to the next visible
# character; group 1 starts right after the run's last "\n".
_BREAK = re.compile(r"\n(?:[^\S\n]*\n)*([^\S\r\n]*)(?=\S)")
_HSPACE_TO_TEXT = re.compile(r"[^\S\r\n]+(?=\S)")
_VISIBLE = re.compile(r"\S")
# Characters after which blingfire may end a sentence; a window without any is not sent to it.
_TERMINATOR = re.compile(
    "[.!?\u2026\u203c\u203d\u2047-\u2049\u0589\u061f\u06d4\u0964\u0965\u1362"
    "\u3002\uff01\uff0e\uff1f\uff61\u2028\u2029]"
)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A contiguous span of one document."""

    document_id: str
    index: int  # position of the chunk within its document, 0-based
    start: int  # character offset in document text
    end: int  # exclusive
    text: str  # == document_text[start:end]
    tokens: int  # token count of text (exact, from the encoding)


def chunk_text(
    text: str,
    *,
    document_id: str,
    encoding: tiktoken.Encoding,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
) -> list[Chunk]:
    """Split `text` into chunks of at most `chunk_tokens` tokens, overlapping by about `overlap_tokens`."""
    _validate(chunk_tokens, overlap_tokens)
    ends = _token_ends_of(text, document_id, encoding, _THREADS)
    return _pack(text, document_id, encoding, ends, chunk_tokens, overlap_tokens)


def chunk_documents(
    items: Sequence[tuple[str, str]],
    *,
    encoding: tiktoken.Encoding,
    chunk_tokens: int = 256,
    overlap_tokens: int = 32,
    num_threads: int = _THREADS,
) -> list[list[Chunk]]:
    """Chunk each (document_id, text) pair, tokenizing on `num_threads` threads; one list per item, in order."""
    _validate(chunk_tokens, overlap_tokens)
    if num_threads <= 1 or len(items) <= 1:
        return [
            chunk_text(
                text,
                document_id=document_id,
                encoding=encoding,
                chunk_tokens=chunk_tokens,
                overlap_tokens=overlap_tokens,
            )
            for document_id, text in items
        ]
    # Tokenizing (tiktoken and numpy, which release the GIL) runs ahead on `num_threads` threads while this
    # thread packs each document's chunks as its tokens arrive: packing is mostly Python, which holds the GIL,
    # so one thread does all of it and the tokenizers run beside it, rather than threads that each do
    # both and wait on each other for the GIL. Small documents go in batches to keep scheduling cheap;
    # at most a few batches are tokenized ahead, which bounds the memory of tokens not yet packed.
    def tokenize(batch: Sequence[tuple[str, str]]) -> list[_Offsets | None]:
        return [_token_ends_of(text, document_id, encoding, num_threads) for document_id, text in batch]

    out: list[list[Chunk]] = []
    batches = iter(_batches(items))
    with ThreadPoolExecutor(max_workers=num_threads) as pool:
        pending = deque((b, pool.submit(tokenize, b)) for b in itertools.islice(batches, 2 * num_threads))
        while pending:
            batch, tokenized = pending.popleft()
            if (following := next(batches, None)) is not None:
                pending.append((following, pool.submit(tokenize, following)))
            for (document_id, text), ends in zip(batch, tokenized.result(), strict=True):
                out.append(_pack(text, document_id, encoding, ends, chunk_tokens, overlap_tokens))
    return out


def _batches(items: Sequence[tuple[str, str]]) -> Iterator[Sequence[tuple[str, str]]]:
    start = size = 0
    for i, (_, text) in enumerate(items):
        size += len(text)
        if size >= _BATCH_CHARS or i + 1 - start >= _BATCH_ITEMS:
            yield items[start : i + 1]
            start, size = i + 1, 0
    if start < len(items):
        yield items[start:]


def _token_ends_of(text: str, document_id: str, encoding: tiktoken.Encoding, threads: int) -> _Offsets | None:
    """Where each token of a document's text ends (see _token_ends); None for text without a visible
    character (it has no chunks)."""
    if not text or text.isspace():
        return None
    return _token_ends(text, _encode(encoding, _checked(text, document_id), threads), encoding)


def _pack(
    text: str,
    document_id: str,
    encoding: tiktoken.Encoding,
    ends: _Offsets | None,
    chunk_tokens: int,
    overlap_tokens: int,
) -> list[Chunk]:
    if ends is None:
        return []
    if len(ends) <= chunk_tokens:
        return [Chunk(document_id, 0, 0, len(text), text, len(ends))]
    return _Chunker(text, document_id, encoding, ends, chunk_tokens, overlap_tokens).run()


def _validate(chunk_tokens: int, overlap_tokens: int) -> None:
    if isinstance(chunk_tokens, bool) or not isinstance(chunk_tokens, int) or chunk_tokens < MIN_CHUNK_TOKENS:
        raise ConfigurationError(f"chunk_tokens must be an integer >= {MIN_CHUNK_TOKENS}, got {chunk_tokens!r}")
    if isinstance(overlap_tokens, bool) or not isinstance(overlap_tokens, int) or overlap_tokens < 0:
        raise ConfigurationError(f"overlap_tokens must be a non-negative integer, got {overlap_tokens!r}")
    if overlap_tokens >= chunk_tokens:
        raise ConfigurationError(
            f"overlap_tokens ({overlap_tokens}) must be smaller than chunk_tokens ({chunk_tokens})"
        )


def _checked(text: str, document_id: str) -> str:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InputError(
                f"document {document_id!r} contains unpaired surrogate code points (at offset {exc.start}); "
                "it was not decoded as UTF-8"
            ) from exc
    return text


# -- where a text may be cut without changing its tokens --------------------------------------
#
# tiktoken first splits text into pieces with a regex, then byte-pair-encodes each piece on its
# own. A cut at offset p is *clean* when encode(t[:p]) + encode(t[p:]) == encode(t): then the
# tokens of any span between clean cuts are exactly the whole text's tokens inside it, so one
# tokenization of the whole text gives every chunk's exact token count. For the cl100k_base /
# o200k_base patterns these offsets are clean (no regex piece can cross them, and no piece
# before them can change when the text is cut there):
#   R1  t[p] == " " and t[p-1] is not whitespace                       ("end. Next" at the space)
#   R2  t[p-1] == "\n" and t[p] is visible and not "/"                 (the start of a line)
#   R2b t[p-1] == "\n" and t[p:] starts with spaces/tabs (no \r or \n) then a visible character
# Offset 0 and len(t) are clean too. tests/test_chunking.py checks this on random text; for any
# other pattern every chunk is re-encoded instead.


def _is_clean(text: str, p: int) -> bool:
    """Whether cutting `text` at `p` leaves tokenization unchanged (rules R1, R2, R2b above)."""
    if p <= 0 or p >= len(text):
        return True
    char, prev = text[p], text[p - 1]
    if char == " ":
        return not prev.isspace()
    if prev == "\n":
        if not char.isspace():
            return char != "/"
        return _HSPACE_TO_TEXT.match(text, p) is not None
    return False


@functools.lru_cache(maxsize=8)
def _additive(encoding: tiktoken.Encoding) -> bool:
    """Whether `encoding` pre-tokenizes with a pattern the clean-cut rules were proven for."""
    return encoding._pat_str in (_pattern("cl100k_base"), _pattern("o200k_base"))


@functools.lru_cache(maxsize=8)
def _token_char_starts(encoding: tiktoken.Encoding) -> npt.NDArray[np.int64]:
    """For every ordinary token id of `encoding`, how many UTF-8 characters start inside its bytes."""
    ranks = encoding._mergeable_ranks
    tokens = list(ranks)
    ids = np.fromiter(ranks.values(), dtype=np.int64, count=len(tokens))
    lengths = np.fromiter(map(len, tokens), dtype=np.int64, count=len(tokens))
    # a byte starts a character unless it is a continuation byte (0b10xxxxxx)
    starts = ((np.frombuffer(b"".join(tokens), dtype=np.uint8) & 0xC0) != 0x80).astype(np.int64)
    table = np.zeros(encoding.n_vocab, dtype=np.int64)
    table[ids] = np.add.reduceat(starts, np.cumsum(lengths) - lengths)
    return table


def _encode_one(encoding: tiktoken.Encoding, text: str) -> _Tokens:
    # encode_ordinary straight into a numpy array, without building a list of Python ints: with no
    # special token allowed and none disallowed, special-token text is encoded as ordinary text.
    return encoding.encode_to_numpy(text, allowed_special=set(), disallowed_special=())


def _encode(encoding: tiktoken.Encoding, text: str, threads: int) -> _Tokens:
    """encode_ordinary(text) as an array; long texts are cut at clean offsets and tokenized on `threads` threads."""
    if threads <= 1 or len(text) <= _PARALLEL_CHARS or not _additive(encoding):
        return _encode_one(encoding, text)
    pieces: list[str] = []
    start = 0
    step = max(_PARALLEL_CHARS // 2, len(text) // (4 * threads))
    while len(text) - start > step:
        p = text.find(" ", start + step)
        while p != -1 and not _is_clean(text, p):
            p = text.find(" ", p + 1)
        if p == -1:
            break
        pieces.append(text[start:p])
        start = p
    pieces.append(text[start:])
    if len(pieces) == 1:
        return _encode_one(encoding, text)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return np.concatenate(list(pool.map(functools.partial(_encode_one, encoding), pieces)))


def _token_ends(text: str, tokens: _Tokens, encoding: tiktoken.Encoding) -> _Offsets:
    """For each token, the first character offset at or after the byte where it ends."""
    # The characters starting in the first k tokens are exactly those before that offset.
    ends = np.cumsum(_token_char_starts(encoding)[tokens])
    if ends.size and ends[-1] != len(text):
        raise RuntimeError("the tokens do not decode to the text they were made from")
    return ends


# -- sentences -----------------------------------------------------------------------------------


@functools.cache
def _sentence_splitter() -> Callable[[bytes], list[int]]:
    """blingfire's sentence splitter, as bytes -> byte offsets of every sentence start but the first."""
    try:
        import blingfire
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ConfigurationError("sentence splitting needs blingfire: pip install 'blingfire>=0.1.8,<0.2'") from exc
    native = getattr(getattr(blingfire, "blingfire", None), "TextToSentencesWithOffsets", None)
    if native is None:  # pragma: no cover - another blingfire layout: its public, slower helper
        public: Callable[[str], tuple[str, list[tuple[int, int]]]] = blingfire.text_to_sentences_and_offsets

        def slow(data: bytes) -> list[int]:
            text = data.decode("utf-8")
            return [len(text[:s].encode("utf-8")) for s, _ in public(text)[1][1:]]

        return slow

    local = threading.local()

    def split(data: bytes) -> list[int]:
        # The call blingfire.text_to_sentences_and_offsets makes, minus its per-byte Python loop
        # (offsets are mapped to characters by the caller) and with buffers reused per thread.
        size = 2 * len(data) + 1
        buffers = getattr(local, "buffers", None)
        if buffers is None or len(buffers[0]) < size:
            capacity = max(size, 4096)
            buffers = local.buffers = (
                ctypes.create_string_buffer(capacity),
                (ctypes.c_int32 * capacity)(),
                (ctypes.c_int32 * capacity)(),
            )
        out, starts, ends = buffers
        written = native(
            ctypes.c_char_p(data),
            ctypes.c_int(len(data)),
            ctypes.byref(out),
            ctypes.byref(starts),
            ctypes.byref(ends),
            ctypes.c_int(size),
        )
        if written <= 0 or written > size:
            return []
        count = ctypes.string_at(out, written).count(b"\n") + 1
        found: list[int] = starts[1:count]
        return found

    return split


# -- the chunker ---------------------------------------------------------------------------------


class _Chunker:
    """Greedy packing of one document; offsets are characters, `t` values are token counts."""

    def __init__(
        self,
        text: str,
        document_id: str,
        encoding: tiktoken.Encoding,
        ends: _Offsets,  # _token_ends of the text
        chunk_tokens: int,
        overlap_tokens: int,
    ) -> None:
        self.text = text
        self.n = len(text)
        self.document_id = document_id
        self.encoding = encoding
        self.additive = _additive(encoding)
        self.budget = chunk_tokens
        self.overlap = overlap_tokens
        self.ends = ends
        self.total = len(ends)
        self.last_visible = len(text.rstrip())
        # Clean line starts, split into paragraph starts (after a blank line) and other lines.
        para: list[int] = []
        lines: list[int] = []
        for m in _BREAK.finditer(text):
            p = m.start(1)
            if p == m.end(1) and text[p] == "/":
                continue
            (para if text.count("\n", m.start(), p) > 1 else lines).append(p)
        self.para, self.lines = para, lines
        # sentence starts found in the last window looked at: (lo, hi, offsets, tokens, clean)
        self.window: tuple[int, int, list[int], list[int], list[bool]] = (0, -1, [], [], [])

    # token arithmetic

    def t(self, p: int) -> int:
        """Tokens of the whole text that end at or before offset `p`."""
        return int(self.ends.searchsorted(p, "right"))

    def at(self, j: int) -> int:
        """The first offset at or after the end of the whole text's first `j` tokens."""
        if j <= 0:
            return 0
        return self.n if j >= self.total else int(self.ends[j - 1])

    def last_before(self, cuts: list[int], limit: int, x_limit: int) -> tuple[int, int]:
        """The last of the sorted offsets `cuts` with at most `limit` tokens before it: (offset, tokens), or (-1, 0)."""
        i = bisect.bisect_right(cuts, x_limit) - 1
        while i >= 0:
            tp = self.t(cuts[i])
            if tp <= limit:
                return cuts[i], tp
            i -= 1
        return -1, 0

    def count(self, a: int, a_clean: bool, ta: int, b: int, b_clean: bool, tb: int) -> int:
        """Exact token count of text[a:b]."""
        if self.additive and a_clean and b_clean:
            return tb - ta
        return len(self.encoding.encode_ordinary(self.text[a:b]))

    # sentences

    def sentence_cuts(self, lo: int, hi: int) -> tuple[list[int], list[int], list[bool]]:
        """Cuts before the sentences that start in [lo, hi]: (offsets, whole-text tokens before, clean)."""
        wlo, whi, pos, ts, clean = self.window
        if not (wlo <= lo and hi <= whi):
            pos, ts, clean = self._split(lo, hi)
            self.window = (lo, hi, pos, ts, clean)
            return pos, ts, clean
        i, j = bisect.bisect_left(pos, lo), bisect.bisect_right(pos, hi)
        return pos[i:j], ts[i:j], clean[i:j]

    def _split(self, lo: int, hi: int) -> tuple[list[int], list[int], list[bool]]:
        text = self.text
        x0, x1 = max(0, lo - _MARGIN), min(self.n, hi + _MARGIN)
        if _TERMINATOR.search(text, x0, x1) is None:
            return [], [], []
        piece = text[x0:x1]
        data = piece.encode("utf-8")
        offsets = _sentence_splitter()(data)
        if not offsets:
            return [], [], []
        if not piece.isascii():
            offsets = [o for o in offsets if 0 < o < len(data)]
            lead = np.cumsum((np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80)
            offsets = (lead[np.array(offsets, dtype=np.int64)] - 1).tolist()
        pos: list[int] = []
        clean: list[bool] = []
        last = lo - 1
        for rel in offsets:
            s = x0 + rel
            if s < lo or s > hi:
                continue  # too close to where the window cuts the text for blingfire to judge
            if s >= 2 and text[s - 1] == " " and not text[s - 2].isspace():
                cut, ok = s - 1, True  # the common "end. Next" case: rule R1
            else:
                r = s
                while r > 0 and text[r - 1].isspace():
                    r -= 1
                if r == 0:
                    continue
                newline = text.rfind("\n", r, s)
                if newline != -1:
                    cut = newline + 1
                elif r < s and text[r] == " ":
                    cut = r
                else:
                    cut = s  # e.g. no space after the full stop (CJK): counted by re-encoding
                ok = _is_clean(text, cut)
            if cut > last:
                pos.append(cut)
                clean.append(ok)
                last = cut
        return pos, self.ends.searchsorted(pos, "right").tolist(), clean

    # the two choices

    def chunk_end(self, a: int, a_clean: bool, ta: int, ca: int) -> tuple[int, bool, int, int] | None:
        """Where a chunk starting at `a` ends: (offset, clean, whole-text tokens before it, exact tokens).

        None when not even the first visible character fits after the whitespace from `a`.
        """
        budget = self.budget
        limit = ta + budget
        if self.total - ta <= budget:
            exact = self.count(a, a_clean, ta, self.n, True, self.total)
            if exact <= budget:
                return self.n, True, self.total, exact
        fill = ta + max(1, int(budget * _MIN_FILL))
        fallback: list[tuple[int, bool, int]] = []

        def fits(b: int, b_clean: bool, tb: int) -> int | None:
            exact = self.count(a, a_clean, ta, b, b_clean, tb)
            return exact if exact <= budget else None

        # the last paragraph end before the limit, if it fills half the budget
        x_limit = self.at(limit)
        b, tb = self.last_before(self.para, limit, x_limit)
        if b > ca:
            if tb >= fill and (fit := fits(b, True, tb)) is not None:
                return b, True, tb, fit
            fallback.append((b, True, tb))
        # else the last sentence end: look just before the limit first, then back to half the budget
        near = max(fill, limit - self.overlap - _LOOK_BACK_TOKENS)
        for lo_t, hi in ((near, x_limit), (fill, self.at(near))):
            pos, ts, cl = self.sentence_cuts(self.at(lo_t), hi)
            k = bisect.bisect_right(ts, limit) - 1
            while k >= 0 and pos[k] > ca and ts[k] >= fill:
                if (fit := fits(pos[k], cl[k], ts[k])) is not None:
                    return pos[k], cl[k], ts[k], fit
                k -= 1  # an unclean cut that re-encoded too long: try the one before
            if near <= fill:
                break
        # else the last line end
        b, tb = self.last_before(self.lines, limit, x_limit)
        if b > ca:
            if tb >= fill and (fit := fits(b, True, tb)) is not None:
                return b, True, tb, fit
            fallback.append((b, True, tb))
        # else the last clean space
        text = self.text
        p = text.rfind(" ", ca + 1, min(x_limit, self.n - 1) + 1)
        while p > ca:
            if not text[p - 1].isspace():
                tp = self.t(p)
                if tp <= limit and (fit := fits(p, True, tp)) is not None:
                    return p, True, tp, fit
            p = text.rfind(" ", ca + 1, p)
        for b, b_clean, tb in sorted(fallback, reverse=True):
            if (fit := fits(b, b_clean, tb)) is not None:
                return b, b_clean, tb, fit
        # no usable boundary: cut between tokens (at a character boundary), re-encoding to be exact
        j = limit
        while True:
            b = min(max(self.at(j), ca + 1), self.n)
            exact = self.count(a, False, ta, b, False, 0)
            if exact <= budget:
                return b, _is_clean(text, b), self.t(b), exact
            if b == ca + 1:
                return None
            j = min(j, self.t(b)) - max(1, exact - budget)

    def next_start(self, a: int, b: int, b_clean: bool, tb: int) -> tuple[int, bool, int]:
        """Where the chunk after [a, b) starts so that the two overlap by about `overlap` tokens."""
        if self.overlap == 0:
            return b, b_clean, tb
        target = tb - self.overlap
        x = max(self.at(target), a + 1)
        # the earliest sentence or paragraph start in the last `overlap` tokens
        sentence: tuple[int, bool, int] | None = None
        pos, ts, cl = self.sentence_cuts(x, b)
        k = bisect.bisect_left(ts, target)
        while k < len(pos) and pos[k] <= a:
            k += 1
        if k < len(pos) and pos[k] < b:
            sentence = pos[k], cl[k], ts[k]
        i = bisect.bisect_left(self.para, x)
        while i < len(self.para) and self.para[i] < b and (sentence is None or self.para[i] < sentence[0]):
            tp = self.t(self.para[i])
            if tp >= target:
                sentence = self.para[i], True, tp
                break
            i += 1
        if sentence is not None and tb - sentence[2] >= max(1, self.overlap // 2):
            return sentence
        # else the first clean space in them
        text = self.text
        p = text.find(" ", x, b)
        while p != -1:
            if not text[p - 1].isspace():
                tp = self.t(p)
                if tp < tb:
                    return p, True, tp
                break
            p = text.find(" ", p + 1, b)
        if sentence is not None:
            return sentence
        if x < b:
            return x, _is_clean(text, x), self.t(x)
        return b, b_clean, tb

    def run(self) -> list[Chunk]:
        """Chunk the whole text."""
        chunks: list[Chunk] = []
        text, doc = self.text, self.document_id
        visible = _VISIBLE.search
        a, a_clean, ta = 0, True, 0
        previous = (0, True, 0)  # where the last chunk ended: offset, clean, tokens before
        while True:
            m = visible(text, a)
            ca = m.start() if m else self.n
            if self.t(ca) - ta > self.budget // 2:  # a long run of whitespace: skip most of it
                a, a_clean, ta = ca, _is_clean(text, ca), self.t(ca)
            end = self.chunk_end(a, a_clean, ta, ca)
            if end is None:  # whitespace before the first character still too long: skip it all
                if a == ca:
                    raise AssertionError("unreachable: one character never exceeds the token budget")
                a, a_clean, ta = ca, _is_clean(text, ca), self.t(ca)
                continue
            b, b_clean, tb, exact = end
            if chunks and b <= previous[0]:
                # the overlap left no room to move forward: start where the last chunk ended
                a, a_clean, ta = previous
                continue
            chunks.append(Chunk(doc, len(chunks), a, b, text[a:b], exact))
            if b >= self.last_visible:
                return chunks
            previous = (b, b_clean, tb)
            a, a_clean, ta = self.next_start(a, b, b_clean, tb)

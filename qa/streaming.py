"""Streaming and batches: the events `Index.stream` yields, the answer text read from partial JSON, and `ask_many`.

A stream shows the answer as the model writes it (`TextDelta`), read out of the partial JSON reply with jiter's
partial mode; it never shows a citation, since quotes are only trusted once verified, which needs the whole reply.
If the reply is rejected and the model is asked again, or the verified answer differs from the text shown, a
`Retraction` says the text so far is withdrawn; the stream always ends with `Final`, carrying the verified Answer.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jiter

from qa.answer import Answer
from qa.errors import QAError
from qa.llm import LLM, LLMRequest, LLMResponse
from qa.progress import Progress

if TYPE_CHECKING:
    from qa.pipeline import Flow

__all__ = [
    "Final", "Retraction", "StreamEvent", "TextDelta", "apieces", "arun_many", "astream_flow", "pieces", "run_many",
    "stream_flow",
]  # fmt: skip

logger = logging.getLogger("qa")


@dataclass(frozen=True, slots=True)
class TextDelta:
    """More of the answer's text, as the model writes it (not yet verified)."""

    text: str


@dataclass(frozen=True, slots=True)
class Retraction:
    """The text streamed so far is withdrawn: the model is asked again, or the verified answer differs."""

    reason: str


@dataclass(frozen=True, slots=True)
class Final:
    """The verified answer; always the last event."""

    answer: Answer[Any]


StreamEvent = TextDelta | Retraction | Final


class _AnswerText:
    """Reads the "answer" string out of a growing JSON reply, {"result": {"answer": "...", ...}}."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.shown = ""

    def feed(self, text: str) -> str:
        """Add reply text; returns the answer text that became known (empty when none)."""
        self.buffer += text.encode("utf-8")
        start = self.buffer.find(b"{")
        if start < 0:
            return ""
        try:
            data = jiter.from_json(bytes(self.buffer[start:]), partial_mode="trailing-strings")
        except ValueError:
            return ""
        result = data.get("result") if isinstance(data, dict) else None
        answer = result.get("answer") if isinstance(result, dict) else None
        if not isinstance(answer, str) or not answer.startswith(self.shown) or len(answer) == len(self.shown):
            return ""
        delta, self.shown = answer[len(self.shown) :], answer
        return delta


def pieces(llm: LLM, request: LLMRequest) -> Iterator[str | LLMResponse]:
    stream = getattr(llm, "stream", None)
    if stream is None:  # an LLM that cannot stream answers in one piece
        reply = llm.complete(request)
        yield reply.content
        yield reply
        return
    yield from stream(request)


async def apieces(llm: LLM, request: LLMRequest) -> AsyncIterator[str | LLMResponse]:
    astream = getattr(llm, "astream", None)
    if astream is None:
        reply = await llm.acomplete(request)
        yield reply.content
        yield reply
        return
    async for piece in astream(request):
        yield piece


class _Driver:
    """The state shared by the sync and async stream shells: what was shown, and what to say at each step."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.text = _AnswerText()
        self.shown = ""  # answer text shown since the last retraction
        self.answer: Answer[Any] | None = None

    def start(self) -> LLMRequest | None:
        try:
            return next(self.flow)
        except StopIteration as done:
            self.answer = done.value
            return None

    def piece(self, piece: str) -> TextDelta | None:
        if delta := self.text.feed(piece):
            self.shown += delta
            return TextDelta(delta)
        return None

    def reply(self, reply: LLMResponse) -> tuple[LLMRequest | None, Retraction | None]:
        """Send the reply into the flow: the next request (a re-ask) or None at the end, and any retraction."""
        self.text = _AnswerText()
        try:
            request = self.flow.send(reply)
        except StopIteration as done:
            self.answer = done.value
            return None, None
        retraction = Retraction("the reply was rejected; asking the model again") if self.shown else None
        self.shown = ""
        return request, retraction

    def end(self) -> list[StreamEvent]:
        assert self.answer is not None
        final = self.answer.answer if isinstance(self.answer.answer, str) and self.answer.found else None
        events: list[StreamEvent] = []
        if self.shown and final != self.shown:
            reason = "the answer was withheld" if final is None else "the verified answer differs"
            events.append(Retraction(reason))
        events.append(Final(self.answer))
        return events


def stream_flow(flow: Flow, llm: LLM) -> Iterator[StreamEvent]:
    """Drive `flow` with a streaming LLM, yielding answer text, retractions and the final Answer."""
    driver = _Driver(flow)
    request = driver.start()
    while request is not None:
        reply: LLMResponse | None = None
        for piece in pieces(llm, request):
            if isinstance(piece, LLMResponse):
                reply = piece
            elif event := driver.piece(piece):
                yield event
        assert reply is not None
        request, retraction = driver.reply(reply)
        if retraction is not None:
            yield retraction
    yield from driver.end()


async def astream_flow(flow: Flow, llm: LLM) -> AsyncIterator[StreamEvent]:
    """Async `stream_flow`."""
    driver = _Driver(flow)
    request = driver.start()
    while request is not None:
        reply: LLMResponse | None = None
        async for piece in apieces(llm, request):
            if isinstance(piece, LLMResponse):
                reply = piece
            elif event := driver.piece(piece):
                yield event
        assert reply is not None
        request, retraction = driver.reply(reply)
        if retraction is not None:
            yield retraction
    for last in driver.end():
        yield last


# --- batches --------------------------------------------------------------------------------------------

def run_many(
    ask: Callable[[str], Answer[Any]], questions: list[str], concurrency: int, progress: Progress | None
) -> list[Answer[Any] | QAError]:
    """Answer every question with up to `concurrency` at once; results in input order, a QAError in place of a
    question that failed."""
    results: list[Answer[Any] | QAError | None] = [None] * len(questions)
    done = 0
    counting = threading.Lock()

    def one(i: int) -> None:
        nonlocal done
        try:
            results[i] = ask(questions[i])
        except QAError as exc:
            logger.info("question %d failed: %s", i + 1, exc)
            results[i] = exc
        with counting:
            done += 1
            if progress is not None:
                progress(done, len(questions))

    if concurrency <= 1 or len(questions) <= 1:
        for i in range(len(questions)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="qa-ask") as pool:
            list(pool.map(one, range(len(questions))))
    return [r for r in results if r is not None]


async def arun_many(
    aask: Callable[[str], Any], questions: list[str], concurrency: int, progress: Progress | None
) -> list[Answer[Any] | QAError]:
    """Async `run_many`: up to `concurrency` questions in flight on the event loop."""
    gate = asyncio.Semaphore(max(concurrency, 1))
    done = 0

    async def one(question: str) -> Answer[Any] | QAError:
        nonlocal done
        async with gate:
            try:
                result: Answer[Any] | QAError = await aask(question)
            except QAError as exc:
                logger.info("question %r failed: %s", question, exc)
                result = exc
        done += 1
        if progress is not None:
            progress(done, len(questions))
        return result

    return list(await asyncio.gather(*(one(q) for q in questions)))

"""A real, scripted, OpenAI-compatible HTTP server on 127.0.0.1 for tests of code that calls an LLM.

Example::

    import openai
    from qa.testing import OpenAIServer

    def test_answer() -> None:
        with OpenAIServer() as server:
            server.reply("Paris", prompt_tokens=12, completion_tokens=1)
            server.error(429, headers={"Retry-After": "1"})
            with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0) as client:
                out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "?"}])
                assert out.choices[0].message.content == "Paris"
            assert server.requests[0]["messages"][0]["content"] == "?"

Every POST to ``/v1/chat/completions`` takes the next scripted reply from a FIFO queue; when the queue
is empty the server answers HTTP 500 with an error body saying the script ran out, and records that in
``server.problems``. ``GET /v1/models`` lists one model. ``POST /v1/embeddings`` answers every input with a
deterministic bag-of-words vector (words hashed into ``embedding_dimensions`` signed buckets, normalised, so texts
that share words are near), counts one token per word, rejects an input of more than ``embedding_max_tokens``
words with HTTP 400 as OpenAI does, and first takes any error scripted with ``embedding_error``; its requests are
recorded in ``embedding_requests``. The server uses the standard library only
(``http.server``), speaks HTTP/1.1 with keep-alive, and stops quickly even while a reply is delayed.
"""

from __future__ import annotations

import base64
import hashlib
import http
import itertools
import json
import logging
import re
import socket
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, TypeAlias, cast

from qa.llm import LLMRequest, LLMResponse

__all__ = [
    "Delayed",
    "Dynamic",
    "ErrorReply",
    "FakeLLM",
    "OpenAIServer",
    "Raw",
    "Reply",
    "Scripted",
    "Truncated",
]

log = logging.getLogger(__name__)

_CHAT_PATH = "/v1/chat/completions"
_EMBEDDINGS_PATH = "/v1/embeddings"
_WORD = re.compile(r"\w+")
_MODELS_PATH = "/v1/models"
_JOIN_TIMEOUT = 2.0


# --------------------------------------------------------------------------- scripted replies


@dataclass(frozen=True)
class Reply:
    """A successful ``chat.completion`` whose single choice carries ``content``."""

    content: str
    prompt_tokens: int = 10
    completion_tokens: int = 5
    finish_reason: str = "stop"
    model: str | None = None  # None: echo the request's model
    logprobs: list[dict[str, Any]] | None = None  # the choice's logprobs.content (ChatCompletionTokenLogprob dicts)

    @classmethod
    def json(
        cls,
        obj: Any,
        *,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        finish_reason: str = "stop",
        model: str | None = None,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> Reply:
        """Build a reply whose content is ``json.dumps(obj)``."""
        return cls(json.dumps(obj), prompt_tokens, completion_tokens, finish_reason, model, logprobs)


@dataclass(frozen=True)
class ErrorReply:
    """An HTTP error; the body is OpenAI-style unless ``body`` is given (str/bytes are sent raw)."""

    status: int
    message: str | None = None  # None: a default message for the status
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None


@dataclass(frozen=True)
class Delayed:
    """Sleep ``seconds`` (woken early by server shutdown), then answer with ``then`` (None: ``Reply("")``)."""

    seconds: float
    then: Scripted | None = None


@dataclass(frozen=True)
class Truncated:
    """A 200 whose headers announce the full body but only its first half is sent before closing."""

    content: str


@dataclass(frozen=True)
class Raw:
    """A complete response with exactly this body (e.g. cut-off JSON sent with a correct Content-Length)."""

    body: str | bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True)
class Dynamic:
    """A reply computed from the request JSON; ``fn`` returns a scripted reply or a plain ``str``."""

    fn: Callable[[dict[str, Any]], Scripted | str]


Scripted: TypeAlias = Reply | ErrorReply | Delayed | Truncated | Raw | Dynamic
"""Anything the server can be scripted to answer with."""

_SCRIPTED = (Reply, ErrorReply, Delayed, Truncated, Raw, Dynamic)


_DEFAULT_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    422: ("invalid_request_error", None, "Unprocessable entity."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout."),
}


def _error_body(status: int, message: str | None, code: str | None = None) -> dict[str, Any]:
    """The OpenAI-style ``{"error": {...}}`` body for ``status``."""
    default_type, default_code, default_message = _DEFAULT_ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, _phrase(status)),
    )
    return {
        "error": {
            "message": default_message if message is None else message,
            "type": default_type,
            "param": None,
            "code": default_code if code is None else code,
        }
    }


def _phrase(status: int) -> str:
    """The standard reason phrase of ``status``, or a generic one."""
    try:
        return http.HTTPStatus(status).phrase + "."
    except ValueError:
        return f"HTTP {status}."


# --------------------------------------------------------------------------- HTTP plumbing


class _HTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that tracks its connections so it can close them on shutdown."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = False
    request_queue_size = 128  # the default 5 drops SYNs of concurrent clients: 1 s retransmit stalls

    def __init__(self, owner: OpenAIServer) -> None:
        self.owner = owner
        self.conn_lock = threading.Lock()
        self.connections: dict[threading.Thread, socket.socket] = {}
        super().__init__(("127.0.0.1", 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve one connection in a tracked daemon thread."""
        thread = threading.Thread(
            target=self.process_request_thread,
            args=(request, client_address),
            name=f"qa-openai-server-conn-{client_address[1]}",
            daemon=True,
        )
        with self.conn_lock:
            self.connections[thread] = cast(socket.socket, request)
        thread.start()

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Serve the connection, then forget it."""
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self.conn_lock:
                self.connections.pop(threading.current_thread(), None)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Record an unexpected handler failure in `problems` instead of printing a traceback."""
        exc = sys.exc_info()[1]
        log.debug("qa.testing handler failed for %s", client_address, exc_info=True)
        if not isinstance(exc, OSError):  # a client hanging up is not a problem
            self.owner._record_problem(f"request handler crashed: {exc!r}")

    def close_connections(self) -> None:
        """Shut down every open connection socket and wait briefly for its thread."""
        with self.conn_lock:
            items = list(self.connections.items())
        for _, sock in items:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + _JOIN_TIMEOUT
        for thread, _ in items:
            thread.join(max(0.0, deadline - time.monotonic()))


class _Handler(BaseHTTPRequestHandler):
    """Serves the OpenAI endpoints from the owning server's script."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid 40 ms delayed-ACK stalls
    server_version = "qa-testing-openai/1.0"

    @property
    def owner(self) -> OpenAIServer:
        """The `OpenAIServer` this handler answers for."""
        return cast(_HTTPServer, self.server).owner

    def log_message(self, format: str, *args: Any) -> None:
        """Log through `logging` at debug level rather than to stderr."""
        log.debug("qa.testing: " + format, *args)

    # ------------------------------------------------------------ methods

    def do_GET(self) -> None:
        """Answer ``GET /v1/models``; 404 for anything else."""
        path = self.path.split("?", 1)[0].rstrip("/")
        self._read_body()
        if path == _MODELS_PATH:
            model = {"id": self.owner.model, "object": "model", "created": 0, "owned_by": "qa-testing"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._not_found(path)

    def do_POST(self) -> None:
        """Answer ``POST /v1/chat/completions`` with the next scripted reply."""
        path = self.path.split("?", 1)[0].rstrip("/")
        raw = self._read_body()
        if raw is None:
            return
        if path not in (_CHAT_PATH, _EMBEDDINGS_PATH):
            self._not_found(path)
            return
        try:
            request = json.loads(raw)
            problem = "" if isinstance(request, dict) else "request body is not a JSON object"
        except ValueError as exc:
            request, problem = None, f"request body is not JSON: {exc}"
        if not isinstance(request, dict):
            self.owner._record_problem(problem)
            self._send_json(400, _error_body(400, f"qa.testing.OpenAIServer: {problem}"))
            return
        headers = {key.lower(): value for key, value in self.headers.items()}
        if path == _EMBEDDINGS_PATH:
            self._embeddings(request, headers)
            return
        number, item = self.owner._take(request, headers)
        if item is None:
            message = (
                f"qa.testing.OpenAIServer: the script ran out - no scripted reply left for request "
                f"#{number} (POST {_CHAT_PATH}); script more replies with server.reply(...)"
            )
            self._send_json(500, _error_body(500, message, code="script_exhausted"))
            return
        self._answer(item, request)

    def do_PUT(self) -> None:
        """Reject other methods with an OpenAI-style 405."""
        self._read_body()
        self._send_json(405, _error_body(405, f"Method {self.command} not allowed."))

    do_DELETE = do_PUT
    do_PATCH = do_PUT

    # ------------------------------------------------------------ scripted answers

    def _answer(self, item: Scripted | str, request: dict[str, Any]) -> None:
        """Send ``item`` (resolving dynamic and delayed replies) as the response to ``request``."""
        if isinstance(item, str):
            item = Reply(item)
        if isinstance(item, Dynamic):
            try:
                result = item.fn(request)
                problem = "" if isinstance(result, (str, *_SCRIPTED)) else f"respond_with function returned {result!r}"
            except Exception as exc:  # the test's function failed: show it to the client and the test
                problem = f"respond_with function raised {exc!r}"
            if problem:
                self.owner._record_problem(problem)
                self._send_json(500, _error_body(500, f"qa.testing.OpenAIServer: {problem}", code="respond_with_failed"))
                return
            self._answer(result, request)
        elif isinstance(item, Delayed):
            if self.owner._stop_event.wait(item.seconds):
                self.close_connection = True  # shutting down: drop the connection unanswered
                return
            self._answer(Reply("") if item.then is None else item.then, request)
        elif isinstance(item, Reply):
            if request.get("stream"):
                self._send_stream(item, request)
            else:
                self._send_json(200, self._completion(item, request))
        elif isinstance(item, ErrorReply):
            if item.body is None:
                body: Any = _error_body(item.status, item.message)
            else:
                body = item.body
            if isinstance(body, (str, bytes)):
                data = body.encode("utf-8") if isinstance(body, str) else body
                self._send(item.status, data, "text/plain; charset=utf-8", item.headers)
            else:
                self._send_json(item.status, body, item.headers)
        elif isinstance(item, Truncated):
            data = json.dumps(self._completion(Reply(item.content), request)).encode("utf-8")
            self._send(200, data, "application/json", {}, cut=max(1, len(data) // 2))
        elif isinstance(item, Raw):
            data = item.body.encode("utf-8") if isinstance(item.body, str) else item.body
            self._send(item.status, data, item.content_type, item.headers)
        else:  # pragma: no cover - guarded by the types
            raise TypeError(f"cannot answer with {item!r}")

    def _embeddings(self, request: dict[str, Any], headers: dict[str, str]) -> None:
        """Answer ``POST /v1/embeddings``: a scripted error if one is queued, else a vector per input."""
        owner = self.owner
        error = owner._take_embedding(request, headers)
        if error is not None:
            self._answer(error, request)
            return
        inputs = request.get("input")
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            self._send_json(400, _error_body(400, "'input' must be a string or a non-empty list of strings."))
            return
        counts = [len(_WORD.findall(t)) for t in texts]
        for i, n in enumerate(counts):
            if n > owner.embedding_max_tokens:
                message = (
                    f"This model's maximum context length is {owner.embedding_max_tokens} tokens, however you "
                    f"requested {n} tokens in input {i}. Please reduce your prompt."
                )
                self._send_json(400, _error_body(400, message, code="context_length_exceeded"))
                return
        base64_format = request.get("encoding_format") == "base64"
        data = []
        for i, text in enumerate(texts):
            vector = owner.embedding_vector(text)
            encoded: Any = (
                base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii") if base64_format else vector
            )
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        model = request.get("model") if isinstance(request.get("model"), str) else owner.model
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        self._send_json(200, {"object": "list", "data": data, "model": model, "usage": usage})

    def _completion(self, reply: Reply, request: dict[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` JSON for ``reply``."""
        model = reply.model
        if model is None:
            requested = request.get("model")
            model = requested if isinstance(requested, str) else self.owner.model
        return {
            "id": f"chatcmpl-qa{next(self.owner._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content, "refusal": None},
                    "logprobs": None if reply.logprobs is None else {"content": reply.logprobs, "refusal": None},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
            "system_fingerprint": None,
        }

    def _send_stream(self, reply: Reply, request: dict[str, Any]) -> None:
        """Send ``reply`` as server-sent ``chat.completion.chunk`` events, a few characters each, as OpenAI streams."""
        whole = self._completion(reply, request)
        base = {key: whole[key] for key in ("id", "created", "model", "system_fingerprint")}
        base["object"] = "chat.completion.chunk"
        text = reply.content
        step = max(1, self.owner.stream_chunk_chars)
        pieces = [text[i : i + step] for i in range(0, len(text), step)] or [""]
        events = [
            {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": pieces[0]} if i == 0
                                  else {"content": piece}, "logprobs": None, "finish_reason": None}]}
            for i, piece in enumerate(pieces)
        ]  # fmt: skip
        choice = whole["choices"][0]
        events.append({**base, "choices": [{"index": 0, "delta": {}, "logprobs": choice["logprobs"],
                                            "finish_reason": choice["finish_reason"]}]})  # fmt: skip
        if (request.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "choices": [], "usage": whole["usage"]})
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("x-request-id", f"req_qa{next(self.owner._ids)}")
            self.send_header("Connection", "close")
            self.end_headers()
            for event in events:
                self.wfile.write(b"data: " + json.dumps(event).encode("utf-8") + b"\n\n")
                self.wfile.flush()
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    # ------------------------------------------------------------ low level I/O

    def _read_body(self) -> bytes | None:
        """Read the request body (Content-Length or chunked); None if the client went away."""
        try:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks: list[bytes] = []
                while True:
                    size_line = self.rfile.readline(65537)
                    if not size_line:
                        raise ConnectionError("client closed mid-body")
                    size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline(65537)  # CRLF after the chunk
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length > 0 else b""
            if len(data) < length:
                raise ConnectionError("client closed mid-body")
            return data
        except (OSError, ValueError):
            self.close_connection = True
            return None

    def _not_found(self, path: str) -> None:
        """Record and answer a request to an unknown path."""
        self.owner._record_problem(f"unknown path: {self.command} {path}")
        self._send_json(404, _error_body(404, f"Unknown path {self.command} {path}.", code="unknown_url"))

    def _send_json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        """Send ``obj`` as a JSON response."""
        self._send(status, json.dumps(obj).encode("utf-8"), "application/json", headers or {})

    def _send(
        self, status: int, data: bytes, content_type: str, headers: dict[str, str], *, cut: int | None = None
    ) -> None:
        """Send a complete response (or, with ``cut``, only ``data[:cut]`` and then close)."""
        merged = {"Content-Type": content_type, "x-request-id": f"req_qa{next(self.owner._ids)}"}
        lowered = {key.lower() for key in headers}
        merged = {key: value for key, value in merged.items() if key.lower() not in lowered}
        merged.update(headers)
        try:
            self.send_response(status)
            for key, value in merged.items():
                if key.lower() != "content-length":
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data if cut is None else data[:cut])
            self.wfile.flush()
        except OSError:  # the client went away (e.g. it timed out): nothing left to do
            self.close_connection = True
            return
        if cut is not None:
            self.close_connection = True


# --------------------------------------------------------------------------- the public server


class OpenAIServer:
    """A scripted OpenAI-compatible server on 127.0.0.1; use as ``with OpenAIServer() as server:``."""

    def __init__(
        self, *, model: str = "test-model", embedding_dimensions: int = 64, embedding_max_tokens: int = 512
    ) -> None:
        """Prepare (but do not start) a server whose default model name is ``model``."""
        self.model = model
        self.embedding_dimensions = embedding_dimensions
        self.embedding_max_tokens = embedding_max_tokens
        self.embedding_requests: list[dict[str, Any]] = []
        """Every embeddings request body received, parsed, in order."""
        self._embedding_errors: deque[ErrorReply | Delayed] = deque()
        self.requests: list[dict[str, Any]] = []
        """Every chat-completion request body received, parsed, in order."""
        self.request_headers: list[dict[str, str]] = []
        """The headers of each request in `requests` (same index), keys lower-cased."""
        self.problems: list[str] = []
        """Server-side problems seen (script ran out, non-JSON body, unknown path...), in order."""
        self.stream_chunk_chars = 4
        """Characters of reply text per server-sent event when a request asks for stream=true."""
        self._lock = threading.Lock()
        self._script: deque[Scripted] = deque()
        self._ids = itertools.count(1)
        self._stop_event = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._port: int | None = None

    # ------------------------------------------------------------ lifecycle

    def start(self) -> OpenAIServer:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None or self._stop_event.is_set():
            raise RuntimeError("an OpenAIServer can be started only once")
        self._httpd = _HTTPServer(self)
        self._port = int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},  # how fast stop() is noticed
            name=f"qa-openai-server-{self._port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and wait (briefly) for every thread; idempotent."""
        httpd, thread = self._httpd, self._thread
        self._stop_event.set()
        if httpd is None or thread is None:
            return
        self._httpd = self._thread = None
        httpd.shutdown()
        httpd.close_connections()
        httpd.server_close()
        thread.join(_JOIN_TIMEOUT)

    def __enter__(self) -> OpenAIServer:
        """Start the server."""
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the server."""
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on."""
        if self._port is None:
            raise RuntimeError("the OpenAIServer is not started; use `with OpenAIServer() as server:`")
        return self._port

    @property
    def base_url(self) -> str:
        """The URL to give an OpenAI client, like ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    # ------------------------------------------------------------ scripting

    def enqueue(self, item: Scripted) -> None:
        """Append any scripted reply to the end of the queue."""
        if not isinstance(item, _SCRIPTED):
            raise TypeError(f"not a scripted reply: {item!r}")
        with self._lock:
            self._script.append(item)

    def reply(
        self,
        content: str,
        *,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        finish_reason: str = "stop",
        model: str | None = None,
        delay: float = 0.0,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Script a successful completion with ``content`` (after ``delay`` seconds if given)."""
        item: Scripted = Reply(content, prompt_tokens, completion_tokens, finish_reason, model, logprobs)
        self.enqueue(Delayed(delay, item) if delay > 0 else item)

    def reply_json(
        self,
        obj: Any,
        *,
        prompt_tokens: int = 10,
        completion_tokens: int = 5,
        finish_reason: str = "stop",
        model: str | None = None,
        delay: float = 0.0,
        logprobs: list[dict[str, Any]] | None = None,
    ) -> None:
        """Script a successful completion whose content is ``json.dumps(obj)``."""
        self.reply(
            json.dumps(obj),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            finish_reason=finish_reason,
            model=model,
            delay=delay,
            logprobs=logprobs,
        )

    def error(
        self,
        status: int,
        message: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        body: Any = None,
    ) -> None:
        """Script an HTTP error with an OpenAI-style body (or ``body``: JSON-able, or str/bytes sent raw)."""
        self.enqueue(ErrorReply(status, message, dict(headers or {}), body))

    def embedding_error(
        self, status: int, message: str | None = None, *, headers: dict[str, str] | None = None, delay: float = 0.0
    ) -> None:
        """Script an HTTP error for the next ``/v1/embeddings`` request (after ``delay`` seconds if given)."""
        item = ErrorReply(status, message, dict(headers or {}))
        with self._lock:
            self._embedding_errors.append(Delayed(delay, item) if delay > 0 else item)

    def embedding_vector(self, text: str) -> list[float]:
        """The vector ``/v1/embeddings`` returns for ``text``: its words hashed into signed buckets, normalised."""
        vector = [0.0] * self.embedding_dimensions
        for word in _WORD.findall(text.lower()):
            digest = hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest()
            bucket = int.from_bytes(digest[:4], "little") % self.embedding_dimensions
            vector[bucket] += 1.0 if digest[4] & 1 else -1.0
        norm = sum(v * v for v in vector) ** 0.5 or 1.0
        return [v / norm for v in vector]

    def delay(self, seconds: float, then: Scripted | None = None) -> None:
        """Script a reply that waits ``seconds`` before answering with ``then`` (None: an empty reply)."""
        self.enqueue(Delayed(seconds, then))

    def truncated(self, content: str) -> None:
        """Script a completion cut mid-body: full Content-Length, half the bytes, then the connection closes."""
        self.enqueue(Truncated(content))

    def raw(
        self,
        body: str | bytes,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Script a complete response with exactly ``body`` (e.g. invalid or cut-off JSON)."""
        self.enqueue(Raw(body, status, dict(headers or {}), content_type))

    def respond_with(self, fn: Callable[[dict[str, Any]], Scripted | str]) -> None:
        """Script one reply computed by ``fn(request_json)``; it returns a scripted reply or a ``str``."""
        self.enqueue(Dynamic(fn))

    @property
    def pending(self) -> int:
        """How many scripted replies have not been used yet."""
        with self._lock:
            return len(self._script)

    def assert_done(self) -> None:
        """Raise AssertionError if scripted replies are left over or a problem was recorded."""
        with self._lock:
            left, problems = len(self._script) + len(self._embedding_errors), list(self.problems)
        if left or problems:
            raise AssertionError(f"OpenAIServer: {left} scripted replies unused; problems: {problems}")

    # ------------------------------------------------------------ used by the handler

    def _take(self, request: dict[str, Any], headers: dict[str, str]) -> tuple[int, Scripted | None]:
        """Record a request and pop its scripted reply (None, recorded as a problem, if none is left)."""
        with self._lock:
            self.requests.append(request)
            self.request_headers.append(headers)
            number = len(self.requests)
            if self._script:
                return number, self._script.popleft()
            self.problems.append(f"script ran out: no scripted reply left for request #{number}")
            return number, None

    def _take_embedding(self, request: dict[str, Any], headers: dict[str, str]) -> ErrorReply | Delayed | None:
        """Record an embeddings request and pop the error scripted for it, if any."""
        with self._lock:
            self.embedding_requests.append(request)
            return self._embedding_errors.popleft() if self._embedding_errors else None

    def _record_problem(self, problem: str) -> None:
        """Append to `problems` under the lock."""
        with self._lock:
            self.problems.append(problem)


# --------------------------------------------------------------------------- an in-process fake LLM


class FakeLLM:
    """An `qa.LLM` that answers from a queue of canned replies and records every request; no HTTP at all.

    Example::

        llm = FakeLLM(model="fake")
        llm.enqueue({"quotes": [{"passage": 1, "quote": "Paris"}], "found": True, "answer": "Paris"})
        answer = qa.Index(docs, llm=llm).ask("Capital of France?")
        assert llm.requests[0].messages[-1]["content"].endswith("Capital of France?")
    """

    def __init__(self, *, model: str = "fake-model") -> None:
        self._model = model
        self._queue: deque[str] = deque()
        self._lock = threading.Lock()
        self._usage = (10, 5)
        self.requests: list[LLMRequest] = []

    @property
    def model(self) -> str:
        """The model name reported in answers."""
        return self._model

    def enqueue(self, *replies: Any, prompt_tokens: int = 10, completion_tokens: int = 5) -> None:
        """Queue replies: strings are sent as they are, anything else as JSON."""
        self._usage = (prompt_tokens, completion_tokens)
        with self._lock:
            self._queue.extend(r if isinstance(r, str) else json.dumps(r) for r in replies)

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Record `request` and answer with the next queued reply."""
        with self._lock:
            self.requests.append(request)
            if not self._queue:
                raise AssertionError(f"FakeLLM has no reply queued for request #{len(self.requests)}")
            content = self._queue.popleft()
        prompt, completion = self._usage
        return LLMResponse(content, prompt, completion, attempts=1, model=self._model, finish_reason="stop")

    async def acomplete(self, request: LLMRequest) -> LLMResponse:
        """Async `complete`."""
        return self.complete(request)

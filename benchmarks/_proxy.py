"""A tiny HTTP proxy on 127.0.0.1 that forwards to an OpenAI-compatible server and counts token usage.

Every response's `usage` (JSON bodies, or the last `data:` event of a stream that carries one) is added
to the counters, so the prompt tokens each system sends are measured the same way, by the server.
"""

from __future__ import annotations

import http.client
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


@dataclass
class Counts:
    """What passed through the proxy since the last reset."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    statuses: list[int] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "statuses": list(self.statuses),
        }


def _usage_of(body: bytes, content_type: str) -> dict[str, Any] | None:
    """The `usage` object of a completion response (plain JSON or server-sent events)."""
    if "text/event-stream" in content_type:
        usage = None
        for line in body.decode("utf-8", "replace").splitlines():
            if line.startswith("data:") and line[5:].strip() not in ("", "[DONE]"):
                try:
                    event = json.loads(line[5:])
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict) and isinstance(event.get("usage"), dict):
                    usage = event["usage"]
        return usage
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    usage = data.get("usage") if isinstance(data, dict) else None
    return usage if isinstance(usage, dict) else None


class CountingProxy:
    """`with CountingProxy(upstream_port) as proxy:` serves http://127.0.0.1:{proxy.port}."""

    def __init__(self, upstream_host: str, upstream_port: int, timeout: float = 1800.0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.timeout = timeout
        self._lock = threading.Lock()
        self._counts = Counts()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=proxy.timeout)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    status = response.status
                    reply_headers = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP_BY_HOP]
                    content_type = response.getheader("Content-Type") or ""
                except OSError as exc:
                    data = json.dumps({"error": {"message": f"proxy: upstream failed: {exc}"}}).encode()
                    status, reply_headers, content_type = 502, [("Content-Type", "application/json")], ""
                finally:
                    conn.close()
                if self.command == "POST":
                    usage = _usage_of(data, content_type) or {}
                    with proxy._lock:
                        c = proxy._counts
                        c.requests += 1
                        c.statuses.append(status)
                        c.prompt_tokens += int(usage.get("prompt_tokens") or 0)
                        c.completion_tokens += int(usage.get("completion_tokens") or 0)
                self.send_response(status)
                for k, v in reply_headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = _forward
            do_POST = _forward
            do_DELETE = _forward
            do_PUT = _forward

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port: int = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="counting-proxy", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def reset(self) -> None:
        with self._lock:
            self._counts = Counts()

    def take(self) -> Counts:
        """The counts since the last reset, and reset."""
        with self._lock:
            counts, self._counts = self._counts, Counts()
        return counts

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

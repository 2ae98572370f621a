"""A scripted HTTP server on 127.0.0.1 for fake provider APIs.

Tests queue ``Reply`` objects per path fragment; each request takes the next
reply for the first matching fragment. Streams are written chunk by chunk and
flushed; ``cut=True`` closes the connection early (a cut-off stream). Every
response closes its connection, so a body without Content-Length ends there.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # JSON-able; for a stream use ``chunks``
    chunks: list[bytes] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    stream: bool = False


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeServer:
    def __init__(self) -> None:
        self.replies: dict[str, deque[Reply]] = {}
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                raw = self.rfile.read(length) if length else b""
                # JSON, or the raw bytes of any other body (multipart uploads: audio).
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw
                server.requests.append(
                    Request(
                        "POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                reply = server.take(self.path)
                self.send_response(reply.status)
                if reply.stream:
                    self.send_header("content-type", "text/event-stream")
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("connection", "close")
                    self.end_headers()
                    for chunk in reply.chunks:
                        self.wfile.write(chunk)
                        self.wfile.flush()
                    return
                payload = json.dumps(reply.body).encode()
                self.send_header("content-type", "application/json")
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(payload)))
                self.send_header("connection", "close")
                self.end_headers()
                self.wfile.write(payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def expect(self, path_part: str, *replies: Reply) -> None:
        with self._lock:
            self.replies.setdefault(path_part, deque()).extend(replies)

    def take(self, path: str) -> Reply:
        with self._lock:
            for part, queue in self.replies.items():
                if part in path and queue:
                    return queue.popleft()
        return Reply(500, {"error": {"message": f"no scripted reply for {path}", "type": "test"}})

    def start(self) -> FakeServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def sse(data: Any, event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    text = data if isinstance(data, str) else json.dumps(data)
    return f"{head}data: {text}\n\n".encode()

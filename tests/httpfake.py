"""A real HTTP server on loopback whose answers a test scripts (status, body, headers, delays)."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


@contextmanager
def loopback_server(
    handler: type[http.server.BaseHTTPRequestHandler], release: threading.Event
) -> Iterator[int]:
    """Serve `handler` on a free loopback port, yielded; on exit set `release` (so hanging handlers
    return), then stop the server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="test-http-server", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class Reply:
    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/plain; version=0.0.4"})
    hang: float = 0.0  # seconds to wait before answering
    truncate_to: int | None = None  # send a Content-Length larger than the body actually sent


@dataclass
class Server:
    url: str
    reply: Reply
    requests: list[dict[str, str]] = field(default_factory=list)
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)  # (path, headers, body)
    stop_hanging: threading.Event = field(default_factory=threading.Event)


@contextmanager
def serve(reply: Reply | None = None) -> Iterator[Server]:
    state = Server(url="", reply=reply or Reply())

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            state.requests.append({k.lower(): v for k, v in self.headers.items()})
            current = state.reply
            if current.hang:
                state.stop_hanging.wait(current.hang)
            body = current.body
            self.send_response(current.status)
            for key, value in current.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body if current.truncate_to is None else body[: current.truncate_to])
            self.wfile.flush()
            if current.truncate_to is not None:
                self.close_connection = True

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.posts.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    with loopback_server(Handler, state.stop_hanging) as port:
        state.url = f"http://127.0.0.1:{port}/metrics"
        yield state

"""A small HTTP reverse proxy that records requests and injects faults.

Tests put it in front of a real registry to break things the way networks and CDNs do:
answer with a status (503, 429 + Retry-After, a 307 to another host), cut a body
mid-stream, or corrupt it. Without an upstream it is a stub server that only answers
from its rule (used as the "storage host" a registry redirects blobs to).
"""

from __future__ import annotations

import http.client
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import urlsplit

from kubeferry.lab.serving import ServerThread

_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
}
_TIMEOUT = 60


@dataclass
class Exchange:
    """One request the proxy received (headers as sent, names as the client spelled them)."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None

    def header(self, name: str) -> str | None:
        for key, value in self.headers.items():
            if key.lower() == name.lower():
                return value
        return None


@dataclass
class Fault:
    """What to do instead of (or to) a plain forward.

    ``status`` answers directly with ``headers`` and ``body``; otherwise the request is
    forwarded and the response body is cut after ``cut_after`` bytes (the connection is
    closed mid-body) and/or ``corrupt``ed (every byte inverted, same length).
    """

    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    cut_after: int | None = None
    corrupt: bool = False


Rule = Callable[[Exchange], "Fault | None"]


class Proxy:
    """Forward to ``upstream`` (http://host:port), applying ``rule`` to every request."""

    def __init__(
        self,
        upstream: str | None,
        rule: Rule | None = None,
        addr: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = urlsplit(upstream) if upstream else None
        self.rule = rule
        self.addr = addr
        self.port = port
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()
        self._serving: ServerThread | None = None

    @property
    def host(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests(self, method: str | None = None, contains: str = "") -> list[Exchange]:
        """Recorded requests, optionally only one method and paths containing ``contains``."""
        with self._lock:
            return [
                e
                for e in self.exchanges
                if (method is None or e.method == method) and contains in e.path
            ]

    def clear(self) -> None:
        with self._lock:
            self.exchanges.clear()

    def start(self) -> Proxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                exchange = Exchange(self.command, self.path, dict(self.headers.items()))
                with proxy._lock:
                    proxy.exchanges.append(exchange)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault = proxy.rule(exchange) if proxy.rule else None
                if fault is not None and fault.status is not None:
                    exchange.status = fault.status
                    self._answer(fault)
                    return
                if proxy.upstream is None:
                    exchange.status = 404
                    self._answer(Fault(status=404))
                    return
                self._forward(exchange, body, fault or Fault())

            def _answer(self, fault: Fault) -> None:
                self.send_response(fault.status or 200)
                for name, value in fault.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(fault.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(fault.body)

            def _forward(self, exchange: Exchange, body: bytes, fault: Fault) -> None:
                assert proxy.upstream is not None
                upstream = http.client.HTTPConnection(
                    proxy.upstream.hostname, proxy.upstream.port, timeout=_TIMEOUT
                )
                try:
                    headers = {
                        k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                    }
                    upstream.request(self.command, self.path, body=body or None, headers=headers)
                    response = upstream.getresponse()
                    exchange.status = response.status
                    data = response.read()
                finally:
                    upstream.close()
                if fault.corrupt:
                    data = bytes(byte ^ 0xFF for byte in data)
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if fault.cut_after is not None and fault.cut_after < len(data):
                    self.wfile.write(data[: fault.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer((self.addr, self.port), Handler)
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._serving = ServerThread(server, "lab-proxy")
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def __enter__(self) -> Proxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

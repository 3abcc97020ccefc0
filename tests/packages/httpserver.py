"""A small threaded HTTP server on loopback for the package tests: serves a directory,
honours Range, and can inject faults (a 503, a cut-off body) for chosen paths."""

from __future__ import annotations

import contextlib
import http.server
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from kubeferry.lab.serving import ServerThread


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(path)
        fault = self.server.faults.get(path)
        if fault:
            action = fault.pop(0)
            if not fault:
                del self.server.faults[path]
            if isinstance(action, int):
                self.send_error(action)
                return
        else:
            action = None
        target = (self.server.root / path.lstrip("/")).resolve()
        if self.server.root not in target.parents and target != self.server.root:
            self.send_error(403)
            return
        if not target.is_file():
            self.send_error(404)
            return
        data = target.read_bytes()
        start = 0
        ranged = self.headers.get("Range", "")
        if ranged.startswith("bytes=") and self.server.ranges:
            start = int(ranged[6:].split("-")[0] or 0)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if callable(action):
            body = action(body)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    faults: dict[str, list]
    requests: list[str]
    ranges: bool


class StaticServer:
    """``with StaticServer(dir) as server: server.url`` — stopped and joined on exit."""

    def __init__(self, root: Path, ranges: bool = True):
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.root = Path(root).resolve()
        self._server.faults = {}
        self._server.requests = []
        self._server.ranges = ranges
        self._thread: ServerThread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[str]:
        return self._server.requests

    def fault(self, path: str, *actions: int | Callable[[bytes], bytes]) -> None:
        """The next requests of ``path`` get these: an HTTP status, or a body rewriter."""
        self._server.faults[path] = list(actions)

    def __enter__(self) -> StaticServer:
        self._thread = ServerThread(self._server, "test-static-http")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.stop()


def cut(at: int) -> Callable[[bytes], bytes]:
    """A body rewriter sending only the first ``at`` bytes (Content-Length stays full)."""
    return lambda body: body[:at]




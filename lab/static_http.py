"""A small threaded HTTP server for a directory: the lab's stand-in of package mirrors.

In a test, in this process (a thread, stopped and joined on exit)::

    with StaticServer(root) as server:          # http://127.0.0.1:<port>
        server.url

As a process of its own that outlives the command that started it (``kubeferry-lab
upstream up``): ``python -m kubeferry.lab.static_http ROOT --port-file F`` binds a free
loopback port, writes it to F (atomically) and serves until SIGTERM; ``port_from_file``
waits for it (bounded). GET and HEAD only, Range honoured, nothing outside ROOT served.

Tests see the paths asked for (``server.requests``) and inject faults for chosen paths
(``server.fault(path, 503, cut(100))``: the next requests get a status, or a cut-off body).
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Callable
from urllib.parse import unquote, urlsplit

from kubeferry.lab.serving import ServerThread

LOOPBACK = "127.0.0.1"
_CHUNK = 1 << 20


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
        if self.server.log is not None:
            self.server.log.write(f"{self.address_string()} {format % args}\n")
            self.server.log.flush()

    def _target(self) -> Path | None:
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append(path)
        self._rewrite = None
        actions = self.server.faults.get(path)
        if actions:
            action = actions.pop(0)
            if not actions:
                del self.server.faults[path]
            if isinstance(action, int):
                self.send_error(action)
                return None
            self._rewrite = action
        target = (self.server.root / path.lstrip("/")).resolve()
        if target != self.server.root and self.server.root not in target.parents:
            self.send_error(403)
            return None
        if not target.is_file():
            self.send_error(404)
            return None
        return target

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's name
        target = self._target()
        if target is not None:
            self._send(target, body=False)

    def do_GET(self) -> None:  # noqa: N802
        target = self._target()
        if target is not None:
            self._send(target, body=True)

    def _send(self, target: Path, body: bool) -> None:
        size = target.stat().st_size
        start = 0
        ranged = self.headers.get("Range", "") if self.server.ranges else ""
        if ranged.startswith("bytes=") and ranged[6:].split("-")[0].isdigit():
            start = min(int(ranged[6:].split("-")[0]), size)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{max(size - 1, start)}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(size - start))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if not body:
            return
        if self._rewrite is not None:  # a fault: the body rewritten (Content-Length kept)
            with open(target, "rb") as stream, contextlib.suppress(BrokenPipeError,
                                                                    ConnectionResetError):
                stream.seek(start)
                self.wfile.write(self._rewrite(stream.read()))
            self.close_connection = True
            return
        with open(target, "rb") as stream, contextlib.suppress(BrokenPipeError,
                                                                ConnectionResetError):
            stream.seek(start)
            while chunk := stream.read(_CHUNK):
                self.wfile.write(chunk)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    root: Path
    log: object | None
    ranges: bool
    requests: list[str]
    faults: dict[str, list[int | Callable[[bytes], bytes]]]


def _make_server(root: Path, addr: str, port: int, log=None, ranges: bool = True) -> _Server:  # noqa: ANN001
    server = _Server((addr, port), _Handler)
    server.root = Path(root).resolve()
    server.log = log
    server.ranges = ranges
    server.requests = []
    server.faults = {}
    return server


class StaticServer:
    """``root`` served on ``addr`` (loopback) from a thread of this process."""

    def __init__(self, root: Path, addr: str = LOOPBACK, port: int = 0, ranges: bool = True):
        self._server = _make_server(root, addr, port, ranges=ranges)
        self._thread: ServerThread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def requests(self) -> list[str]:
        """The paths asked for, in order."""
        return self._server.requests

    def fault(self, path: str, *actions: int | Callable[[bytes], bytes]) -> None:
        """The next requests of ``path`` get these: an HTTP status, or a body rewriter."""
        self._server.faults[path] = list(actions)

    def start(self) -> StaticServer:
        self._thread = ServerThread(self._server, "kubeferry-lab-static-http")
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._thread.stop()

    def __enter__(self) -> StaticServer:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def cut(at: int) -> Callable[[bytes], bytes]:
    """A body rewriter sending only the first ``at`` bytes (Content-Length stays full)."""
    return lambda body: body[:at]


def port_from_file(path: Path, timeout: float, alive=lambda: True) -> int:  # noqa: ANN001
    """The port a ``serve`` process wrote to ``path``; waits at most ``timeout`` seconds.

    ``alive()`` returning False (the process exited) ends the wait early. Raises
    TimeoutError when no port came.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            return int(path.read_text().strip())
        if not alive():
            break
        time.sleep(0.05)
    raise TimeoutError(f"no port in {path} after {timeout:.0f}s")


def serve(root: Path, port_file: Path, addr: str = LOOPBACK, port: int = 0) -> int:
    """Serve ``root`` until SIGTERM/SIGINT; the bound port goes to ``port_file``."""
    server = _make_server(root, addr, port, log=sys.stderr)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tmp = port_file.with_name(f".{port_file.name}.tmp")
    tmp.write_text(f"{server.server_address[1]}\n")
    os.replace(tmp, port_file)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeferry.lab.static_http",
                                     description="Serve a directory over HTTP on loopback.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--port-file", type=Path, required=True)
    parser.add_argument("--addr", default=LOOPBACK)
    parser.add_argument("--port", type=int, default=0)
    options = parser.parse_args(argv)
    if not options.root.is_dir():
        parser.error(f"{options.root} is not a directory")
    return serve(options.root, options.port_file, options.addr, options.port)


if __name__ == "__main__":
    sys.exit(main())

"""A delaying TCP proxy for the benchmarks: a fixed one-way delay each way, throughput kept.

This kernel has no netem, and loopback round trips cost nothing, so a registry on
loopback hides what sites meet (registry.k8s.io at 50-250 ms from Asia, a Harbor in
another data centre). ``DelayProxy(upstream_port, rtt_ms)`` listens on 127.0.0.1 and
forwards every connection to ``127.0.0.1:upstream_port``; each chunk it reads is written
on ``rtt_ms / 2`` later, while reading goes on, so a connection's round trip grows by
``rtt_ms`` and its bandwidth does not shrink. It counts connections and HTTP/1.x request
lines (the requests a client made), for the benchmarks' tables. Loopback only.
``ProxyProcess`` runs one in a child process: the client measured then has its process
(and its GIL) to itself, as it would against a remote registry.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|PATCH|DELETE) /\S* HTTP/1\.[01]\r\n")


class _Listening:
    """Where a proxy on loopback listens: ``port``, as a URL and as a registry host."""

    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"


class DelayProxy(_Listening):
    """``with DelayProxy(5000, rtt_ms=50) as proxy: ... proxy.url ...``"""

    def __init__(self, upstream_port: int, rtt_ms: float, upstream_host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = rtt_ms / 2000.0
        self.connections = 0
        self.requests = 0
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: Any = None
        self._tasks: set[asyncio.Task] = set()

    def __enter__(self) -> DelayProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(self._start(), self._loop)
        future.result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        self._server.close()
        await self._server.wait_closed()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # each closes its sockets

    async def _handle(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        handler = asyncio.current_task()
        if handler is not None:
            self._tasks.add(handler)
        try:
            upstream_reader, upstream_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), timeout=10)
        except (OSError, asyncio.TimeoutError):
            self._tasks.discard(handler)  # type: ignore[arg-type]
            client_writer.close()
            return
        pumps = [asyncio.ensure_future(self._pump(client_reader, upstream_writer, count=True)),
                 asyncio.ensure_future(self._pump(upstream_reader, client_writer, count=False))]
        self._tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        except asyncio.CancelledError:
            pass  # the proxy is closing: the sockets close below
        finally:
            self._tasks.difference_update([*pumps, handler])
            for pump in pumps:
                pump.cancel()
            for writer in (client_writer, upstream_writer):
                writer.close()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: bool) -> None:
        """Read as fast as the peer sends; write each chunk ``delay`` after it arrived."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()

        sender = asyncio.ensure_future(deliver())
        tail = b""
        try:
            while True:
                data = await reader.read(1 << 16)
                if count and data:
                    window = tail + data
                    self.requests += len(REQUEST_LINE.findall(window)) - len(REQUEST_LINE.findall(tail))
                    tail = window[-64:]
                await queue.put((time.monotonic() + self.delay, data))
                if not data:
                    break
            await sender
        except (ConnectionError, OSError):
            pass
        finally:
            sender.cancel()


class ProxyProcess(_Listening):
    """A DelayProxy in a child process, so the client measured keeps its own process (and
    GIL) to itself, as against a real remote registry. Its counts are read after exit."""

    def __init__(self, upstream_port: int, rtt_ms: float, port: int = 0) -> None:
        self.args = (upstream_port, rtt_ms)
        self.port = port or _free_port()
        self.requests = 0
        self.connections = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._counts = Path(tempfile.mkdtemp(prefix="kubeferry-proxy-")) / "counts.json"

    def __enter__(self) -> ProxyProcess:
        upstream_port, rtt_ms = self.args
        self._process = subprocess.Popen([sys.executable, __file__, str(upstream_port), str(rtt_ms),
                                          str(self.port), str(self._counts)])
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError(f"the delaying proxy did not listen on {self.port} within 10 s")

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            self._process.wait(timeout=30)
            self._process = None
        if self._counts.is_file():
            counts = json.loads(self._counts.read_text())
            self.requests, self.connections = counts["requests"], counts["connections"]
        shutil.rmtree(self._counts.parent, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv: list[str]) -> None:
    """``latency_proxy.py UPSTREAM_PORT RTT_MS PORT COUNTS_FILE``: until SIGTERM, then the counts."""
    upstream_port, rtt_ms, port, counts = int(argv[0]), float(argv[1]), int(argv[2]), Path(argv[3])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with DelayProxy(upstream_port, rtt_ms, port=port) as proxy:
        while not stop.wait(1.0):
            pass
        counts.write_text(json.dumps({"requests": proxy.requests, "connections": proxy.connections}))


if __name__ == "__main__":
    main(sys.argv[1:])

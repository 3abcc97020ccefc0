"""A delaying TCP proxy for the benchmarks: a fixed one-way delay each way, throughput kept.

This kernel has no netem, and loopback round trips cost nothing, so a registry on
loopback hides what sites meet (registry.k8s.io at 50-250 ms from Asia, a Harbor in
another data centre). ``DelayProxy(upstream_port, rtt_ms)`` listens on 127.0.0.1 and
forwards every connection to ``127.0.0.1:upstream_port``; each chunk it reads is written
on ``rtt_ms / 2`` later, while reading goes on, so a connection's round trip grows by
``rtt_ms`` and its bandwidth does not shrink. It counts connections and HTTP/1.x request
lines (the requests a client made), for the benchmarks' tables. Loopback only.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from typing import Any

REQUEST_LINE = re.compile(rb"(?:^|\r\n)(GET|HEAD|POST|PUT|PATCH|DELETE) /\S* HTTP/1\.[01]\r\n")


class DelayProxy:
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

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

"""Network waits: one connect and one read timeout for every HTTP client, visible and settable.

A server that accepts a connection and never answers must not hold a build or a seed for
minutes in silence: each request waits at most the read timeout, a timed-out request is
retried once (``TIMEOUT_RETRIES``), and after ``NOTICE_AFTER`` seconds without an answer
the command says on stderr what it is waiting for. ``--connect-timeout`` and
``--read-timeout`` (on ``bundle build``, ``harbor seed`` and ``install``) set the values;
docs: README "Errors and exit codes".
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import click

CONNECT = 10.0
READ = 30.0
TIMEOUT_RETRIES = 1  # a request that timed out is tried once more, then the command fails
NOTICE_AFTER = 5.0


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait for a TCP connection, and for each answer (or chunk) once connected."""

    connect: float = CONNECT
    read: float = READ

    @property
    def pair(self) -> tuple[float, float]:
        """What requests takes as ``timeout=``."""
        return (self.connect, self.read)

    @property
    def hang_limit(self) -> float:
        """How long a server that accepts and never answers holds one request, retries included."""
        return (TIMEOUT_RETRIES + 1) * (self.connect + self.read)

    def phrase(self) -> str:
        return f"connect timeout {self.connect:g} s, read timeout {self.read:g} s"


_current = Timeouts()
_notices: dict[str, float] = {}
_lock = threading.Lock()
# Where "waiting for ..." lines go; the CLI points it at stderr, a library caller may too.
notify: Callable[[str], None] | None = None


def current() -> Timeouts:
    return _current


def configure(connect: float | None = None, read: float | None = None) -> Timeouts:
    """Set the timeouts every client made from now on uses."""
    global _current
    _current = Timeouts(connect if connect is not None else _current.connect,
                        read if read is not None else _current.read)
    return _current


def resolve(timeout: float | tuple[float, float] | None) -> tuple[float, float]:
    """A client's ``timeout`` argument as (connect, read): None means the configured ones."""
    if timeout is None:
        return _current.pair
    if isinstance(timeout, tuple):
        return timeout
    return (float(timeout), float(timeout))


_local = threading.local()  # the notice armed by this thread's waiting(), if any


@contextmanager
def waiting(what: str, read: float | None = None, setting: str = "--read-timeout") -> Iterator[None]:
    """Say on stderr what is being waited for when an answer takes longer than NOTICE_AFTER
    (or half the read timeout), at most once per ``what`` per read timeout, so parallel
    requests do not flood. Backoff between tries (``paused``) is not waiting for an answer."""
    if notify is None:
        yield
        return
    limit = read if read is not None else _current.read

    def tell() -> None:
        now = time.monotonic()
        with _lock:
            if now - _notices.get(what, -1e9) < limit:
                return
            _notices[what] = now
        if notify is not None:
            notify(f"waiting for {what} (timeout {limit:g} s; {setting} to change)")

    def arm() -> threading.Timer:
        timer = threading.Timer(min(NOTICE_AFTER, limit / 2), tell)
        timer.daemon = True
        timer.start()
        return timer

    outer = getattr(_local, "notice", None)
    _local.notice = [arm(), arm]
    try:
        yield
    finally:
        _local.notice[0].cancel()
        _local.notice = outer


@contextmanager
def paused() -> Iterator[None]:
    """A backoff sleep inside ``waiting``: the notice clock stops, and starts again after."""
    notice = getattr(_local, "notice", None)
    if notice is not None:
        notice[0].cancel()
    try:
        yield
    finally:
        if notice is not None:
            notice[0] = notice[1]()


def _set(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        configure(**{param.name.removesuffix("_timeout"): value})  # type: ignore[union-attr]
    return value


def timeout_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--connect-timeout`` and ``--read-timeout`` for a click command (applied on parse)."""
    positive = click.FloatRange(min=0.1, max=3600)
    command = click.option("--read-timeout", type=positive, default=READ, show_default=True,
                           expose_value=False, callback=_set, is_eager=True, metavar="SECONDS",
                           help="Wait at most this long for each answer from a server"
                                " (one retry, then fail).")(command)
    return click.option("--connect-timeout", type=positive, default=CONNECT, show_default=True,
                        expose_value=False, callback=_set, is_eager=True, metavar="SECONDS",
                        help="Wait at most this long for a TCP connection.")(command)

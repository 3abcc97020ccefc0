"""Running admin-host commands and stopping processes by pid, with bounded waits.

Everything the lab starts is stopped by its pid, checked against the start time recorded
when it was started, so a recycled pid is never signalled by mistake.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from kubeferry.errors import OperationError

DEFAULT_TIMEOUT = 120.0
INIT_LIBRARY = "root-dev.sh"  # what the lab roots' init scripts source, from beside them


def copy_init_script(name: str, directory: Path) -> Path:
    """The lab's init script ``name`` (and the file it sources) copied into ``directory``:
    the root's holder runs it from there, outside the installed package."""
    for file in (name, INIT_LIBRARY):
        (directory / file).write_bytes(resources.files("kubeferry.lab").joinpath(file).read_bytes())
    return directory / name


def run(
    argv: Sequence[str],
    *,
    check: bool = True,
    timeout: float = DEFAULT_TIMEOUT,
    input: bytes | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a command and capture its output; a failure raises one line naming the command."""
    try:
        result = subprocess.run(
            list(argv), input=input, capture_output=True, timeout=timeout, check=False
        )
    except FileNotFoundError as error:
        raise OperationError(
            f"{argv[0]} is not installed on this machine; run scripts/bootstrap as root"
        ) from error
    except subprocess.TimeoutExpired as error:
        raise OperationError(f"'{' '.join(argv)}' did not finish in {timeout:.0f}s") from error
    if check and result.returncode != 0:
        detail = _last_line(result.stderr) or _last_line(result.stdout) or "no output"
        raise OperationError(f"'{' '.join(argv)}' failed ({result.returncode}): {detail}")
    return result


def _last_line(data: bytes) -> str:
    lines = [line.strip() for line in data.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 on (state first), or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stream:
            stat = stream.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    return stat[stat.rindex(")") + 2 :].split()


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def is_same_process(pid: int, started: int | None) -> bool:
    """True when ``pid`` is alive and is still the process that started at ``started``."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):  # gone, or dead and waiting to be reaped
        return False
    return started is None or int(fields[19]) == started


def stop(pid: int, started: int | None, *, grace: float = 5.0, sig: int = signal.SIGTERM) -> None:
    """Stop one process: ``sig``, then SIGKILL after ``grace`` seconds; waits until it is gone.

    Without a recorded start time nothing is signalled: the pid alone may be someone else's.
    """
    if started is None or not is_same_process(pid, started):
        _reap(pid)
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return
    if wait_until(lambda: not is_same_process(pid, started), grace):
        _reap(pid)
        return
    if is_same_process(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: not is_same_process(pid, started), 10.0):
        raise OperationError(f"process {pid} did not exit after SIGKILL within 10s")
    _reap(pid)


def _reap(pid: int) -> None:
    """Collect the exit status if ``pid`` is our child, so no zombie stays behind."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)

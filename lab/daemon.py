"""Run a real daemon for tests and the lab: started with a log file, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Callable

STOP_TIMEOUT = 10.0


class Daemon:
    """One background process: start() waits (bounded) until ``ready()``; stop() by pid."""

    def __init__(self, name: str, command: list[str], log_file: Path,
                 ready: Callable[[], bool], ready_timeout: float = 20.0,
                 env: dict[str, str] | None = None, stop_timeout: float = STOP_TIMEOUT) -> None:
        self.name = name
        self.stop_timeout = stop_timeout
        self.command = command
        self.log_file = log_file
        self.ready = ready
        self.ready_timeout = ready_timeout
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self) -> Daemon:
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, env=self.env,
            )
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"{self.name} exited at start:\n{self.log()[-2000:]}")
            if self.ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} not ready after {self.ready_timeout}s:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM, a bounded wait, then SIGKILL to its process group: by pid, never by name."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # its own session: children too
            process.wait(timeout=self.stop_timeout)

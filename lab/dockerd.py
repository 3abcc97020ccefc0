"""Debian's real ``dockerd`` in a throwaway directory, for the ``--image-source docker`` tests.

No iptables, no bridge, its own data-root, exec-root, pidfile and unix socket; dockerd
starts its own managed containerd under the exec-root and stops it when it exits.
Started and stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class DockerDaemon:
    """A running dockerd; ``base_url`` is its unix socket URL."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        # unix socket paths must stay short (108 bytes): keep the directory near /tmp
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kf-dockerd-"))
        self.socket = self.workdir / "docker.sock"
        self.log_file = self.workdir / "dockerd.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    def start(self) -> DockerDaemon:
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd is not installed (Debian: docker.io)")
        command = [
            "dockerd",
            "--iptables=false",
            "--bridge=none",
            "--data-root", str(self.workdir / "data"),
            "--exec-root", str(self.workdir / "exec"),
            "--pidfile", str(self.workdir / "docker.pid"),
            "-H", self.base_url,
        ]  # fmt: skip
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"dockerd exited at start:\n{self.log()[-2000:]}")
            if self.socket.exists() and "API listen on" in self.log():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dockerd not ready after {READY_TIMEOUT}s:\n{self.log()[-2000:]}")

    def stop(self) -> None:
        """SIGTERM by pid (dockerd then stops its containerd), bounded wait, then SIGKILL."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=STOP_TIMEOUT)

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

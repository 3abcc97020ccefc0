"""Debian's real ``dockerd`` in a throwaway directory, for the ``--image-source docker`` tests.

No iptables, no bridge, its own data-root, exec-root, pidfile and unix socket; dockerd
starts its own managed containerd under the exec-root and stops it when it exits.
Started and stopped by pid; every wait is bounded.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from kubeferry.lab.daemon import Daemon

READY_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


class DockerDaemon:
    """A running dockerd; ``base_url`` is its unix socket URL."""

    def __init__(self, workdir: Path | None = None) -> None:
        self._own_workdir = workdir is None
        # unix socket paths must stay short (108 bytes): keep the directory near /tmp
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kf-dockerd-"))
        self.socket = self.workdir / "docker.sock"
        self.daemon = Daemon(
            "dockerd",
            [
                "dockerd",
                "--iptables=false",
                "--bridge=none",
                "--data-root", str(self.workdir / "data"),
                "--exec-root", str(self.workdir / "exec"),
                "--pidfile", str(self.workdir / "docker.pid"),
                "-H", self.base_url,
            ],  # fmt: skip
            self.workdir / "dockerd.log",
            ready=lambda: self.socket.exists() and "API listen on" in self.log(),
            ready_timeout=READY_TIMEOUT,
            stop_timeout=STOP_TIMEOUT,
        )

    @property
    def base_url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pid(self) -> int | None:
        return self.daemon.pid

    def log(self) -> str:
        return self.daemon.log()

    def start(self) -> DockerDaemon:
        if shutil.which("dockerd") is None:
            raise RuntimeError("dockerd is not installed (Debian: docker.io)")
        self.daemon.start()
        return self

    def stop(self) -> None:
        """SIGTERM by pid (dockerd then stops its containerd), bounded wait, then SIGKILL."""
        self.daemon.stop()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

"""A real containerd in a throwaway directory, for tests and the demo (``ctr images import``)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from kubeferry.lab.daemon import Daemon

DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.tracing.processor.v1.otlp",
]


class Containerd:
    """containerd with its own root, state and socket; nothing shared with the host's.

    By default all of it lives in a fresh temp directory (removed by ``stop``). A test
    node passes ``config`` (its own /etc/containerd/config.toml, written by the caller
    before ``start``) and the ``socket`` that config names; ``workdir`` is then kept.
    """

    def __init__(self, workdir: Path | None = None, config: Path | None = None,
                 socket: Path | None = None) -> None:
        self._own_workdir = workdir is None
        # short path: the socket path must stay under the 108-byte sun_path limit
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="kf-ctrd-"))
        self.socket = socket or self.workdir / "containerd.sock"
        if config is None:
            config = self.workdir / "config.toml"
            config.write_text(default_config(self.workdir, self.socket))
        self.config = config
        self.daemon = Daemon("containerd", ["containerd", "--config", str(config)],
                             self.workdir / "containerd.log", ready=self._answers)

    def _answers(self) -> bool:
        if not self.socket.exists():
            return False
        return subprocess.run(["ctr", "--address", str(self.socket), "version"],
                              capture_output=True, timeout=10).returncode == 0

    def ctr(self, *args: str, namespace: str = "k8s.io", input_file: Path | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``ctr`` against this containerd; raises with its output if it fails."""
        command = ["ctr", "--address", str(self.socket), "-n", namespace, *args]
        stdin = open(input_file, "rb") if input_file else subprocess.DEVNULL  # noqa: SIM115
        try:
            result = subprocess.run(command, stdin=stdin, capture_output=True, text=True,
                                    timeout=timeout)
        finally:
            if input_file:
                stdin.close()
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()}")
        return result

    def images(self, namespace: str = "k8s.io") -> dict[str, str]:
        """Image name -> target digest, as containerd holds them."""
        listing = self.ctr("images", "ls", namespace=namespace).stdout.splitlines()[1:]
        return {line.split()[0]: line.split()[2] for line in listing if line.strip()}

    def start(self) -> Containerd:
        self.daemon.start()
        return self

    def stop(self) -> None:
        self.daemon.stop()
        if self._own_workdir:
            for mount_point in reversed(_mounts_under(self.workdir)):
                subprocess.run(["umount", "-l", mount_point], capture_output=True, timeout=30)
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Containerd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def default_config(workdir: Path, socket: Path) -> str:
    """A config.toml keeping root, state, socket and opt under ``workdir`` (no CRI)."""
    plugins = ", ".join(f'"{name}"' for name in DISABLED_PLUGINS)
    return ("version = 2\n"
            f'root = "{workdir}/root"\n'
            f'state = "{workdir}/state"\n'
            f"disabled_plugins = [{plugins}]\n"
            f'[grpc]\n  address = "{socket}"\n'
            f'[ttrpc]\n  address = "{socket}.ttrpc"\n'
            '[metrics]\n  address = ""\n'
            f'[plugins."io.containerd.internal.v1.opt"]\n  path = "{workdir}/opt"\n')


def _mounts_under(directory: Path) -> list[str]:
    """Mount points below ``directory`` (snapshots a killed containerd may leave mounted)."""
    prefix = str(directory) + "/"
    with open("/proc/mounts") as mounts:
        return [line.split()[1] for line in mounts if line.split()[1].startswith(prefix)]

"""The kubelet double's runtime for the control plane's static pods: real etcd, the API server stand-in.

With ``run_control_plane: true`` in double.conf, each beat the kubelet double starts what
the manifests in staticPodPath ask for, from the manifest's own command, once the pod's
image is in containerd (as the kubelet would not start a container without its image):

- ``etcd``: the real etcd binary (``etcd_binary``, default /usr/bin/etcd) with the
  manifest's flags;
- ``kube-apiserver``: ``apiserver_double.py`` with the manifest's flags (an unknown flag
  fails it as kube-apiserver fails), told its version by the image's tag.

A changed manifest restarts its process, a removed one stops it, one that exits is started
again after a back-off (CrashLoopBackOff, shortened); the processes stop with the kubelet
double (real containers outlive a kubelet restart: a documented difference). Logs go to
``/var/log/pods/kube-system_<pod>-<node>/<container>.log``. Node paths in flag values are
read under KUBEFERRY_DOUBLE_ROOT in tests (``Env.path``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from doublelib import Env

HERE = Path(__file__).resolve().parent
BACKOFF = 5.0
STOP_GRACE = 10.0
RUNNABLE = ("etcd", "kube-apiserver")


@dataclass
class Running:
    process: subprocess.Popen[bytes]
    digest: str
    started: float


def enabled(env: Env) -> bool:
    return bool(env.setting("run_control_plane", False))


def map_paths(env: Env, args: list[str]) -> list[str]:
    """``--flag=/node/path`` read under the node's root (identity on a real node)."""
    mapped = []
    for arg in args:
        name, sep, value = arg.partition("=")
        mapped.append(f"{name}={env.path(value)}" if sep and value.startswith("/") else arg)
    return mapped


class StaticPods:
    """The processes of one node's runnable static pods, kept in line with the manifests."""

    def __init__(self, env: Env, node: str) -> None:
        self.env, self.node = env, node
        self.running: dict[str, Running] = {}
        self.exited: dict[str, tuple[int, float]] = {}

    def argv(self, name: str, command: list[str]) -> list[str]:
        args = map_paths(self.env, command[1:])
        if name == "etcd":
            return [str(self.env.setting("etcd_binary", "/usr/bin/etcd")), *args]
        return [sys.executable, str(HERE / "apiserver_double.py"), *args]

    def log_path(self, name: str) -> Path:
        path = self.env.path(f"/var/log/pods/kube-system_{name}-{self.node}/{name}.log")
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def sync(self, manifests: dict[str, dict[str, Any]], images: set[str]) -> dict[str, str]:
        """Start, restart or stop to match ``manifests`` (name -> pod document); each pod's state."""
        states: dict[str, str] = {}
        for name in list(self.running):
            if name not in manifests:
                self.stop(name)
        for name, pod in manifests.items():
            if name not in RUNNABLE:
                continue
            container = pod["spec"]["containers"][0]
            digest = hashlib.sha256(repr(container).encode()).hexdigest()
            current = self.running.get(name)
            if current and current.digest != digest:
                self.stop(name)
                current = None
            if current and current.process.poll() is not None:
                self.exited[name] = (current.process.returncode, time.time())
                del self.running[name]
                current = None
            if current:
                states[name] = "Running"
                continue
            if container["image"] not in images:
                states[name] = "ImageNotPresent"
                continue
            code, when = self.exited.get(name, (0, 0.0))
            if when and time.time() - when < BACKOFF:
                states[name] = f"CrashLoopBackOff (exit {code})"
                continue
            self.start(name, container, digest)
            states[name] = "Running" if name in self.running else "RunContainerError"
        return states

    def start(self, name: str, container: dict[str, Any], digest: str) -> None:
        env = dict(os.environ)
        env["KUBEFERRY_APISERVER_VERSION"] = container["image"].rsplit(":", 1)[-1]
        with open(self.log_path(name), "ab") as log:
            try:
                process = subprocess.Popen(self.argv(name, list(container.get("command") or [])),
                                           stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True, env=env)
            except OSError as error:  # RunContainerError: the payload is missing
                log.write(f"failed to start {name}: {error}\n".encode())
                self.exited[name] = (127, time.time())
                return
        self.running[name] = Running(process, digest, time.time())

    def stop(self, name: str) -> None:
        current = self.running.pop(name, None)
        if current is None or current.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(current.process.pid, signal.SIGTERM)
        try:
            current.process.wait(timeout=STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(current.process.pid, signal.SIGKILL)
            current.process.wait(timeout=STOP_GRACE)

    def stop_all(self) -> None:
        for name in list(self.running):
            self.stop(name)

"""What every phase sees: the inventory, the bundle, connections, logs, shared state.

Built once per run (kubeadm's data initializer): phases get this object, never flags.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from kubeferry.bundle.reader import Bundle
from kubeferry.installer.inventory import Host, Inventory, SecretRef
from kubeferry.installer.ssh import Connection
from kubeferry.outputs import check_target

if TYPE_CHECKING:  # annotations only: the phases import this module
    from kubeferry.installer.phases.preflight import NodeFacts, Verdict
    from kubeferry.installer.roles import MemberPlan


@dataclass
class InstallOptions:
    plan: bool = False
    forks: int = 10
    accept_new_host_keys: bool = False
    yes: bool = False
    run_dir: Path = Path("runs")
    phases: tuple[str, ...] = ()  # the phases this run executes (empty: all)
    relay: str = "auto"  # distribute: "auto", "on" or "off" (installer/relay.py)
    drain_batch: int = 1  # upgrade: workers drained and upgraded at a time (its --forks)


class HostLog:
    """Append-only per-host log under the run directory; never given secrets."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        check_target(path, "run log")  # a symlink planted in the run directory is refused

    def __call__(self, line: str) -> None:
        stamp = time.strftime("%H:%M:%S")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "a") as handle:
                handle.write(f"{stamp} {line}\n")


@dataclass
class CertificateKey:
    """The key kubeadm encrypted the uploaded control-plane certificates with, and when
    (kubeadm deletes the upload after two hours)."""

    key: str
    uploaded: float  # epoch seconds


@dataclass
class JoinMaterial:
    """What every ``kubeadm join`` of a run needs: made once, on first use."""

    token: str
    ca_hash: str


@dataclass
class RunState:
    """What phases hand to later phases within one run; in memory only (it holds secrets)."""

    facts: dict[str, NodeFacts] | None = None  # preflight's, read once before its hosts
    verdicts: dict[str, Verdict] | None = None
    member_plan: MemberPlan | None = None  # distribute: which member goes to which host
    certificate_key: CertificateKey | None = None  # init, then join
    join_material: JoinMaterial | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)  # for what hosts share


@dataclass
class InstallContext:
    inventory: Inventory
    bundle: Bundle
    options: InstallOptions
    stdin_reader: Callable[[], str] | None = None  # how a `stdin` secret is read (once)
    state: RunState = field(default_factory=RunState)
    _secrets: dict[str, str] = field(default_factory=dict)
    _connections: dict[str, Connection] = field(default_factory=dict)
    _logs: dict[str, HostLog] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _secret_lock: threading.Lock = field(default_factory=threading.Lock)
    progress_factory: Callable[[str], Callable[[int], None]] | None = None
    # the seam for tests: how a Connection to a host is made (default: SSH)
    connector: Callable[[Host], Connection] | None = None
    echo: Callable[[str], None] = print  # operator-facing output (tables) beside the result lines

    def __post_init__(self) -> None:
        self.options.run_dir.mkdir(parents=True, exist_ok=True)

    @property
    def run_dir(self) -> Path:
        return self.options.run_dir

    def log(self, host: Host | str) -> HostLog:
        name = host if isinstance(host, str) else host.name
        with self._lock:
            if name not in self._logs:
                self._logs[name] = HostLog(self.run_dir / f"{name}.log")
            return self._logs[name]

    def secret(self, ref: SecretRef | None) -> str | None:
        """The secret ``ref`` names, read once per run (stdin can only be read once)."""
        if ref is None:
            return None
        with self._secret_lock:
            if ref.source not in self._secrets:
                self._secrets[ref.source] = ref.read(self.stdin_reader)
            return self._secrets[ref.source]

    def conn(self, host: Host) -> Connection:
        """The SSH connection to ``host`` (opened on first use, reused by later phases)."""
        with self._lock:
            connection = self._connections.get(host.name)
            if connection is None and self.connector is not None:
                connection = self._connections[host.name] = self.connector(host)
            if connection is None:
                connection = Connection(host, accept_new_host_keys=self.options.accept_new_host_keys,
                                        password=self.secret(host.ssh.password),
                                        log=self.log(host))
                self._connections[host.name] = connection
            return connection

    def runs(self, phase: str) -> bool:
        """Does this run execute ``phase`` (so an earlier phase may count on it)?"""
        return not self.options.phases or phase in self.options.phases

    def progress(self, phase: str) -> Callable[[int], None] | None:
        """A byte-progress callback for ``phase`` (None when not on a terminal)."""
        return self.progress_factory(phase) if self.progress_factory else None

    def close(self) -> None:
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()

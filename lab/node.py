"""One lab node: a Debian 12 system with systemd as PID 1 in its own namespaces.

A node is an overlay (the shared base root below, the node's own layer above) booted by
``node-init.sh`` inside a new pid, mount, UTS, IPC and cgroup namespace, joined to its
network namespace. Its identity (hostname, machine-id, product_uuid, SSH host key) is
written into its own layer before it boots, so every node differs like real machines do.
"""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from kubeferry import manifests
from kubeferry.errors import OperationError
from kubeferry.lab import proc
from kubeferry.lab.doubles_recipe import DOUBLE_CONF
from kubeferry.lab.remote import Connection, Result

INIT_SCRIPT = "node-init.sh"
READY_TIMEOUT = 90.0
SSH_PORT = 22


@dataclass
class Node:
    """A lab node as the site knows it; ``ssh()`` runs a command on it as root."""

    name: str
    address: str
    netns: str
    veth: str
    directory: str
    cgroup: str
    host_key: str
    machine_id: str
    product_uuid: str
    key_file: str
    known_hosts: str
    _connection: Connection | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_connection"}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Node:
        return cls(**data)

    @property
    def console_log(self) -> Path:
        """systemd's and the boot script's output: read it when a node does not come up."""
        return Path(self.directory) / "console.log"

    def connection(self) -> Connection:
        if self._connection is None:
            self._connection = Connection(self.address, Path(self.key_file), Path(self.known_hosts))
        return self._connection

    def ssh(self, command: str, *, check: bool = True, timeout: float = 120.0,
            stdin: bytes | None = None) -> Result:
        """Run a shell command on the node as root (quote its arguments with shlex.quote)."""
        return self.connection().run(command, check=check, timeout=timeout, stdin=stdin)

    def put(self, local: Path, remote: str) -> None:
        """Copy a file from the admin host to the node."""
        self.connection().put(local, remote)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()


def prepare(node: Node, base: Path, public_key: str, sudo_user: str,
            double_conf: str | None = None) -> None:
    """Lay out the node's directory and write its identity into its own overlay layer.

    ``double_conf``: the text of the kubeadm and kubelet doubles' configuration
    (``doubles_recipe.DOUBLE_CONF``), the same on every node of a site.
    """
    directory = Path(node.directory)
    for sub in ("upper", "work", "root", "stage", "containerd"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    upper = directory / "upper"

    _write(upper, base, "etc/hostname", f"{node.name}\n")
    _write(upper, base, "etc/hosts",
           f"127.0.0.1\tlocalhost\n127.0.1.1\t{node.name}\n")
    _write(upper, base, "etc/machine-id", f"{node.machine_id}\n", mode=0o444)
    private, public = _host_key(node.name)
    _write(upper, base, "etc/ssh/ssh_host_ed25519_key", private, mode=0o600)
    _write(upper, base, "etc/ssh/ssh_host_ed25519_key.pub", public, mode=0o644)
    node.host_key = " ".join(public.split()[:2])

    authorized = f"{public_key.strip()}\n"
    _write(upper, base, "root/.ssh/authorized_keys", authorized, mode=0o600, dir_mode=0o700)
    uid, gid, home = _passwd_entry(base, sudo_user)
    relative_home = home.lstrip("/")
    _write(upper, base, f"{relative_home}/.ssh/authorized_keys", authorized,
           mode=0o600, dir_mode=0o700, owner=(uid, gid))

    if double_conf is not None:
        _write(upper, base, DOUBLE_CONF.lstrip("/"), double_conf)

    (directory / "product_uuid").write_text(f"{node.product_uuid}\n")
    builtin = builtin_modules()
    if builtin is not None:
        (directory / "modules.builtin").write_text("".join(f"{p}\n" for p in builtin))


def new_identity() -> tuple[str, str]:
    """A fresh machine-id and product_uuid, as two distinct machines would have."""
    return uuid.uuid4().hex, str(uuid.uuid4())


def _host_key(name: str) -> tuple[str, str]:
    """A new ed25519 host key pair for one node (private, public)."""
    with tempfile.TemporaryDirectory(prefix="kubeferry-lab-hostkey-") as tmp:
        key = Path(tmp) / "key"
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}",
                  "-f", str(key)])
        return key.read_text(), Path(f"{key}.pub").read_text()


def _write(upper: Path, base: Path, relative: str, text: str, *, mode: int = 0o644,
           dir_mode: int | None = None, owner: tuple[int, int] = (0, 0)) -> None:
    """Write a file into the upper layer, creating its parents as the base has them.

    An overlay shows a merged directory with the upper layer's owner and mode, so every
    parent made here copies the base's (or ``dir_mode``/``owner`` for new ones).
    """
    parts = Path(relative).parts
    current_upper, current_base = upper, base
    for part in parts[:-1]:
        current_upper, current_base = current_upper / part, current_base / part
        if current_upper.exists():
            continue
        current_upper.mkdir()
        if current_base.is_dir():
            info = current_base.stat()
            os.chown(current_upper, info.st_uid, info.st_gid)
            os.chmod(current_upper, info.st_mode & 0o7777)
        else:
            os.chown(current_upper, *owner)
            os.chmod(current_upper, dir_mode if dir_mode is not None else 0o755)
    target = upper / relative
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    os.chown(tmp, *owner)
    os.chmod(tmp, mode)
    os.replace(tmp, target)


def _passwd_entry(base: Path, user: str) -> tuple[int, int, str]:
    for line in (base / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3]), fields[5]
    raise OperationError(f"user {user} is missing from the lab base root {base}; rebuild it")


def builtin_modules() -> list[str] | None:
    """modules.builtin lines for a kernel without loadable modules, else None.

    With /lib/modules/<release> on the host, nodes get the host's (it is their kernel).
    Without it (CONFIG_MODULES unset), list what /proc/config.gz says is built in.
    """
    if Path("/lib/modules", os.uname().release).is_dir():
        return None
    try:
        config = gzip.decompress(Path("/proc/config.gz").read_bytes()).decode()
    except OSError:
        return []
    enabled = {line.split("=")[0][len("CONFIG_"):] for line in config.splitlines()
               if line.endswith("=y")}
    table = manifests.load("lab-base")["builtin_modules"]
    return [entry["path"] for entry in table.values() if entry["config"] in enabled]


# The launcher: into the node's cgroup, then boot the node; again when it rebooted. A PID 1
# that calls reboot(2) in its pid namespace is killed by SIGHUP (halt and poweroff: SIGINT), and
# unshare dies of the same signal; only then is the node booted again (new PID 1, new boot id,
# the same disk). Any other end (SIGKILL from `down` or a test, a failed boot) ends the launcher.
BOOT_LOOP = ('echo $$ > "$1/cgroup.procs" && shift && while :; do "$@"; status=$?; '
             '[ "$status" -eq 129 ] || exit "$status"; echo "kubeferry-lab: rebooting"; done')


def launch(node: Node, base: Path | str, cluster_state: Path | None = None) -> subprocess.Popen[bytes]:
    """Start the node's init in its namespaces; returns the launcher process (``BOOT_LOOP``,
    which boots the node again after a reboot; ``find_init`` finds its current PID 1).

    ``base``: the overlay's lower directories (the base root, or ``<EL layer>:<base root>``).

    The launcher first moves itself into the node's cgroup, so the node's cgroup namespace
    (and everything the node starts) is rooted there. ``cluster_state``: a host directory
    bind-mounted at ``doubles_recipe.STATE_DIR`` (the doubles' shared cluster state).
    """
    local_script = proc.copy_init_script(INIT_SCRIPT, Path(node.directory))
    argv = [
        "sh", "-c", BOOT_LOOP, "kubeferry-lab-node", node.cgroup,
        "nsenter", f"--net=/run/netns/{node.netns}",
        "unshare", "--mount", "--uts", "--ipc", "--pid", "--cgroup", "--fork", "--kill-child",
        "sh", str(local_script), str(base), node.directory, node.name,
        str(cluster_state) if cluster_state is not None else "",
    ]
    with open(node.console_log, "ab") as console:
        return subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
        )


def find_init(launcher_pid: int) -> int | None:
    """The host pid of the node's PID 1 under the launcher (the descendant that is pid 1 of
    its own pid namespace), or None while there is none (starting, between two boots)."""
    pending = [launcher_pid]
    for _depth in range(4):  # launcher shell -> unshare -> PID 1
        children = []
        for pid in pending:
            try:
                children += [int(c) for c in
                             Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
            except OSError:
                continue
        for child in children:
            try:
                status = Path(f"/proc/{child}/status").read_text()
            except OSError:
                continue
            nspids = next((line.split()[1:] for line in status.splitlines()
                           if line.startswith("NSpid:")), [])
            if len(nspids) > 1 and nspids[-1] == "1":
                return child
        pending = children
    return None


def init_pid(node: Node, launcher_pid: int, timeout: float = 10.0) -> int:
    """The host pid of the node's PID 1."""
    found: list[int] = []

    def forked() -> bool:
        if not Path(f"/proc/{launcher_pid}").exists():
            return True  # the launcher is gone: reported below
        pid = find_init(launcher_pid)
        found[:] = [pid] if pid is not None else []
        return bool(found)

    proc.wait_until(forked, timeout, interval=0.02)
    if not found:
        raise OperationError(f"node {node.name} did not start: {_tail(node)}")
    return found[0]


def wait_ready(node: Node, init: int, init_started: int | None,
               timeout: float = READY_TIMEOUT) -> str:
    """Wait until sshd answers and systemd has finished booting; returns its system state."""
    deadline = time.monotonic() + timeout

    def alive() -> None:
        if not proc.is_same_process(init, init_started):
            raise OperationError(f"node {node.name} stopped while booting: {_tail(node)}")

    def sshd_answers() -> bool:
        alive()
        return port_open(node.address, SSH_PORT)

    if not proc.wait_until(sshd_answers, max(0.0, deadline - time.monotonic()), interval=0.1):
        raise OperationError(
            f"node {node.name} ({node.address}): sshd did not answer in {timeout:.0f}s; "
            f"{_tail(node)}"
        )
    remaining = max(5.0, deadline - time.monotonic())
    result = node.ssh(
        f"timeout {int(remaining)} systemctl is-system-running --wait", check=False,
        timeout=remaining + 5,
    )
    state = result.stdout.strip()
    if state not in ("running", "degraded"):
        raise OperationError(f"node {node.name}: systemd did not finish booting ({state!r})")
    return state


def port_open(address: str, port: int) -> bool:
    """True when a TCP connection to ``address:port`` succeeds within a second."""
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def _tail(node: Node, lines: int = 3) -> str:
    try:
        text = node.console_log.read_text(errors="replace").strip().splitlines()
    except OSError:
        text = []
    last = " | ".join(text[-lines:]) if text else "no console output"
    return f"console: {last} ({node.console_log})"

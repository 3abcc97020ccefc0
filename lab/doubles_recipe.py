"""What the lab's Debian 12 base root needs so the kubeadm and kubelet doubles can run.

The doubles are Python (lab equipment, not kubeferry), but kubeferry must never find
Python on a node. So the base root gets Debian's python3 + python3-yaml, and then every
Python entry point in /usr/bin is moved into a private directory with ``dpkg-divert
--rename`` (dpkg keeps knowing where the files are: upgrades land there too). The doubles'
shebang is ``/usr/lib/kubeferry-lab/bin/python3``; ``command -v python3`` fails on a node.

Use (the lab's base-root builder):
    debootstrap --include=<",".join(BASE_PACKAGES)> bookworm ROOT MIRROR   (+ the lab's own)
    prepare_root(ROOT)                 # after every package install that may bring python;
                                       # runs dpkg-divert --root on the admin host, no chroot
    put RECIPE_ID into the base root's cache key
    write ROOT/etc/kubeferry-lab/double.conf = double_conf(...) and bind-mount the shared
    cluster state directory at STATE_DIR in every node.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from kubeferry.errors import OperationError

# Part of the lab's base-root cache key: bump when BASE_PACKAGES or prepare_root change.
RECIPE_ID = "kubeferry-lab-doubles-recipe/1"
PRIVATE_BIN = "/usr/lib/kubeferry-lab/bin"
INTERPRETER = f"{PRIVATE_BIN}/python3"
# python3 brings the full standard library (json, ssl, fcntl, tomllib); openssl makes the
# cluster's certificates; containerd (ctr) and iproute2 come with the lab and kubelet's Depends.
BASE_PACKAGES = ("python3", "python3-yaml", "openssl")
DOUBLE_CONF = "/etc/kubeferry-lab/double.conf"
STATE_DIR = "/var/lib/kubeferry-lab/cluster"
ETCD_BINARY = "/usr/lib/kubeferry-lab/etcd/etcd"
# Python entry points Debian's python3/python3.11(-minimal) put in /usr/bin.
PYTHON_ENTRY = re.compile(
    r"^(python3(\.\d+)?(-config)?|python|py3compile|py3clean|pydoc3(\.\d+)?|pygettext3(\.\d+)?|pdb3(\.\d+)?)$"
)
PATH_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")


def prepare_root(root: Path) -> list[str]:
    """Divert every Python entry point of ``root``'s /usr/bin into PRIVATE_BIN (idempotent).

    Returns the /usr/bin names moved by this call. Raises OperationError when the private
    interpreter is missing afterwards (BASE_PACKAGES not installed) or Python is still on PATH.
    """
    root = Path(root)
    usr_bin = root / "usr/bin"
    (root / PRIVATE_BIN.lstrip("/")).mkdir(parents=True, exist_ok=True)
    moved = []
    for entry in sorted(usr_bin.iterdir()):
        if not PYTHON_ENTRY.match(entry.name):
            continue
        result = subprocess.run(
            [
                "dpkg-divert",
                "--root",
                str(root),
                "--local",
                "--rename",
                "--divert",
                f"{PRIVATE_BIN}/{entry.name}",
                "--add",
                f"/usr/bin/{entry.name}",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise OperationError(
                f"dpkg-divert of /usr/bin/{entry.name} in {root} failed: {result.stderr.strip()}"
            )
        moved.append(entry.name)
    check_root(root)
    return moved


def check_root(root: Path) -> None:
    """OperationError unless the private interpreter exists and no Python is on a node's PATH."""
    root = Path(root)
    if not (root / INTERPRETER.lstrip("/")).exists():
        raise OperationError(
            f"{INTERPRETER} missing in {root}: install {', '.join(BASE_PACKAGES)} before prepare_root"
        )
    for folder in PATH_DIRS:
        directory = root / folder
        if directory.is_dir() and not directory.is_symlink():
            found = [p.name for p in directory.iterdir() if PYTHON_ENTRY.match(p.name)]
            if found:
                raise OperationError(f"python still on a node's PATH in {root}: /{folder}/{found[0]}")


def double_conf(
    state_dir: str = STATE_DIR,
    wait_timeout: int = 240,
    heartbeat_interval: int = 2,
    run_control_plane: bool = False,
) -> str:
    """The text of /etc/kubeferry-lab/double.conf for a node (same on every node).

    The node name defaults to the node's hostname. ``run_control_plane``: the kubelet double
    runs real etcd (``ETCD_BINARY``, which lab/node-init.sh mounts from the admin host) and the
    API server stand-in from kubeadm's static pod manifests.
    """
    conf: dict = {"state_dir": state_dir, "wait_timeout": wait_timeout,
                  "heartbeat_interval": heartbeat_interval}
    if run_control_plane:
        conf.update(run_control_plane=True, etcd_binary=ETCD_BINARY)
    return yaml.safe_dump(conf, sort_keys=False)

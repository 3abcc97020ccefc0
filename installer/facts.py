"""Facts: read-only questions to a node, each one POSIX sh command and a parser.

Phases decide what to change from facts; ``--plan`` reads only facts. A fact never
changes a node. Commands here use nothing but sh, coreutils and /proc or /sys.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from kubeferry.installer.ssh import Connection

T = TypeVar("T")


@dataclass(frozen=True)
class Fact(Generic[T]):
    name: str
    command: str
    parse: Callable[[str], T]

    def read(self, conn: Connection) -> T:
        result = conn.run(self.command, check=False)
        return self.parse(result.stdout if result.ok else "")


def _key_values(text: str, sep: str = "=") -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        key, found, value = line.partition(sep)
        if found:
            values[key.strip()] = value.strip().strip('"')
    return values


def _int(text: str) -> int:
    text = text.strip()
    return int(text) if text.isdigit() else 0


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


OS_RELEASE: Fact[dict[str, str]] = Fact("os-release", "cat /etc/os-release", _key_values)
ARCH: Fact[str] = Fact("arch", "uname -m", str.strip)
KERNEL: Fact[str] = Fact("kernel", "uname -r", str.strip)
HOSTNAME: Fact[str] = Fact("hostname", "cat /proc/sys/kernel/hostname", str.strip)
CPUS: Fact[int] = Fact("cpus", "nproc", _int)
MEMORY_MB: Fact[int] = Fact("memory", "awk '/^MemTotal:/ {print int($2/1024)}' /proc/meminfo", _int)
SWAP_DEVICES: Fact[list[str]] = Fact(
    "swap", "tail -n +2 /proc/swaps | awk '{print $1}'", _lines)
SELINUX: Fact[str] = Fact(
    "selinux", "cat /sys/fs/selinux/enforce 2>/dev/null || echo absent",
    lambda out: {"1": "enforcing", "0": "permissive"}.get(out.strip(), "disabled"))
FIREWALLD: Fact[bool] = Fact(
    "firewalld", "systemctl is-active firewalld 2>/dev/null", lambda out: out.strip() == "active")
EPOCH: Fact[float] = Fact("time", "date +%s.%N", lambda out: float(out.strip() or 0))
PRODUCT_UUID: Fact[str] = Fact(
    "product_uuid", "cat /sys/class/dmi/id/product_uuid 2>/dev/null", lambda out: out.strip().lower())
MACHINE_ID: Fact[str] = Fact("machine-id", "cat /etc/machine-id 2>/dev/null", str.strip)
MACS: Fact[list[str]] = Fact(
    "macs",
    "for i in /sys/class/net/*; do [ \"${i##*/}\" = lo ] || cat \"$i/address\"; done 2>/dev/null",
    lambda out: sorted({line for line in _lines(out) if line != "00:00:00:00:00:00"}))
LISTENING_PORTS: Fact[set[int]] = Fact(
    "listening-ports",
    # /proc/net/tcp{,6}: state 0A is LISTEN; the local port is hex after the colon
    "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == \"0A\" {split($2, a, \":\"); print a[2]}'",
    lambda out: {int(port, 16) for port in _lines(out)})
LOADED_MODULES: Fact[set[str]] = Fact(
    "modules", "cut -d' ' -f1 /proc/modules 2>/dev/null", lambda out: set(_lines(out)))


def disk_free_mb(path: str) -> Fact[int]:
    """Free MB on the filesystem holding ``path`` (or its nearest existing parent)."""
    quoted = shlex.quote(path)
    command = (f"p={quoted}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done;"
               " df -Pm \"$p\" | awk 'NR==2 {print $4}'")
    return Fact(f"disk-free:{path}", command, _int)


def sysctl(key: str) -> Fact[str | None]:
    path = "/proc/sys/" + key.replace(".", "/")
    return Fact(f"sysctl:{key}", f"cat {shlex.quote(path)} 2>/dev/null",
                lambda out: out.strip() or None)


def file_sha256(path: str) -> Fact[str | None]:
    return Fact(f"sha256:{path}", f"sha256sum {shlex.quote(path)} 2>/dev/null",
                lambda out: out.split()[0] if out.strip() else None)


def file_size(path: str) -> Fact[int | None]:
    return Fact(f"size:{path}", f"wc -c < {shlex.quote(path)} 2>/dev/null",
                lambda out: int(out.strip()) if out.strip().isdigit() else None)


def file_content(path: str) -> Fact[str | None]:
    return Fact(f"content:{path}", f"cat {shlex.quote(path)} 2>/dev/null",
                lambda out: out if out else None)


def command_exists(name: str) -> Fact[bool]:
    return Fact(f"which:{name}", f"command -v {shlex.quote(name)} >/dev/null && echo yes",
                lambda out: out.strip() == "yes")


def service_state(unit: str) -> Fact[tuple[bool, bool]]:
    """(enabled, active) of a systemd unit."""
    quoted = shlex.quote(unit)
    return Fact(f"service:{unit}",
                f"systemctl is-enabled {quoted} 2>/dev/null; echo; systemctl is-active {quoted} 2>/dev/null",
                lambda out: (out.split("\n")[0].strip() == "enabled",
                             "active" in out.split("\n", 1)[-1].split()))


CONTAINERD_IMAGES: Fact[set[str]] = Fact(
    "containerd-images", "ctr -n k8s.io images ls -q 2>/dev/null", lambda out: set(_lines(out)))

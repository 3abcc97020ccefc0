"""Facts: read-only questions to a node, each one POSIX sh command and a parser.

Phases decide what to change from facts; ``--plan`` reads only facts. A fact never
changes a node. Commands here use nothing but sh, coreutils and /proc or /sys.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

from kubeferry.installer.ssh import Connection
from kubeferry.versions import release_in

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
LISTENING_PORTS: Fact[set[int]] = Fact(
    "listening-ports",
    # /proc/net/tcp{,6}: state 0A is LISTEN; the local port is hex after the colon
    "cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | awk '$4 == \"0A\" {split($2, a, \":\"); print a[2]}'",
    lambda out: {int(port, 16) for port in _lines(out)})


def sysctl(key: str) -> Fact[str | None]:
    path = "/proc/sys/" + key.replace(".", "/")
    return Fact(f"sysctl:{key}", f"cat {shlex.quote(path)} 2>/dev/null",
                lambda out: out.strip() or None)


def file_sha256(path: str) -> Fact[str | None]:
    return Fact(f"sha256:{path}", f"sha256sum {shlex.quote(path)} 2>/dev/null",
                lambda out: out.split()[0] if out.strip() else None)


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
                # `; true`: is-active exits 3 for an inactive unit, still an answer
                f"systemctl is-enabled {quoted} 2>/dev/null; echo;"
                f" systemctl is-active {quoted} 2>/dev/null; true",
                lambda out: (out.split("\n")[0].strip() == "enabled",
                             "active" in out.split("\n", 1)[-1].split()))


CONTAINERD_IMAGES: Fact[set[str]] = Fact(
    "containerd-images", "ctr -n k8s.io images ls -q 2>/dev/null", lambda out: set(_lines(out)))


# -- node preparation facts (preflight, os, packages, kernel, containerd, images) ------------


def _member(out: str) -> str | None:
    lines = out.split("\n")
    if lines[0].strip() != "yes":
        return None
    return release_in(out.split("\n", 1)[-1]) or ""


# None: kubeadm has not made this node part of a cluster (no kubelet.conf); else the version
# its kubelet runs ("" when `kubelet --version` says nothing)
CLUSTER_MEMBER: Fact[str | None] = Fact(
    "cluster-member",
    "test -e /etc/kubernetes/kubelet.conf && echo yes && { kubelet --version 2>/dev/null || true; }",
    _member)
BOOT_ID: Fact[str] = Fact("boot-id", "cat /proc/sys/kernel/random/boot_id", str.strip)
IPV4_ADDRESSES: Fact[list[str]] = Fact(
    "ipv4", "ip -o -4 addr show 2>/dev/null | awk '{print $4}'", _lines)  # "10.0.0.5/24"
RPM_GPG_KEYS: Fact[set[str]] = Fact(
    "rpm-gpg-keys", "rpm -q gpg-pubkey --qf '%{VERSION}\\n' 2>/dev/null",
    lambda out: {line.lower() for line in _lines(out) if " " not in line})
APT_HOLDS: Fact[set[str]] = Fact("apt-holds", "apt-mark showhold 2>/dev/null", lambda out: set(_lines(out)))
GRUB_DEFAULT_KERNEL: Fact[str] = Fact("grub-default", "grubby --default-kernel 2>/dev/null", str.strip)


def _module_states(out: str) -> dict[str, str]:
    states = {}
    for line in out.splitlines():
        name, _, rest = line.partition("\t")
        rc, _, said = rest.partition("\t")
        if not name:
            continue
        if rc.strip() != "0":
            states[name] = "missing: " + (said.strip() or f"modprobe exited {rc.strip()}")
        else:
            states[name] = "loadable" if "insmod" in said else "loaded"
    return states


def module_states(names: list[str]) -> Fact[dict[str, str]]:
    """Per module: ``loaded`` (loaded or built in), ``loadable``, or ``missing: <why>``.

    Asks ``modprobe -n -v`` (a dry run: prints the insmod it would do, nothing for a loaded
    or built-in module, fails for an unknown one), so it needs no /proc/modules.
    """
    words = " ".join(shlex.quote(name) for name in names)
    command = (f"for m in {words}; do out=$(modprobe -n -v \"$m\" 2>&1); rc=$?;"
               " printf '%s\\t%s\\t%s\\n' \"$m\" \"$rc\" \"$(printf '%s' \"$out\" | tr '\\n' ' ')\"; done")
    return Fact("modules:" + ",".join(names), command, _module_states)


def node_macs(address: str) -> Fact[list[str]]:
    """MACs of the node's hardware interfaces and of the one holding ``address``.

    Virtual interfaces (bridges, veths, calico's ``cali*`` which all share ee:ee:ee:ee:ee:ee,
    tunnels) are left out: they are alike on every node by design.
    """
    command = (
        "for i in /sys/class/net/*; do n=${i##*/}; [ \"$n\" = lo ] && continue;"
        " case $(readlink -f \"$i\") in */virtual/*)"
        f" ip -o -4 addr show dev \"$n\" 2>/dev/null | grep -qF \" {shlex.quote(address)}/\" || continue;;"
        " esac; cat \"$i/address\"; done 2>/dev/null")
    return Fact(f"macs:{address}", command,
                lambda out: sorted({line for line in _lines(out) if line != "00:00:00:00:00:00"}))


def path_space(path: str) -> Fact[tuple[str, int]]:
    """(mount point, free MB) of the filesystem that holds ``path`` (or its nearest parent)."""
    quoted = shlex.quote(path)
    command = (f"p={quoted}; while [ ! -e \"$p\" ]; do p=$(dirname \"$p\"); done;"
               " df -Pm \"$p\" | awk 'NR==2 {print $6, $4}'")

    def parse(out: str) -> tuple[str, int]:
        mount, _, free = out.strip().partition(" ")
        return mount or "?", _int(free)

    return Fact(f"space:{path}", command, parse)


def file_sizes_under(directory: str) -> Fact[dict[str, int]]:
    """Relative path -> size of every regular file under ``directory`` ({} if absent)."""
    command = (f"cd {shlex.quote(directory)} 2>/dev/null && find . -type f -exec wc -c {{}} + | "
               "awk '$2 != \"total\" {print $1, substr($2, 3)}'")

    def parse(out: str) -> dict[str, int]:
        sizes = {}
        for line in out.splitlines():
            size, _, path = line.partition(" ")
            if size.isdigit() and path:
                sizes[path] = int(size)
        return sizes

    return Fact(f"files:{directory}", command, parse)


def installed_debs(names: list[str]) -> Fact[dict[str, str]]:
    """name -> version of each of ``names`` that dpkg has installed."""
    words = " ".join(shlex.quote(name) for name in names)
    # dpkg-query fails when one name is unknown: still a valid answer for the others
    command = (f"dpkg-query -W -f='${{Package}}\\t${{Version}}\\t${{db:Status-Abbrev}}\\n' {words}"
               " 2>/dev/null || true")

    def parse(out: str) -> dict[str, str]:
        found = {}
        for line in out.splitlines():
            parts = line.split("\t")
            if len(parts) == 3 and parts[2][1:2] == "i":  # ii, hi: installed
                found[parts[0]] = parts[1]
        return found

    return Fact("debs:" + ",".join(names), command, parse)


def installed_rpms(names: list[str]) -> Fact[dict[str, list[str]]]:
    """name -> every installed ``epoch:version-release`` of each of ``names``."""
    words = " ".join(shlex.quote(name) for name in names)
    command = f"rpm -q --qf '%{{NAME}}\\t%{{EPOCH}}:%{{VERSION}}-%{{RELEASE}}\\n' {words} 2>/dev/null || true"

    def parse(out: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for line in out.splitlines():
            name, tab, evr = line.partition("\t")
            if tab:
                found.setdefault(name, []).append(evr.replace("(none):", "0:"))
        return found

    return Fact("rpms:" + ",".join(names), command, parse)


def _image_digests(out: str) -> dict[str, str]:
    found = {}
    for line in out.splitlines()[1:]:  # REF TYPE DIGEST SIZE PLATFORMS LABELS
        fields = line.split()
        if len(fields) >= 3 and fields[2].startswith("sha256:"):
            found[fields[0]] = fields[2]
    return found


CONTAINERD_IMAGE_DIGESTS: Fact[dict[str, str]] = Fact(
    "containerd-image-digests", "ctr -n k8s.io images ls 2>/dev/null", _image_digests)

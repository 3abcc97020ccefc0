"""A stand-in for an SSH connection: answers the installer's fact commands as a given node
would (EL7, EL8, ...), records every command, and changes nothing anywhere.

Used through the InstallContext seam (``connector``) for parsing and ``--plan`` output only:
what the EL path's commands do is checked on the lab's EL nodes (tests/e2e). Unknown commands
fail the test loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Union

from kubeferry.installer.inventory import Host
from kubeferry.installer.ssh import CommandFailed, CommandResult

Answer = Union[str, tuple[str, int], Callable[[str], tuple[str, int]]]

EL7_OS_RELEASE = ('NAME="CentOS Linux"\nVERSION="7 (Core)"\nID="centos"\nID_LIKE="rhel fedora"\n'
                  'VERSION_ID="7"\nPRETTY_NAME="CentOS Linux 7 (Core)"\n')
EL8_OS_RELEASE = ('NAME="Rocky Linux"\nVERSION="8.9 (Green Obsidian)"\nID="rocky"\n'
                  'ID_LIKE="rhel centos fedora"\nVERSION_ID="8.9"\n')
FSTAB = ("/dev/mapper/centos-root /                       xfs     defaults        0 0\n"
         "UUID=2d6a8a6c /boot                   xfs     defaults        0 0\n"
         "/dev/mapper/centos-swap swap                    swap    defaults        0 0\n")


def _modules(kernel: str, missing: tuple[str, ...]) -> Callable[[str], tuple[str, int]]:
    def answer(command: str) -> tuple[str, int]:
        names = re.search(r"for m in (.*?); do", command).group(1).split()
        lines = []
        for name in names:
            if name in missing:
                lines.append(f"{name}\t1\tmodprobe: FATAL: Module {name} not found in directory"
                             f" /lib/modules/{kernel}")
            else:
                lines.append(f"{name}\t0\tinsmod /lib/modules/{kernel}/kernel/net/{name}.ko.xz ")
        return "\n".join(lines) + "\n", 0
    return answer


def el_answers(os_release: str = EL7_OS_RELEASE, kernel: str = "3.10.0-1160.el7.x86_64",
               address: str = "192.168.40.180", uuid: str = "4c4c4544-0000-1000-8000-000000000001",
               missing_modules: tuple[str, ...] = ()) -> list[tuple[str, Answer]]:
    """(regex, answer) pairs for a fresh minimal EL node (first match wins)."""
    return [
        (r"^cat /etc/os-release$", os_release),
        (r"^uname -m$", "x86_64\n"),
        (r"^uname -r$", kernel + "\n"),
        (r"^cat /proc/sys/kernel/hostname$", "node\n"),
        (r"^nproc$", "4\n"),
        (r"MemTotal", "7821\n"),
        (r"/proc/swaps", "/dev/dm-1\n"),
        (r"/sys/fs/selinux/enforce", "1\n"),
        (r"^systemctl is-active firewalld", ("active\n", 0)),
        (r"^date \+%s\.%N$", lambda command: (f"{__import__('time').time():.6f}\n", 0)),
        (r"product_uuid", uuid + "\n"),
        (r"/etc/machine-id", uuid.replace("-", "") + "\n"),
        (r"^for i in /sys/class/net/\*", "52:54:00:12:34:56\n"),
        (r"/proc/net/tcp", "0016\n"),  # sshd on 22
        (r"kubelet\.conf", ("", 1)),
        (r"df -Pm", "/ 51200\n"),
        (r"find \. -type f", ("", 1)),
        (r"^ctr -n k8s\.io images ls", "REF TYPE DIGEST SIZE PLATFORMS LABELS\n"),
        (r"^for m in ", _modules(kernel, missing_modules)),
        (r"^cat /proc/sys/net/", "0\n"),
        (r"^cat /etc/fstab", FSTAB),
        (r"^cat /etc/selinux/config", "SELINUX=enforcing\nSELINUXTYPE=targeted\n"),
        (r"^cat /etc/hosts", "127.0.0.1   localhost localhost.localdomain\n"),
        (r"^sha256sum ", ("", 1)),
        (r"^systemctl is-enabled 'firewalld'|^systemctl is-enabled firewalld", "enabled\n\nactive\n"),
        (r"^systemctl is-enabled", "disabled\n\ninactive\n"),
        (r"^command -v chronyd", "yes\n"),
        (r"^ip -o -4 addr show", f"{address}/24\n"),
        (r"^rpm -q gpg-pubkey", ("package gpg-pubkey is not installed\n", 1)),
        (r"^(yum|dnf) -q --disablerepo='\*' versionlock list", ""),
        (r"^rpm -q --qf", ""),
        (r"^grubby --default-kernel", f"/boot/vmlinuz-{kernel}\n"),
        (r"boot_id", "0b5e6c9e-0000-4000-8000-000000000001\n"),
        (r"^cat /var/lib/kubeferry/phases/", ("", 1)),
        (r"^cat /var/lib/kubeferry/bundle\.verified", ("", 1)),
        (r"^cd /var/lib/kubeferry/bundle", ("", 1)),
    ]


@dataclass
class FakeNode:
    """The connection-shaped stand-in (``run``, ``upload``, ``close``, ``host``)."""

    host: Host
    answers: list[tuple[str, Answer]]
    commands: list[str] = field(default_factory=list)
    overrides: list[tuple[str, Answer]] = field(default_factory=list)

    def answer(self, pattern: str, value: Answer) -> None:
        """Answer commands matching ``pattern`` with ``value`` from now on (before defaults)."""
        self.overrides.insert(0, (pattern, value))

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = 600,
            check: bool = True) -> CommandResult:
        self.commands.append(command)
        for pattern, value in [*self.overrides, *self.answers]:
            if re.search(pattern, command):
                if callable(value):
                    stdout, rc = value(command)
                elif isinstance(value, tuple):
                    stdout, rc = value
                else:
                    stdout, rc = value, 0
                result = CommandResult(command, rc, stdout, "")
                if check and rc != 0:
                    raise CommandFailed(self.host.name, result)
                return result
        raise AssertionError(f"{self.host.name}: the fake node has no answer for: {command}")

    def upload(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("the fake node takes no uploads")

    def close(self) -> None:
        pass

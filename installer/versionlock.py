"""EL: kubeadm, kubelet and kubectl locked at the bundle's version against upgrades (apt's
``apt-mark hold`` on Debian/Ubuntu), with the versionlock plugin the bundle carries
(EL7 ``yum-plugin-versionlock``, EL8/9 ``python3-dnf-plugin-versionlock``).

A lock hides every other version from yum/dnf, a newer bundle's too: a lock at another
version is deleted before the install and the new one added after it. Every call runs with
``--disablerepo='*'``: the node's own repositories (a site's mirror may be unreachable) are
never read.
"""

from __future__ import annotations

import re
import shlex

from kubeferry.installer.facts import Fact
from kubeferry.installer.operations import Step
from kubeferry.installer.ssh import Connection

# dnf: ``kubeadm-0:1.25.0-0.*``; yum's plugin: ``0:kubeadm-1.25.0-0.*``
_YUM_FORM = re.compile(r"^(?P<epoch>\d+):(?P<name>.+)-(?P<ver>[^-]+)-(?P<rel>[^-]+?)(\.\*)?$")
_DNF_FORM = re.compile(r"^(?P<name>.+)-(?P<epoch>\d+):(?P<ver>[^-]+)-(?P<rel>[^-]+?)(\.\*)?$")


def parse_entry(line: str) -> tuple[str, str] | None:
    """``(name, epoch:version-release)`` of one locklist entry, None for anything else."""
    line = line.strip()
    match = _YUM_FORM.match(line) or _DNF_FORM.match(line)
    if match is None or line.startswith("!"):  # '!' entries exclude, they do not lock
        return None
    return match["name"], f"{match['epoch']}:{match['ver']}-{match['rel']}"


def locks(packager: str) -> Fact[dict[str, list[tuple[str, str]]]]:
    """name -> [(entry as listed, epoch:version-release)] of every versionlock entry."""
    def parse(out: str) -> dict[str, list[tuple[str, str]]]:
        found: dict[str, list[tuple[str, str]]] = {}
        for line in out.splitlines():
            parsed = parse_entry(line)
            if parsed is not None:
                found.setdefault(parsed[0], []).append((line.strip(), parsed[1]))
        return found

    return Fact("versionlocks",
                f"{packager} -q --disablerepo='*' versionlock list 2>/dev/null || true", parse)


def _command(packager: str, action: str, specs: list[str]) -> str:
    return (f"{packager} -q --disablerepo='*' versionlock {action} "
            + " ".join(shlex.quote(spec) for spec in specs) + " >/dev/null")


Wanted = dict[str, tuple[str, str]]  # name -> (epoch:version-release, install spec)


def unlock_steps(conn: Connection, packager: str, wanted: Wanted) -> list[Step]:
    """Delete the locks of ``wanted`` names at other versions (before the install)."""
    current = locks(packager).read(conn)
    stale = [entry for name, (evr, _spec) in wanted.items()
             for entry, locked in current.get(name, []) if locked != evr]
    if not stale:
        return []
    return [Step(f"{packager} versionlock delete {' '.join(stale)}",
                 _command(packager, "delete", stale))]


def lock_steps(conn: Connection, packager: str, wanted: Wanted) -> list[Step]:
    """Lock each of ``wanted`` at its version unless it already is (after the install)."""
    current = locks(packager).read(conn)
    missing = [spec for name, (evr, spec) in wanted.items()
               if evr not in {locked for _entry, locked in current.get(name, [])}]
    if not missing:
        return []
    return [Step(f"{packager} versionlock add {' '.join(missing)}",
                 _command(packager, "add", missing))]

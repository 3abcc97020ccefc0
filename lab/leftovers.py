"""What a site left on this machine, found by the lab's naming rules rather than its journal.

``down`` ends with this check, and tests use it: a journal can only undo what it recorded,
this sees what is actually there (namespaces, links, firewall rules, cgroups, processes,
mounts, directories).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from kubeferry.lab import cgroups, network, paths, proc


def bridge_name(site: str) -> str:
    return f"kf-{site}"


def link_name(site: str, kind: str, index: int) -> str:
    """A host-side veth: ``kind`` n (node) or h (service host). Site names hold no '-',
    so one site's names never match another's patterns (15 characters at most)."""
    return f"kf-{site}-{kind}{index}"


def netns_name(site: str, member: str) -> str:
    return f"kf-{site}-{member}"


def firewall_tag(site: str) -> str:
    return f"kubeferry-lab:{site}"


def find(site: str) -> list[str]:
    """One line per thing of ``site`` still present; empty when it is all gone."""
    found: list[str] = []
    prefix = f"kf-{site}-"
    if network.NETNS_DIR.is_dir():
        found += [f"netns {n}" for n in sorted(os.listdir(network.NETNS_DIR))
                  if n.startswith(prefix)]
    if network.NETNS_ETC.is_dir():
        found += [f"directory {network.NETNS_ETC / n}" for n in sorted(os.listdir(network.NETNS_ETC))
                  if n.startswith(prefix)]
    found += [f"link {n}" for n in sorted(os.listdir("/sys/class/net"))
              if n == bridge_name(site) or n.startswith(prefix)]
    rules = proc.run(["iptables", "-w", "5", "-S"]).stdout.decode()
    tag = re.compile(rf'--comment "?{re.escape(firewall_tag(site))}"?(\s|$)')
    found += [f"iptables {line}" for line in rules.splitlines() if tag.search(line)]
    try:
        group = cgroups.site_path(site)
    except Exception:  # noqa: BLE001 - no cgroup2 at all: nothing of ours can be there
        group = None
    if group is not None and group.exists():
        found.append(f"cgroup {group}")
    found += [f"process {pid}" for pid in _processes_in(site)]
    places = [paths.run_dir() / site, paths.data_dir() / site]
    found += [f"mount {m}" for m in mounts_under(places)]
    found += [f"mount {m}" for m in foreign_mounts(places)]
    found += [f"directory {p}" for p in places if p.exists()]
    return found


def _processes_in(site: str) -> list[int]:
    marker = f"/{cgroups.LAB_GROUP}/{site}/"
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path("/proc", entry, "cgroup").read_text()
        except OSError:
            continue
        in_site = any(line.startswith("0::") and marker in line[3:] + "/"
                      for line in text.splitlines())
        # A zombie holds nothing but its pid until its parent (maybe PID 1) collects it.
        if in_site and proc.is_same_process(int(entry), None):
            pids.append(int(entry))
    return pids


def mounts_under(places: list[Path]) -> list[str]:
    """Mount points at or below any of ``places`` in this process's mount namespace."""
    found = []
    with open("/proc/self/mountinfo") as stream:
        for line in stream:
            point = line.split()[4].replace("\\040", " ")
            for place in places:
                if point == str(place) or point.startswith(f"{place}/"):
                    found.append(point)
    return found


def foreign_mounts(places: list[Path]) -> list[str]:
    """Mounts below ``places`` in other processes' mount namespaces (the admin host's
    holder keeps its overlay in one): a namespace something still holds open.

    Only namespaces whose processes see this machine's root are read: a node pivots into
    its own root, where a path like /var/lib/kubeferry-lab/... means something else.
    """
    own = _mount_namespace("self")
    root = os.stat("/")
    seen = {own}
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        namespace = _mount_namespace(entry)
        if namespace is None or namespace in seen:
            continue
        try:
            their_root = os.stat(f"/proc/{entry}/root")
            with open(f"/proc/{entry}/mountinfo") as stream:
                points = [line.split()[4].replace("\\040", " ") for line in stream]
        except OSError:
            continue
        seen.add(namespace)
        if (their_root.st_dev, their_root.st_ino) != (root.st_dev, root.st_ino):
            continue
        found += [f"{point} (mount namespace of pid {entry})" for point in points
                  if any(point == str(p) or point.startswith(f"{p}/") for p in places)]
    return found


def _mount_namespace(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None

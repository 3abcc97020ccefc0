"""A lab site's internet: the stand-in registry and package server, on the admin host's loopback.

``up(site, "1.25.0")`` starts Debian's docker-registry seeded with every image of the release
under its real repository path (``lab/upstream.py``) and a static HTTP server for the
stand-in package repositories and pinned files (``lab/upstream_packages.py``), then writes
``lab-sources.yaml`` into the site's state directory, so that

    kubeferry bundle build --k8s 1.25.0 --os debian12 --include images,packages,files \\
        --sources /run/kubeferry-lab/<site>/lab-sources.yaml

builds a real bundle (Debian's own packages from the real deb.debian.org) that the site's
nodes can install; with ``os_name`` el8 the OS repositories (Rocky's BaseOS and AppStream,
Docker CE) are stood in too (``lab/el_upstream.py``). Both processes run in the cgroup
``<site>/upstream`` and are recorded in the site's journal (pid and start time), so
``down(site)`` or the site's own ``down`` stops them by pid, also after a crash. The nodes
cannot reach them: the air gap holds.
"""

from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import requests
import yaml

from kubeferry.bundler.repositories import os_spec
from kubeferry.errors import InputError, OperationError
from kubeferry.lab import cgroups, node, proc, teardown
from kubeferry.lab import site as lab_site
from kubeferry.lab.el_upstream import add_el_repos
from kubeferry.lab.el_upstream import supported as el_supported
from kubeferry.lab.registry import Registry, free_port
from kubeferry.lab.service_host import start_recorded
from kubeferry.lab.static_http import LOOPBACK
from kubeferry.lab.upstream import PROFILES, seed_upstream
from kubeferry.lab.upstream_packages import has_reference_files, lab_sources, make_tree
from kubeferry.versions import image_set

if TYPE_CHECKING:
    from kubeferry.lab.site import Site

SOURCES_FILE = "lab-sources.yaml"
READY_TIMEOUT = 30.0
_PROBE_TIMEOUT = 2.0
Log = Callable[[str], None]


@dataclass(frozen=True)
class Upstream:
    """A running upstream: where its registry and package server answer, for which release."""

    kubernetes: str
    os: str
    profile: str
    registry_url: str
    repo_url: str
    sources_file: Path

    def sources(self, os_name: str | None = None, arch: str = "amd64") -> dict[str, Any]:
        """The ``--sources`` document for a build of this release for ``os_name``."""
        return lab_sources(self.kubernetes, os_name or self.os, self.repo_url, self.registry_url,
                           arch)

    def to_dict(self) -> dict[str, str]:
        return {"kubernetes": self.kubernetes, "os": self.os, "profile": self.profile,
                "registry_url": self.registry_url, "repo_url": self.repo_url,
                "sources_file": str(self.sources_file)}


def _quiet(_line: str) -> None:
    pass


def directory(site: Site) -> Path:
    """The upstream's files: registry storage, the package tree, logs (in the site's data)."""
    return site.data_directory / "upstream"


def current(site: Site) -> Upstream | None:
    """The site's upstream as its journal records it, or None."""
    data = site.journal.site.get("upstream")
    if not data:
        return None
    return Upstream(**{**data, "sources_file": Path(data["sources_file"])})


def healthy(site: Site) -> bool:
    """Both upstream processes are alive (the journal's pids, checked by start time)."""
    processes = [r for r in site.journal.resources
                 if r.get("upstream") and r["kind"] == "process"]
    return len(processes) == 2 and all(
        r.get("pid") and proc.is_same_process(r["pid"], r.get("started")) for r in processes)


def up(site: Site, kubernetes: str, os_name: str = "debian12", profile: str = "tiny",
       log: Log = _quiet) -> Upstream:
    """Start (or keep) the site's upstream for ``kubernetes``; writes ``lab-sources.yaml``.

    A healthy upstream of the same release and profile is kept (its sources file is rewritten
    for ``os_name``); anything else is stopped first.
    """
    image_set(kubernetes)  # InputError for a release kubeferry does not know
    os_spec(os_name)  # InputError naming the supported OSes
    if profile not in PROFILES:
        raise InputError(f"--profile {profile!r}: choose one of {', '.join(PROFILES)}")
    with lab_site.SiteLock(site.name):  # one up/down at a time, as for the site itself
        return _up(site, kubernetes, os_name, profile, log)


def _up(site: Site, kubernetes: str, os_name: str, profile: str, log: Log) -> Upstream:
    existing = current(site)
    if existing is not None:
        if healthy(site) and (existing.kubernetes, existing.profile) == (kubernetes, profile):
            if os_name in el_supported():  # another OS than it was started for: its repositories
                add_el_repos(directory(site) / "www", os_name)
            kept = Upstream(**{**existing.to_dict(), "os": os_name,
                               "sources_file": existing.sources_file})
            _write_sources(site, kept)
            log(f"upstream of lab {site.name} is already up for {kubernetes}")
            return kept
        log(f"replacing the upstream of lab {site.name} ({existing.kubernetes})")
        _down(site)
    try:
        return _start(site, kubernetes, os_name, profile, log)
    except BaseException:
        with contextlib.suppress(OperationError):  # the first error is the one to report
            _down(site)
        raise


def down(site: Site) -> bool:
    """Stop the site's upstream processes and remove its files; False if there was none."""
    with lab_site.SiteLock(site.name):
        return _down(site)


def _down(site: Site) -> bool:
    journal = site.journal
    mine = [r for r in journal.resources if r.get("upstream")]
    errors = []
    for resource in reversed(mine):
        try:
            teardown.remove(resource)
        except OperationError as error:
            errors.append(str(error))
            continue
        journal.discard(resource)
    if errors:
        raise OperationError(f"upstream of lab {site.name}: {errors[0]}; run down again")
    upstream = current(site)
    (site.directory / SOURCES_FILE).unlink(missing_ok=True)
    if "upstream" in journal.site:
        del journal.site["upstream"]
        journal.save()
    return bool(mine or upstream)


def _start(site: Site, kubernetes: str, os_name: str, profile: str, log: Log) -> Upstream:
    journal = site.journal
    root = directory(site)
    journal.add("dir", path=str(root), upstream=True)
    root.mkdir(parents=True, exist_ok=True)
    group = cgroups.site_path(site.name) / "upstream"
    journal.add("cgroup", path=str(group), upstream=True)
    cgroups.create(group)

    log(f"building the stand-in package repositories for {kubernetes}")
    # a release whose calico.yaml the lab has no copy of is served without pinned files: its
    # bundles are built with --include kubeferry,images,packages (lab/scenario.py)
    tree = make_tree(root / "www", kubernetes, oses=[os_name], files=has_reference_files(kubernetes))

    registry = Registry(root / "registry", addr=LOOPBACK, port=free_port(LOOPBACK))
    start_recorded(journal, str(group), registry.prepare(), log=registry.log_file,
                   ready=lambda: "listening on" in registry.log(), ready_timeout=READY_TIMEOUT,
                   what="the upstream registry",
                   record={"role": "upstream-registry", "upstream": True})

    port_file = root / "http.port"
    port_file.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "kubeferry.lab.static_http", str(tree),
            "--port-file", str(port_file), "--addr", LOOPBACK]
    start_recorded(journal, str(group), argv, log=root / "http.log",
                   ready=lambda: _port(port_file) is not None, ready_timeout=READY_TIMEOUT,
                   what="the upstream package server",
                   record={"role": "upstream-packages", "upstream": True},
                   env={**os.environ, "PYTHONUNBUFFERED": "1"})
    repo_url = f"http://{LOOPBACK}:{_port(port_file)}"
    if not _answers(f"{repo_url}/keys/debian-archive-keyring.gpg"):
        raise OperationError(f"the upstream package server at {repo_url} does not answer")

    log(f"seeding the stand-in registry {registry.url} with the images of {kubernetes}")
    seed_upstream(registry.url, kubernetes, profile=profile)
    upstream = Upstream(kubernetes=kubernetes, os=os_name, profile=profile,
                        registry_url=registry.url, repo_url=repo_url,
                        sources_file=site.directory / SOURCES_FILE)
    journal.site["upstream"] = upstream.to_dict()
    journal.save()
    _write_sources(site, upstream)
    return upstream


def _port(port_file: Path) -> int | None:
    try:
        port = int(port_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return port if node.port_open(LOOPBACK, port) else None


def _answers(url: str) -> bool:
    try:
        return requests.head(url, timeout=_PROBE_TIMEOUT).status_code == 200
    except requests.RequestException:
        return False


def _write_sources(site: Site, upstream: Upstream) -> None:
    header = (
        f"# The lab {site.name}'s upstream on loopback, for a build of Kubernetes "
        f"{upstream.kubernetes} ({upstream.os}):\n"
        f"#   kubeferry bundle build --k8s {upstream.kubernetes} --os {upstream.os} "
        f"--include images,packages,files --sources {upstream.sources_file}\n"
        "# registry.k8s.io and docker.io are the stand-in registry; the Kubernetes repository,\n"
        "# its key, Debian's keys and the pinned files the stand-in package server; Debian's\n"
        "# archive is the real one. Written by 'kubeferry-lab upstream up'.\n"
    )
    body = yaml.safe_dump(upstream.sources(), sort_keys=False)
    target = upstream.sources_file
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(header + body)
    os.replace(tmp, target)

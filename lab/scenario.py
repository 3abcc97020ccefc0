"""The main job end to end on the lab: build a bundle against the stand-in internet, install
it on air-gapped nodes with a Harbor stand-in, as an operator would. Used by scripts/demo
and the end-to-end tests.

The build runs here, on the internet side; the install runs on the site's own air-gapped
admin host (``lab/admin_host.py``): the bundle file is copied onto it with the files the
inventory names, ``kubeferry.pyz`` is extracted from the bundle with tar, and the stock
``python3`` runs it. Nothing of this machine's kubeferry or venv is used there.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubeferry.errors import OperationError
from kubeferry.lab import network, upstream_service
from kubeferry.lab.admin_host import AdminHost
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.inventory import lab_inventory, write_inventory
from kubeferry.lab.site import HARBOR_HOST, Site, up_retrying
from kubeferry.lab.upstream_packages import has_reference_files

# Debian packages for the bundle come from the real archive once, then from this cache.
BUNDLE_CACHE = Path(os.environ.get("KUBEFERRY_LAB_BUNDLE_CACHE", "/var/cache/kubeferry-lab/bundle-cache"))
PASSWORD_ENV = "KUBEFERRY_LAB_HARBOR_PASSWORD"
KIT = "kubeferry.pyz"
# On the admin host: the operator's home, where the bundle and the kit go, and the site's
# files (inventory, SSH key, known_hosts, Harbor CA, run directories).
ADMIN_HOME = "/root"
ADMIN_SITE = "/root/site"
INSTALL_TIMEOUT = 3600.0


@dataclass
class Scenario:
    site: Site
    harbor: HarborStandIn | None  # None: `registry: none`, images only by ctr import
    bundle: Path  # as built on the internet side
    inventory: Path  # a copy on the internet side, to read; the admin host has its own
    work: Path
    admin: AdminHost
    admin_bundle: str  # the bundle's path on the admin host (its first part, if split)
    admin_inventory: str
    split: bool = False  # carried as parts (``bundle split``), read in place from the parts

    def kubeferry(self, command: str, *args: str, run_dir: str = "run") -> subprocess.CompletedProcess[str]:
        """``python3 kubeferry.pyz COMMAND ... --inventory cluster.yaml`` on the admin host
        (the kit of the installed bundle; Harbor's password via env)."""
        env = {PASSWORD_ENV: self.harbor.admin_password} if self.harbor is not None else {}
        return self.admin.run(
            ["python3", self.kit(), command, *args, "--inventory", self.admin_inventory,
             "--run-dir", f"{ADMIN_SITE}/{run_dir}"], env=env, timeout=INSTALL_TIMEOUT)

    def install(self, *args: str, run_dir: str = "run") -> subprocess.CompletedProcess[str]:
        """``python3 kubeferry.pyz install`` with the scenario's bundle."""
        return self.kubeferry("install", "--bundle", self.admin_bundle, "--yes", *args, run_dir=run_dir)

    def upgrade(self, admin_bundle: str, *args: str,
                run_dir: str = "upgrade") -> subprocess.CompletedProcess[str]:
        """``python3 kubeferry.pyz upgrade`` to the bundle at ``admin_bundle`` on the admin host."""
        return self.kubeferry("upgrade", "--bundle", admin_bundle, *args, run_dir=run_dir)

    def carry_bundle(self, kubernetes: str, log: Callable[[str], None] = lambda line: None) -> str:
        """A bundle of another release, built against the stand-in upstream of that release and
        carried onto the admin host; its path there. A release whose calico.yaml the lab has
        no copy of is built without pinned files (docs/lab.md)."""
        upstream = upstream_service.up(self.site, kubernetes, self.site.os, log=log)
        out = self.work / f"bundles-{kubernetes}"
        include = [] if has_reference_files(kubernetes) else ["--include", "kubeferry,images,packages"]
        log(f"building the bundle of {kubernetes}")
        subprocess.run([sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", kubernetes,
                        "--os", self.site.os, "--sources", str(upstream.sources_file), *include,
                        "--cache-dir", str(BUNDLE_CACHE), "--output", str(out), "--quiet"],
                       check=True, timeout=3600, stdin=subprocess.DEVNULL)
        bundle = next(out.glob("*.tar"))
        log(f"carrying {bundle.name} onto the air-gapped admin host ({self.admin.address})")
        return self.admin.put(bundle, f"{ADMIN_HOME}/{bundle.name}")

    def kit(self) -> str:
        """``kubeferry.pyz`` on the admin host, extracted from the bundle with tar (once)."""
        kit = f"{ADMIN_HOME}/{KIT}"
        if self.admin.run(["test", "-f", kit]).returncode == 0:
            return kit
        if self.split:  # tar reads the parts as one stream: cat NAME.001 NAME.002 ... | tar
            base = self.admin_bundle[:-len(".001")]
            extract = ["sh", "-c", f"cat {shlex.quote(base)}.[0-9][0-9][0-9] | tar -xf - -C {ADMIN_HOME}"
                       f" --occurrence {KIT}"]
        else:
            extract = ["tar", "-xf", self.admin_bundle, "-C", ADMIN_HOME, "--occurrence", KIT]
        extracted = self.admin.run(extract, timeout=300)
        if extracted.returncode != 0:
            raise OperationError(
                f"bundle {self.bundle.name} has no {KIT} (tar: "
                f"{(extracted.stderr.strip() or 'no output').splitlines()[0]}): "
                "the air-gapped admin host has no other kubeferry to run")
        return kit

    def run_path(self, run_dir: str = "run") -> Path:
        """Where an install's run directory (its logs) is, to read from this machine."""
        return self.admin.path(f"{ADMIN_SITE}/{run_dir}")


def site_up(name: str, nodes: int, log: Callable[[str], None] = lambda line: None,
            attempts: int = 2, os_name: str = "debian12") -> Site:
    """A site whose registry name is the Harbor stand-in's address (no DNS in the air gap).

    On a heavily loaded machine a node's boot can miss the lab's readiness deadline
    (docs/lab.md, Limits); a failed ``up`` is taken down completely and tried once more.
    """
    def start() -> Site:
        subnet = network.free_subnet("10.88.1.0/24")  # anew each try: another lab may take it
        registry = str(subnet.network_address + HARBOR_HOST)
        return Site.up(nodes=nodes, name=name, subnet=str(subnet), registry_name=registry, log=log,
                       os_name=os_name)

    return up_retrying(start, name, attempts, log)


def prepare(site: Site, work: Path, kubernetes: str = "1.25.0", ha: bool = False,
            log: Callable[[str], None] = lambda line: None, harbor: bool = True,
            lb_host: bool = False, split: str | None = None) -> Scenario:
    """Upstream stand-in, a bundle for the site's node OS built against it, Harbor on .2 (or, with
    ``harbor=False``, ``registry: none``), an inventory: node1 control plane, the rest
    workers; ``ha``: node1-3 control planes behind the VIP on port 8443; ``lb_host``: node1
    holds the VIP (haproxy + keepalived only), node2 is the control plane; ``split``: the
    bundle crosses as parts of that size (``bundle split --size``)."""
    work.mkdir(parents=True, exist_ok=True)
    upstream = upstream_service.up(site, kubernetes, site.os, log=log)
    log("building the bundle" + (" (Debian packages from deb.debian.org, cached)"
                                 if site.os == "debian12" else f" ({site.os}: the stand-in repositories)"))
    subprocess.run([sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", kubernetes,
                    "--os", site.os, "--sources", str(upstream.sources_file),
                    "--cache-dir", str(BUNDLE_CACHE), "--output", str(work / "bundles"), "--quiet"],
                   check=True, timeout=3600, stdin=subprocess.DEVNULL)
    bundle = next((work / "bundles").glob("*.tar"))
    standin, registry = _harbor(site, work) if harbor else (None, "none")
    if ha or lb_host:
        control_planes = site.nodes[:3] if ha else site.nodes[1:2]
        roles = {node.name: ["worker"] for node in site.nodes}
        roles.update({node.name: ["control-plane"] for node in control_planes})
        if lb_host:
            roles[site.nodes[0].name] = ["lb"]
        port = 8443 if ha else 6443  # haproxy beside an API server cannot take 6443
        data = lab_inventory(site, roles=roles, registry=registry,
                             controlPlaneEndpoint=f"{site.vip}:{port}", vip=site.vip)
    else:
        data = lab_inventory(site, registry=registry)
    return _onto_admin_host(site, standin, bundle, data, work, log, split)


def _onto_admin_host(site: Site, harbor: HarborStandIn | None, bundle: Path,
                     data: dict, work: Path, log: Callable[[str], None],
                     split: str | None = None) -> Scenario:
    """The admin host up, the bundle (or its parts) and the inventory's files carried onto
    it, and the inventory rewritten with their paths there."""
    admin = AdminHost.up(site)
    carried = [bundle]
    if split is not None:
        subprocess.run([sys.executable, "-m", "kubeferry.cli", "bundle", "split", str(bundle),
                        "--size", split, "--output", str(work / "parts")],
                       check=True, timeout=600, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        carried = sorted((work / "parts").glob(bundle.name + ".[0-9][0-9][0-9]"))
    log(f"carrying {', '.join(p.name for p in carried)} onto the air-gapped admin host ({admin.address})")
    admin_bundle = [admin.put(part, f"{ADMIN_HOME}/{part.name}") for part in carried][0]
    data["ssh"]["keyFile"] = admin.put(site.ssh_key, f"{ADMIN_SITE}/id_ed25519", mode=0o600)
    data["ssh"]["knownHosts"] = admin.put(site.known_hosts_file, f"{ADMIN_SITE}/known_hosts")
    if harbor is not None:
        data["registry"]["caFile"] = admin.put(Path(harbor.ca_file), f"{ADMIN_SITE}/harbor-ca.crt")
    inventory = write_inventory(work / "cluster.yaml", data)
    admin_inventory = admin.put(inventory, f"{ADMIN_SITE}/cluster.yaml")
    return Scenario(site=site, harbor=harbor, bundle=bundle, inventory=inventory, work=work,
                    admin=admin, admin_bundle=admin_bundle, admin_inventory=admin_inventory,
                    split=split is not None)


def _harbor(site: Site, work: Path) -> tuple[HarborStandIn, dict[str, str]]:
    """The Harbor stand-in on the site's .2 and the inventory's ``registry`` section for it."""
    host = site.add_host("harbor", HARBOR_HOST)
    harbor = HarborStandIn(work / "harbor", addr=host.address, port=443).start_on(host)
    return harbor, {"url": harbor.url, "project": "google_containers", "username": "admin",
                    "passwordFrom": f"env:{PASSWORD_ENV}", "caFile": harbor.ca_file,
                    "address": host.address}

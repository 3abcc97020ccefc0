"""The main job end to end on the lab: build a bundle against the stand-in internet, install
it on air-gapped nodes with a Harbor stand-in, as an operator would. Used by scripts/demo
and the end-to-end tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from kubeferry.lab import network, upstream_service
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.inventory import lab_inventory, write_inventory
from kubeferry.lab.site import HARBOR_HOST, Site, up_retrying

# Debian packages for the bundle come from the real archive once, then from this cache.
BUNDLE_CACHE = Path(os.environ.get("KUBEFERRY_LAB_BUNDLE_CACHE", "/var/cache/kubeferry-lab/bundle-cache"))
PASSWORD_ENV = "KUBEFERRY_LAB_HARBOR_PASSWORD"


@dataclass
class Scenario:
    site: Site
    harbor: HarborStandIn | None  # None: `registry: none`, images only by ctr import
    bundle: Path
    inventory: Path
    work: Path

    def install(self, *args: str, run_dir: str = "run") -> subprocess.CompletedProcess[str]:
        """``kubeferry install`` of the scenario's bundle and inventory (password via env)."""
        env = dict(os.environ)
        if self.harbor is not None:
            env[PASSWORD_ENV] = self.harbor.admin_password
        return subprocess.run(
            [sys.executable, "-m", "kubeferry.cli", "install", "--bundle", str(self.bundle),
             "--inventory", str(self.inventory), "--yes", "--run-dir", str(self.work / run_dir),
             *args], capture_output=True, text=True, timeout=3600, env=env,
            stdin=subprocess.DEVNULL)


def site_up(name: str, nodes: int, log: Callable[[str], None] = lambda line: None,
            attempts: int = 2) -> Site:
    """A site whose registry name is the Harbor stand-in's address (no DNS in the air gap).

    On a heavily loaded machine a node's boot can miss the lab's readiness deadline
    (docs/lab.md, Limits); a failed ``up`` is taken down completely and tried once more.
    """
    def start() -> Site:
        subnet = network.free_subnet("10.88.1.0/24")  # anew each try: another lab may take it
        registry = str(subnet.network_address + HARBOR_HOST)
        return Site.up(nodes=nodes, name=name, subnet=str(subnet), registry_name=registry, log=log)

    return up_retrying(start, name, attempts, log)


def prepare(site: Site, work: Path, kubernetes: str = "1.25.0", ha: bool = False,
            log: Callable[[str], None] = lambda line: None, harbor: bool = True,
            lb_host: bool = False) -> Scenario:
    """Upstream stand-in, a debian12 bundle built against it, Harbor on .2 (or, with
    ``harbor=False``, ``registry: none``), an inventory: node1 control plane, the rest
    workers; ``ha``: node1-3 control planes behind the VIP on port 8443; ``lb_host``: node1
    holds the VIP (haproxy + keepalived only), node2 is the control plane."""
    work.mkdir(parents=True, exist_ok=True)
    upstream = upstream_service.up(site, kubernetes, "debian12", log=log)
    log("building the bundle (Debian packages from deb.debian.org, cached)")
    subprocess.run([sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", kubernetes,
                    "--os", "debian12", "--sources", str(upstream.sources_file),
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
    inventory = write_inventory(work / "cluster.yaml", data)
    return Scenario(site=site, harbor=standin, bundle=bundle, inventory=inventory, work=work)


def _harbor(site: Site, work: Path) -> tuple[HarborStandIn, dict[str, str]]:
    """The Harbor stand-in on the site's .2 and the inventory's ``registry`` section for it."""
    host = site.add_host("harbor", HARBOR_HOST)
    harbor = HarborStandIn(work / "harbor", addr=host.address, port=443).start_on(host)
    return harbor, {"url": harbor.url, "project": "google_containers", "username": "admin",
                    "passwordFrom": f"env:{PASSWORD_ENV}", "caFile": harbor.ca_file,
                    "address": host.address}

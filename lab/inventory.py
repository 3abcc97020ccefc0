"""An inventory for a running lab site, as an operator would write it for real nodes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubeferry.lab.site import Site


def lab_inventory(site: Site, roles: dict[str, list[str]] | None = None,
                  registry: dict[str, Any] | str = "none", **cluster: Any) -> dict[str, Any]:
    """Inventory data for ``site``: node1 control plane and the rest workers unless ``roles``."""
    roles = roles or {node.name: ["control-plane"] if index == 0 else ["worker"]
                      for index, node in enumerate(site.nodes)}
    first = site.nodes[0]
    settings = {"controlPlaneEndpoint": f"{first.address}:6443", "proxyMode": "iptables",
                "podSubnet": "10.244.0.0/16", "serviceSubnet": "10.96.0.0/12", **cluster}
    return {
        "cluster": settings,
        "registry": registry,
        "ssh": {"user": "root", "keyFile": str(site.ssh_key),
                "knownHosts": str(site.known_hosts_file)},
        "hosts": [{"name": node.name, "address": node.address, "roles": roles[node.name]}
                  for node in site.nodes if node.name in roles],
    }


def write_inventory(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path

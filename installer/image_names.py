"""Where each bundle image lives on the site: the names kubeadm, kubelet and calico ask for.

With a Harbor, every image is under the project as ``harbor_names.harbor_name`` maps it
(the one mapping the seeding uses); with ``registry: none`` the images keep their
upstream names, as ``ctr images import`` made them.
"""

from __future__ import annotations

from kubeferry.installer.harbor_names import harbor_name
from kubeferry.installer.inventory import RegistrySettings


def site_image(upstream: str, registry: RegistrySettings | None) -> str:
    """The name a node pulls or finds ``upstream`` under on this site."""
    return upstream if registry is None else harbor_name(upstream, registry)

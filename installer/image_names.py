"""Where each bundle image lives on the site: the names kubeadm, kubelet and calico ask for.

With a Harbor, every image is pushed under the project (``<harbor>/<project>/...``); with
``registry: none`` the images keep their upstream names, as ``ctr images import`` made them.
"""

from __future__ import annotations

from kubeferry.installer.inventory import RegistrySettings
from kubeferry.oci.reference import ImageReference

# kubeadm's repositories: their images go flat under the project, so that one
# ``imageRepository: <harbor>/<project>`` finds all of them (coredns included: kubeadm asks
# a custom repository for the flat ``<repo>/coredns``, FACTS.md GetDNSImage).
KUBEADM_REGISTRIES = ("registry.k8s.io", "k8s.gcr.io")


def harbor_name(upstream: str, registry: RegistrySettings) -> str:
    """The name of ``upstream`` in the site's Harbor.

    ``registry.k8s.io/coredns/coredns:v1.9.3`` -> ``<harbor>/<project>/coredns:v1.9.3``;
    ``docker.io/calico/node:v3.24.5`` -> ``<harbor>/<project>/calico/node:v3.24.5``.
    TODO(harbor): use kubeferry.installer.harbor.harbor_name (branch harbor, the seeding
    helper) once it lands; both must map names the same way.
    """
    ref = ImageReference.parse(upstream)
    repository = ref.repository
    if ref.registry in KUBEADM_REGISTRIES:
        repository = repository.rsplit("/", 1)[-1]
    suffix = f":{ref.tag}" if ref.tag else ""
    if ref.digest:
        suffix += f"@{ref.digest}"
    return f"{registry.repository}/{repository}{suffix}"


def site_image(upstream: str, registry: RegistrySettings | None) -> str:
    """The name a node pulls or finds ``upstream`` under on this site."""
    return upstream if registry is None else harbor_name(upstream, registry)

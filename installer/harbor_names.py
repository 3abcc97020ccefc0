"""Where each upstream image lives in the site's Harbor: the one name mapping.

Every phase that names an image in Harbor uses ``harbor_name``: the seeding (what is
pushed), containerd (``sandbox_image``), kubeadm (``imageRepository`` =
``settings.repository``) and cni (calico.yaml's images). The rule:

- the upstream registry is dropped and the repository path kept, under the project:
  ``registry.k8s.io/kube-apiserver:v1.25.0`` -> ``<harbor>/<project>/kube-apiserver:v1.25.0``,
  ``docker.io/calico/node:v3.24.5`` -> ``<harbor>/<project>/calico/node:v3.24.5``
  (Harbor allows nested repositories);
- coredns is flattened, because kubeadm with a custom ``imageRepository`` asks for
  ``<repo>/coredns:<tag>``, not ``<repo>/coredns/coredns:<tag>`` (images.go GetDNSImage):
  ``registry.k8s.io/coredns/coredns:v1.9.3`` -> ``<harbor>/<project>/coredns:v1.9.3``.

``harbor_names`` adds the aliases seeding also pushes (same manifest, blobs mounted, no
bytes sent): coredns under ``<project>/coredns/coredns`` too, so a kubeadm config that
sets ``dns.imageRepository: <harbor>/<project>/coredns`` resolves as well.
"""

from __future__ import annotations

from kubeferry.errors import InputError
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.oci.reference import ImageReference

# upstream repository -> path under the project, where it is not the repository itself
_FLATTENED = {"coredns/coredns": "coredns"}


def harbor_path(upstream: ImageReference) -> str:
    """The repository path under the project: ``kube-apiserver``, ``calico/node``, ``coredns``."""
    return _FLATTENED.get(upstream.repository, upstream.repository)


def harbor_reference(upstream_name: str, settings: RegistrySettings,
                     path: str | None = None) -> ImageReference:
    """``upstream_name`` as an ImageReference in Harbor (tag and digest kept)."""
    host = settings.host
    if "." not in host and ":" not in host and host != "localhost":
        # docker and containerd would read "harbor/google_containers/pause" as a Docker Hub name
        raise InputError(f"Harbor host {host!r} cannot start an image name: use its full DNS"
                         " name (harbor.example.local), an IP address, or add the port")
    upstream = ImageReference.parse(upstream_name)
    return ImageReference(
        registry=settings.host,
        repository=f"{settings.project}/{path or harbor_path(upstream)}",
        tag=upstream.tag,
        digest=upstream.digest,
    )


def harbor_name(upstream_name: str, settings: RegistrySettings) -> str:
    """The name the site pulls ``upstream_name`` by: ``harbor.example.local/google_containers/pause:3.8``."""
    return str(harbor_reference(upstream_name, settings))


def harbor_references(upstream_name: str, settings: RegistrySettings) -> list[ImageReference]:
    """Every reference seeding pushes for ``upstream_name``: ``harbor_name``'s first, then aliases."""
    upstream = ImageReference.parse(upstream_name)
    references = [harbor_reference(upstream_name, settings)]
    if upstream.repository in _FLATTENED:
        references.append(harbor_reference(upstream_name, settings, path=upstream.repository))
    return references


def harbor_names(upstream_name: str, settings: RegistrySettings) -> list[str]:
    """Every name seeding pushes for ``upstream_name``: ``harbor_name`` first, then aliases."""
    return [str(ref) for ref in harbor_references(upstream_name, settings)]

"""A debian12 bundle for the node preparation tests, built as ``bundle build`` builds one:

- images: the 1.25.0 image set, stand-ins pushed to a local registry under their upstream
  names (``kubeferry.lab.upstream``), pulled through the build's own image code;
- packages: Debian's real bookworm archive (deb.debian.org, the only outside host the
  tests may reach) plus the lab's stand-in kubeadm/kubelet/kubectl/cri-tools/kubernetes-cni
  .debs (``lab/standin_packages.build_debs``) in a flat repository signed with a throwaway
  key and served on loopback, resolved and written by ``build_packages``.

Downloads are cached under /var/cache/kubeferry-test (KUBEFERRY_TEST_CACHE).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from kubeferry.bundler.build import BuildRequest, bundle_metadata, effective_sources, image_source
from kubeferry.bundler.content import Content, Member
from kubeferry.bundler.images import layout_content, pull_images
from kubeferry.bundler.packages import build_packages
from kubeferry.bundler.sources import Sources
from kubeferry.bundler.writer import write_bundle
from kubeferry.lab.registry import Registry
from kubeferry.lab.signing import SigningKey
from kubeferry.lab.standin_packages import build_debs
from kubeferry.lab.static_http import StaticServer
from kubeferry.lab.upstream import mirrors, seed_upstream
from kubeferry.lab.upstream_packages import flat_apt_repo
from kubeferry.oci.store import BlobStore
from kubeferry.versions import image_set

KUBERNETES = "1.25.0"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
MIRROR = "http://deb.debian.org/debian"


def cache_root() -> Path:
    path = Path(os.environ.get("KUBEFERRY_TEST_CACHE", "/var/cache/kubeferry-test"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def package_content(work: Path, packages: list[str] | None = None) -> list[Content]:
    """The debian12 ``packages`` content: bookworm + the stand-in Kubernetes repository."""
    www = work / "www"
    repo = www / "kubernetes"
    with SigningKey("kubeferry nodeprep test", home=work / "gnupg") as key:
        flat_apt_repo(repo, build_debs(KUBERNETES, repo / "pool"), key)
    (www / "keys").mkdir()
    shutil.copy(DEBIAN_KEYRING, www / "keys" / "debian.gpg")
    with StaticServer(www) as server:
        url = server.url
        keyring = f"{url}/keys/debian.gpg"
        sources = Sources(repositories={
            "debian": MIRROR, "debian-security": "http://deb.debian.org/debian-security",
            "kubernetes": f"{url}/kubernetes", "debian-gpgkey": keyring,
            "debian-release-gpgkey": keyring, "debian-security-gpgkey": keyring,
            "kubernetes-gpgkey": f"{url}/kubernetes/Release.key"})
        return build_packages(KUBERNETES, "debian12", "amd64", sources, cache_root() / "build-cache",
                              packages=packages)


def image_content(work: Path, request: BuildRequest) -> Content:
    """The images of the release, from stand-ins in a local registry (stopped afterwards)."""
    with Registry(work / "upstream") as registry:
        seed_upstream(registry.url, KUBERNETES)
        request.mirrors = mirrors(registry.url)
        store = BlobStore(request.cache_dir)
        pulled = pull_images(image_set(KUBERNETES).images, image_source(request, effective_sources(request)),
                             store, request.arch)
        return layout_content(pulled, store)


def build_bundle(work: Path, os_name: str = "debian12", packages: list[str] | None = None,
                 with_packages: bool = True) -> Path:
    """A bundle like ``bundle build --k8s 1.25.0 --os debian12 --include images,packages``."""
    work.mkdir(parents=True, exist_ok=True)
    request = BuildRequest(kubernetes=KUBERNETES, os=os_name, arch="amd64", cache_dir=work / "cache",
                           output_dir=work / "out")
    contents = [image_content(work, request)]
    if with_packages:
        contents += package_content(work, packages)
        request.include = ("images", "packages")
    metadata = bundle_metadata(request, image_set(KUBERNETES), effective_sources(request), contents)
    members: list[Member] = [member for content in contents for member in content.members]
    target = work / "out" / f"kubeferry-k8s-{KUBERNETES}-{os_name}-amd64.tar"
    target.parent.mkdir(parents=True, exist_ok=True)
    write_bundle(target, metadata, members)
    return target

"""What each node gets from the bundle, by its roles."""

from __future__ import annotations

from kubeferry.bundle import layout
from kubeferry.bundle.metadata import ImageEntry, MemberEntry
from kubeferry.bundle.reader import Bundle
from kubeferry.installer.inventory import Host

# Images a worker runs, besides the checks' images; control planes get every image.
WORKER_IMAGES = ("kube-proxy", "pause", "coredns", "calico/")
NODE_BUNDLE_DIR = "/var/lib/kubeferry/bundle"


def images_for(bundle: Bundle, host: Host) -> list[ImageEntry]:
    """The bundle's image entries ``host`` needs in its containerd."""
    if host.is_control_plane:
        return list(bundle.images)
    if not host.is_worker:
        return []
    # verify's DNS pod is scheduled on a worker: with ``registry: none`` it must be there
    checks = set(bundle.image_set.check_images)
    return [image for image in bundle.images
            if image["name"] in checks or any(part in image["name"] for part in WORKER_IMAGES)]


class MemberPlan:
    """Which bundle members each host receives (manifests read once from the bundle)."""

    def __init__(self, bundle: Bundle) -> None:
        self.bundle = bundle
        self._blobs: dict[str, list[str]] = {}

    def _image_blobs(self, image: ImageEntry) -> list[str]:
        digest = image["digest"]
        if digest not in self._blobs:
            manifest = self.bundle.read_member(layout.blob_path(digest))  # at its offset, verified
            digests = [digest, *layout.manifest_blobs(manifest)]
            self._blobs[digest] = [layout.blob_path(d) for d in digests]
        return self._blobs[digest]

    def members_for(self, host: Host, first_control_plane: bool) -> list[MemberEntry]:
        """Member entries (path, size, sha256) ``host`` needs, each once, in bundle order."""
        wanted: set[str] = set()
        images = images_for(self.bundle, host)
        if images:
            wanted.add(layout.LAYOUT_MEMBER)
            for image in images:
                wanted.update(self._image_blobs(image))
        for member in self.bundle.members:
            path = member["path"]
            if path.startswith(("packages/", "kernel/")) or (
                    first_control_plane and path.startswith("files/")):
                wanted.add(path)
        return [member for member in self.bundle.members if member["path"] in wanted]

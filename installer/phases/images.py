"""Phase ``images``: the images each node's roles need, imported into containerd's ``k8s.io``
namespace from the distributed bundle, skipped when already there with the bundle's digest.

The import reads a per-node OCI image layout: ``oci-layout``, an ``index.json`` listing only
the images the node still lacks (written from the admin host, entries straight at the
single-platform manifests, named by ``io.containerd.image.name``), and ``blobs`` -> the
blobs ``distribute`` verified. GNU tar streams it (``-h`` follows the link) into
``ctr images import -``: no copy of the blobs is ever made. Afterwards every needed name
must be present with the bundle's digest.
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from kubeferry.bundle_format import CONTAINERD_NAME, IMAGES_PREFIX, OCI_REF_NAME
from kubeferry.errors import OperationError
from kubeferry.installer import facts, operations
from kubeferry.installer.bundle_members import read_member
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.platform import data
from kubeferry.installer.roles import NODE_BUNDLE_DIR, images_for
from kubeferry.installer.workflow import Phase

BLOBS = f"{NODE_BUNDLE_DIR}/{IMAGES_PREFIX}blobs"
OCI_LAYOUT = b'{"imageLayoutVersion": "1.0.0"}'
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _blob(digest: str) -> str:
    return f"{IMAGES_PREFIX}blobs/sha256/{digest.split(':', 1)[1]}"


def missing(ctx: InstallContext, host: Host) -> list[dict[str, Any]]:
    """The node's images that containerd lacks (or holds with another digest)."""
    held = facts.CONTAINERD_IMAGE_DIGESTS.read(ctx.conn(host))
    return [image for image in images_for(ctx.bundle, host) if held.get(image["name"]) != image["digest"]]


def index_json(ctx: InstallContext, images: list[dict[str, Any]]) -> bytes:
    """An OCI index of ``images``, as the bundle's own index.json lists them."""
    manifests = []
    for image in images:
        manifest = read_member(ctx.bundle, _blob(image["digest"]))  # small, checked by sha256
        media_type = image.get("mediaType") or json.loads(manifest).get("mediaType") or OCI_MANIFEST
        manifests.append({"mediaType": media_type, "digest": image["digest"],
                          "size": len(manifest), "platform": image["platform"],
                          "annotations": {CONTAINERD_NAME: image["name"], OCI_REF_NAME: image["name"]}})
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": manifests}
    return (json.dumps(index, indent=1, sort_keys=True) + "\n").encode()


def import_command(directory: str) -> str:
    quoted = shlex.quote(directory)
    namespace = shlex.quote(data()["images"]["namespace"])
    return (f"ln -sfn {shlex.quote(BLOBS)} {quoted}/blobs && tar -C {quoted} -chf - oci-layout index.json"
            f" blobs | ctr -n {namespace} images import -")


def _check_distributed(ctx: InstallContext, host: Host, lacking: list[dict[str, Any]]) -> str:
    on_node = facts.file_sizes_under(BLOBS + "/sha256").read(ctx.conn(host))
    absent = [image["name"] for image in lacking if image["digest"].split(":", 1)[1] not in on_node]
    if absent:
        raise OperationError(f"{host.name}: the bundle's blobs of {', '.join(absent)} are not on the node:"
                             " run the distribute phase first")
    return ""


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """The import directory's index of what containerd lacks, the import, the digest check."""
    lacking = missing(ctx, host)
    if not lacking:
        return []
    conn = ctx.conn(host)
    directory = data()["images"]["import_dir"]
    planned = [Step("check the images' blobs arrived (distribute)",
                    run=lambda: _check_distributed(ctx, host, lacking))]
    planned += operations.file(conn, f"{directory}/oci-layout", OCI_LAYOUT)
    planned += operations.file(conn, f"{directory}/index.json", index_json(ctx, lacking))
    names = ", ".join(image["name"] for image in lacking)
    planned.append(Step(f"import {len(lacking)} image(s) with ctr: {names}", import_command(directory),
                        timeout=3600))
    planned.append(Step("check containerd holds each at the bundle's digest",
                        run=lambda: verify(ctx, host)))
    return planned


def verify(ctx: InstallContext, host: Host) -> str:
    """Every image the node needs is in containerd with the bundle's digest."""
    wrong = missing(ctx, host)
    if wrong:
        raise OperationError(f"{host.name}: after ctr import, containerd still lacks"
                             f" {', '.join(image['name'] for image in wrong)} at the bundle's digest")
    return ""


PHASE = Phase(
    name="images",
    short="ctr import of the images each node's roles need, verified by digest",
    hosts=lambda ctx: [host for host in ctx.inventory.kubernetes_nodes if images_for(ctx.bundle, host)],
    steps=steps,
    inputs=lambda ctx, host: [image["name"] for image in images_for(ctx.bundle, host)],  # its roles
)

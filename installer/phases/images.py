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

from kubeferry.bundle import layout
from kubeferry.bundle.format import IMAGES_PREFIX
from kubeferry.bundle.metadata import ImageEntry
from kubeferry.errors import OperationError
from kubeferry.installer import facts, operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.platform import data
from kubeferry.installer.roles import NODE_BUNDLE_DIR, images_for
from kubeferry.installer.workflow import Phase

BLOBS = f"{NODE_BUNDLE_DIR}/{IMAGES_PREFIX}{layout.BLOBS_DIR}"


def missing(ctx: InstallContext, host: Host) -> list[ImageEntry]:
    """The node's images that containerd lacks (or holds with another digest)."""
    held = facts.CONTAINERD_IMAGE_DIGESTS.read(ctx.conn(host))
    return [image for image in images_for(ctx.bundle, host) if held.get(image["name"]) != image["digest"]]


def index_json(ctx: InstallContext, images: list[ImageEntry]) -> bytes:
    """An OCI index of ``images``, as the bundle's own index.json lists them."""
    manifests = []
    for image in images:
        manifest = ctx.bundle.read_member(layout.blob_path(image["digest"]))  # small, verified
        media_type = layout.manifest_media_type(image.get("mediaType"), json.loads(manifest))
        manifests.append(layout.index_entry(image["name"], image["digest"], len(manifest),
                                            image.get("platform"), media_type))
    return layout.index_json(manifests)


def import_command(directory: str) -> str:
    quoted = shlex.quote(directory)
    namespace = shlex.quote(data()["images"]["namespace"])
    members = f"{layout.LAYOUT_FILE} {layout.INDEX_FILE} {layout.BLOBS_DIR}"
    return (f"ln -sfn {shlex.quote(BLOBS)} {quoted}/{layout.BLOBS_DIR} && tar -C {quoted} -chf - {members}"
            f" | ctr -n {namespace} images import -")


def _check_distributed(ctx: InstallContext, host: Host, lacking: list[ImageEntry]) -> str:
    on_node = facts.file_sizes_under(f"{BLOBS}/sha256").read(ctx.conn(host))
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
    planned += operations.file(conn, f"{directory}/{layout.LAYOUT_FILE}", layout.OCI_LAYOUT)
    planned += operations.file(conn, f"{directory}/{layout.INDEX_FILE}", index_json(ctx, lacking))
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

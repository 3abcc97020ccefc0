"""A tiny single-platform OCI image layout tar, built in memory for containerd import tests."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile


def _blob(data: bytes) -> tuple[str, bytes]:
    return f"sha256:{hashlib.sha256(data).hexdigest()}", data


def _tar(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
        for name, target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, 0
            archive.addfile(info)
    return buffer.getvalue()


def image_layout_tar(name: str, content: bytes, arch: str = "amd64") -> bytes:
    """An OCI image layout (oci-layout, index.json, blobs/) holding one image called ``name``:
    one gzip layer with the file ``hello.txt``, a config with the matching diff_id.

    The layer also links /bin, /lib and /lib64 into /usr, as merged-/usr Debian does, so a
    container can run the node's own programs with the node's /usr bind-mounted in."""
    layer_tar = _tar({"hello.txt": content},
                     {"bin": "usr/bin", "lib": "usr/lib", "lib64": "usr/lib64"})
    layer_digest, layer = _blob(gzip.compress(layer_tar, mtime=0))
    diff_id = f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"
    config_digest, config = _blob(json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello.txt"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }).encode())
    manifest_digest, manifest = _blob(json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": len(layer)}],
    }).encode())
    index = json.dumps({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest, "size": len(manifest),
            "platform": {"architecture": arch, "os": "linux"},
            "annotations": {"io.containerd.image.name": name,
                            "org.opencontainers.image.ref.name": name.rsplit(":", 1)[1]},
        }],
    }).encode()
    members = {"oci-layout": b'{"imageLayoutVersion": "1.0.0"}', "index.json": index}
    for digest, data in ((layer_digest, layer), (config_digest, config),
                         (manifest_digest, manifest)):
        members[f"blobs/sha256/{digest.split(':')[1]}"] = data
    return _tar(members)

"""Small bundles and inventories for the bad-input suite, made with the public writer."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any, Callable

from kubeferry.bundle import layout
from kubeferry.bundle.format import METADATA_NAME
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle

SECRET = "S3cret-kf-7731-do-not-print"

CALICO = b"# calico stand-in\nkind: List\n"
INDEX = b'{"schemaVersion": 2, "manifests": []}'


def small_bundle(directory: Path, name: str = "kubeferry-k8s-1.25.0-el7-amd64.tar") -> Path:
    """A real (tiny) bundle: an empty image layout and one file, written by the build's writer."""
    directory.mkdir(parents=True, exist_ok=True)
    members = []
    for path, data in ((layout.LAYOUT_MEMBER, layout.OCI_LAYOUT), (layout.INDEX_MEMBER, INDEX),
                       ("files/calico.yaml", CALICO)):
        source = directory / ("src-" + path.replace("/", "-"))
        source.write_bytes(data)
        members.append(Member.from_file(path, source))
    metadata = {"kubernetes": "1.25.0", "os": "el7", "arch": "amd64",
                "created": "2026-12-01T00:00:00Z", "kubeferryVersion": "test",
                "include": ["images", "files"],
                "sources": {"registries": {"registry.k8s.io": "https://registry.k8s.io"},
                            "repositories": {}, "files": {}},
                "imageSet": {"pause": "3.8"}, "images": []}
    target = directory / name
    write_bundle(target, metadata, members, mtime=1)
    return target


def rewrite(source: Path, target: Path, edit: Callable[[dict[str, Any]], None] | None = None,
            raw_edit: Callable[[bytes], bytes] | None = None) -> Path:
    """A copy of bundle ``source`` whose metadata went through ``edit`` (members kept)."""
    with tarfile.open(source) as tar, tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as out:
        for info in tar:
            data = tar.extractfile(info).read()
            if info.name == METADATA_NAME:
                if edit is not None:
                    metadata = json.loads(data)
                    edit(metadata)
                    data = json.dumps(metadata, indent=1).encode() + b"\n"
                if raw_edit is not None:
                    data = raw_edit(data)
                info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return target


def legacy(source: Path, target: Path) -> Path:
    """The bundle as kubeferry wrote it before the metadata self-check."""
    return rewrite(source, target, edit=lambda meta: meta.pop("metadataDigest"))


def inventory_yaml(key_file: Path, **overrides: Any) -> str:
    """A valid single-node inventory; ``overrides`` are dotted keys (``cluster.vip``)."""
    data: dict[str, Any] = {
        "cluster": {"controlPlaneEndpoint": "192.168.40.180:6443"},
        "registry": "none",
        "ssh": {"user": "root", "keyFile": str(key_file), "knownHosts": str(key_file.parent / "kh")},
        "hosts": [{"name": "master1", "address": "192.168.40.180", "roles": ["control-plane"]}],
    }
    for dotted, value in overrides.items():
        node = data
        keys = dotted.split(".")
        for key in keys[:-1]:
            node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
        node[keys[-1]] = value
    return json.dumps(data)  # JSON is YAML


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()

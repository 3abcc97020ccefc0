"""A small EL bundle (el7 or el8) for ``--plan`` tests: real bundle file, real metadata shape
(as bundler/packages.py writes it), OpenPGP key files, two image manifests; no RPMs (the
fake node never installs anything)."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

from kubeferry.bundle.layout import blob_path
from kubeferry.bundler.content import Member
from kubeferry.bundler.writer import write_bundle

KEY_TIME = 1_600_000_000


def public_key_packet(seed: bytes) -> bytes:
    """A v4 RSA public-key packet (tag 6, new format) with a made-up 2048-bit modulus."""
    modulus = b"\xc0" + hashlib.sha512(seed).digest() * 4  # 2048 bits, top bit set
    modulus = modulus[:256]
    body = (b"\x04" + struct.pack(">I", KEY_TIME) + b"\x01"
            + struct.pack(">H", 2048) + modulus + struct.pack(">H", 17) + b"\x01\x00\x01")
    return bytes([0xC0 | 6, 192 + ((len(body) - 192) >> 8), (len(body) - 192) & 0xFF]) + body


def key_id(packet: bytes) -> str:
    body = packet[3:]
    return hashlib.sha1(b"\x99" + len(body).to_bytes(2, "big") + body).hexdigest()[-8:]


def armored(packet: bytes) -> bytes:
    text = base64.b64encode(packet).decode()
    lines = [text[i:i + 64] for i in range(0, len(text), 64)]
    return ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n" + "\n".join(lines)
            + "\n-----END PGP PUBLIC KEY BLOCK-----\n").encode()


def _rpm_row(name: str, version: str, release: str, prefix: str, requested: bool = True,
             arch: str = "x86_64", epoch: int = 0) -> dict[str, Any]:
    full = f"{epoch}:{version}-{release}" if epoch else f"{version}-{release}"
    return {"name": name, "version": full, "arch": arch, "epoch": epoch, "ver": version,
            "release": release, "repo": "x", "sha256": "0" * 64, "size": 1000,
            "path": f"{prefix}/Packages/{name}-{version}-{release}.{arch}.rpm",
            "requested": requested, "reason": name}


PACKAGES = {  # el7: the legacy yum repository's naming (kubeadm-1.25.0-0)
    "el7": [("kubeadm", "1.25.0", "0"), ("kubelet", "1.25.0", "0"), ("kubectl", "1.25.0", "0"),
            ("cri-tools", "1.25.0", "0"), ("kubernetes-cni", "1.1.1", "0"),
            ("containerd.io", "1.6.6", "3.1.el7"), ("chrony", "3.4.1", "1.el7"),
            ("ipvsadm", "1.27", "8.el7"), ("ethtool", "4.8", "10.el7", 2)],
    "el8": [("kubeadm", "1.25.0", "150500.1.1"), ("kubelet", "1.25.0", "150500.1.1"),
            ("kubectl", "1.25.0", "150500.1.1"), ("cri-tools", "1.25.0", "150500.1.1"),
            ("kubernetes-cni", "1.1.1", "150500.1.1"), ("containerd.io", "1.6.6", "3.1.el8"),
            ("chrony", "4.5", "1.el8"), ("ipvsadm", "1.31", "1.el8")],
}


def _manifest(name: str) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + hashlib.sha256(name.encode()).hexdigest(),
                                  "size": 10},
                       "layers": []}).encode()


def write_el_bundle(work: Path, os_name: str = "el7",
                    with_kernel: bool = True) -> tuple[Path, dict[str, str]]:
    """The bundle file and the rpm key id of each bundled key (by key name)."""
    work.mkdir(parents=True, exist_ok=True)
    members: list[Member] = []
    ids: dict[str, str] = {}

    def add(path: str, data: bytes) -> dict[str, Any]:
        source = work / hashlib.sha256(path.encode()).hexdigest()
        source.write_bytes(data)
        members.append(Member.from_file(path, source))
        return {"path": path, "sha256": members[-1].sha256}

    images = []
    for name in ("registry.k8s.io/kube-apiserver:v1.25.0", "registry.k8s.io/pause:3.8",
                 "registry.k8s.io/kube-proxy:v1.25.0"):
        manifest = _manifest(name)
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        add(blob_path(digest), manifest)
        images.append({"name": name, "digest": digest, "platform": {"architecture": "amd64", "os": "linux"},
                       "size": 5000, "layers": 0})
    prefix = f"packages/{os_name}"
    keys = []
    for key_name in (f"{os_name}-gpgkey", "kubernetes-gpgkey"):
        packet = public_key_packet(key_name.encode())
        ids[key_name] = key_id(packet)
        entry = add(f"{prefix}/keys/{key_name}.asc", armored(packet))
        keys.append({"name": key_name, "url": "https://example.invalid/key", **entry})
    rows = [_rpm_row(*spec[:3], prefix=prefix, epoch=spec[3] if len(spec) > 3 else 0)
            for spec in PACKAGES[os_name]]
    rows.append(_rpm_row("libnetfilter_cttimeout", "1.0.0", "7.el7", prefix, requested=False))
    metadata: dict[str, Any] = {
        "kubernetes": "1.25.0", "os": os_name, "arch": "amd64", "include": ["images", "packages"],
        "imageSet": {"pauseImage": "registry.k8s.io/pause:3.8", "pause": "3.8"},
        "images": images,
        "packages": {"os": os_name, "arch": "amd64", "format": "rpm-md", "path": prefix,
                     "kubernetes": "1.25.0", "keys": keys, "packages": rows,
                     "install": [f"{r['name']}-{r['version']}" for r in rows if r["requested"]]},
    }
    if with_kernel and os_name == "el7":
        packet = public_key_packet(b"elrepo")
        ids["elrepo-gpgkey"] = key_id(packet)
        entry = add("kernel/el7/keys/elrepo-gpgkey.asc", armored(packet))
        metadata["kernel"] = {
            "os": "el7", "arch": "amd64", "format": "rpm-md", "path": "kernel/el7",
            "package": "kernel-ml", "version": "4.19.12-1.el7.elrepo",
            "keys": [{"name": "elrepo-gpgkey", "url": "https://example.invalid/elrepo", **entry}],
            "packages": [_rpm_row("kernel-ml", "4.19.12", "1.el7.elrepo", "kernel/el7")],
            "install": ["kernel-ml-4.19.12-1.el7.elrepo"]}
    target = work / f"kubeferry-k8s-1.25.0-{os_name}-amd64.tar"
    write_bundle(target, metadata, members)
    return target, ids

"""Stand-in images of every shape, pushed straight into a registry over HTTP.

Layers are real tar+gzip (containerd can unpack them) built deterministically: the same
content always gives the same blob, so images built on one base layer share that blob as
upstream images do. Configs carry the right ``rootfs.diff_ids`` (sha256 of each
uncompressed tar), so ``ctr images import`` unpacks them.

The pusher here is deliberately independent of ``kubeferry.oci`` (plain requests, its
own tiny Basic/Bearer handling), so tests of the client are not seeded by the client.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
from dataclasses import dataclass, field
from typing import Union
from urllib.parse import urljoin

import requests

from kubeferry.oci import mediatypes

SHAPES = ("oci-index", "docker-list", "oci-manifest", "docker-schema2")
_EPOCH = "1970-01-01T00:00:00Z"
_TIMEOUT = 60


@dataclass(frozen=True)
class Layer:
    """A gzip'd tar layer and the digest of its uncompressed tar (the diff_id)."""

    blob: bytes
    diff_id: str

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.blob).hexdigest()

    @property
    def size(self) -> int:
        return len(self.blob)


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def tar_layer(files: dict[str, bytes], compresslevel: int = 6) -> Layer:
    """A deterministic tar (fixed owners, modes and times) of ``files``, gzip'd."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        directories: set[str] = set()
        for path in sorted(files):
            parts = path.strip("/").split("/")
            for depth in range(1, len(parts)):
                directory = "/".join(parts[:depth])
                if directory not in directories:
                    directories.add(directory)
                    info = tarfile.TarInfo(directory)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
                    archive.addfile(info)
            info = tarfile.TarInfo("/".join(parts))
            info.size, info.mode, info.mtime = len(files[path]), 0o644, 0
            archive.addfile(info, io.BytesIO(files[path]))
    raw = buffer.getvalue()
    blob = gzip.compress(raw, compresslevel=compresslevel, mtime=0)
    return Layer(blob, _sha256(raw))


def layer_from(content: Union[bytes, Layer], marker: str = "") -> Layer:
    """A layer from content: a Layer as is, an existing tar.gz as is, other bytes as one file.

    ``marker`` (e.g. "arm64") makes a distinct layer from plain content, so every platform
    of an index gets its own small layers; ready-made layers are shared by all platforms.
    """
    if isinstance(content, Layer):
        return content
    if content[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(content)
            with tarfile.open(fileobj=io.BytesIO(raw)):
                return Layer(content, _sha256(raw))
        except (OSError, EOFError, tarfile.TarError):
            pass
    if marker:
        content = content + f"\nplatform {marker}\n".encode()
    name = f"kubeferry/standin-{hashlib.sha256(content).hexdigest()[:16]}"
    return tar_layer({name: content})


def standin_layer(name: str, size: int, seed: int = 0) -> bytes:
    """A deterministic tar.gz layer of about ``size`` compressed bytes.

    The payload is random (seeded by name and seed) so gzip cannot shrink it; it is
    stored with gzip level 0, which is valid deflate and fast for large sizes.
    """
    payload = random.Random(f"{name}:{seed}").randbytes(max(0, size - 1024))
    return tar_layer({f"standin/{name}.bin": payload}, compresslevel=0).blob


@dataclass
class PushedImage:
    """What push_image put into the registry, by platform ("linux/amd64", ...)."""

    name: str
    tag: str
    shape: str
    digest: str
    media_type: str
    manifests: dict[str, str] = field(default_factory=dict)
    configs: dict[str, str] = field(default_factory=dict)
    layers: dict[str, list[str]] = field(default_factory=dict)
    blob_sizes: dict[str, int] = field(default_factory=dict)

    @property
    def reference(self) -> str:
        return f"{self.name}:{self.tag}"


def _platform(arch: str, os_name: str) -> dict[str, str]:
    architecture, _, variant = arch.partition("/")
    platform = {"architecture": architecture, "os": os_name}
    if variant:
        platform["variant"] = variant
    elif architecture == "arm64":
        platform["variant"] = "v8"
    return platform


def build_config(layers: list[Layer], arch: str, os_name: str = "linux") -> bytes:
    """An image config whose rootfs.diff_ids match ``layers``."""
    platform = _platform(arch, os_name)
    config = {
        "architecture": platform["architecture"],
        "os": os_name,
        "created": _EPOCH,
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
        },
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
        "history": [
            {"created": _EPOCH, "created_by": f"kubeferry stand-in layer {index}"}
            for index in range(len(layers))
        ],
    }
    if "variant" in platform:
        config["variant"] = platform["variant"]
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def build_manifest(config: bytes, layers: list[Layer], docker: bool) -> bytes:
    config_type = mediatypes.DOCKER_CONFIG if docker else mediatypes.OCI_CONFIG
    layer_type = mediatypes.DOCKER_LAYER_GZIP if docker else mediatypes.OCI_LAYER_GZIP
    manifest = {
        "schemaVersion": 2,
        "mediaType": mediatypes.DOCKER_MANIFEST if docker else mediatypes.OCI_MANIFEST,
        "config": {"mediaType": config_type, "digest": _sha256(config), "size": len(config)},
        "layers": [
            {"mediaType": layer_type, "digest": layer.digest, "size": layer.size}
            for layer in layers
        ],
    }
    return json.dumps(manifest, indent=3).encode()


def docker_archive(
    name: str, layers: list[Union[bytes, Layer]], arch: str = "amd64", os: str = "linux"
) -> bytes:
    """A ``docker save`` tar (manifest.json, <id>.json, <layer>/layer.tar) for ``docker load``."""
    built = [layer_from(content) for content in layers]
    config = build_config(built, arch, os)
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:

        def add(member: str, data: bytes) -> None:
            info = tarfile.TarInfo(member)
            info.size, info.mode = len(data), 0o644
            archive.addfile(info, io.BytesIO(data))

        layer_names = []
        for layer in built:
            layer_name = f"{layer.diff_id.split(':')[1]}/layer.tar"
            if layer_name not in layer_names:
                add(layer_name, gzip.decompress(layer.blob))
            layer_names.append(layer_name)
        add(config_name, config)
        entry = {"Config": config_name, "RepoTags": [name], "Layers": layer_names}
        add("manifest.json", json.dumps([entry]).encode())
    return buffer.getvalue()


class _Pusher:
    """Just enough registry client to seed a registry: Basic or anonymous/Basic Bearer."""

    def __init__(self, url: str, ca_file: str | None, auth: tuple[str, str] | None) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        # per request: a session-level verify loses to REQUESTS_CA_BUNDLE (requests#3829)
        self.verify: str | bool = ca_file or True
        self.auth = auth
        self.authorization: str | None = None

    def request(self, method: str, url: str, scope: str, **kwargs: object) -> requests.Response:
        url = url if url.startswith("http") else self.url + url
        for _ in range(2):
            headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
            if self.authorization:
                headers["Authorization"] = self.authorization
            response = self.session.request(
                method,
                url,
                headers=headers,
                timeout=_TIMEOUT,
                allow_redirects=False,
                verify=self.verify,
                **kwargs,
            )
            kwargs["headers"] = {k: v for k, v in headers.items() if k != "Authorization"}
            if response.status_code != 401:
                return response
            self.authorization = self._answer(response.headers.get("WWW-Authenticate", ""), scope)
        return response

    def _answer(self, challenge: str, scope: str) -> str:
        scheme, _, rest = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.auth:
                raise RuntimeError(f"{self.url} wants Basic auth and no auth was given")
            return requests.auth._basic_auth_str(*self.auth)
        params = dict(
            part.split("=", 1) for part in rest.replace('"', "").split(",") if "=" in part
        )
        response = self.session.get(
            params["realm"],
            params={"service": params.get("service", ""), "scope": scope},
            auth=self.auth,
            timeout=_TIMEOUT,
            verify=self.verify,
        )
        response.raise_for_status()
        body = response.json()
        return "Bearer " + (body.get("token") or body["access_token"])

    def push_blob(self, repository: str, data: bytes) -> None:
        digest = _sha256(data)
        scope = f"repository:{repository}:pull,push"
        if self.request("HEAD", f"/v2/{repository}/blobs/{digest}", scope).status_code == 200:
            return
        start = self.request("POST", f"/v2/{repository}/blobs/uploads/", scope)
        if start.status_code != 202:
            raise RuntimeError(f"upload to {repository}: HTTP {start.status_code} {start.text}")
        location = urljoin(start.url, start.headers["Location"])
        finish = self.request(
            "PUT",
            location + ("&" if "?" in location else "?") + f"digest={digest}",
            scope,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if finish.status_code != 201:
            raise RuntimeError(f"upload of {digest}: HTTP {finish.status_code} {finish.text}")

    def push_manifest(self, repository: str, reference: str, data: bytes, media_type: str) -> None:
        response = self.request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            f"repository:{repository}:pull,push",
            data=data,
            headers={"Content-Type": media_type},
        )
        if response.status_code != 201:
            raise RuntimeError(f"manifest {repository}:{reference}: HTTP {response.status_code}")


def push_image(
    registry_url: str,
    name: str,
    tag: str,
    layers: list[Union[bytes, Layer]],
    *,
    arch: str = "amd64",
    shape: str = "oci-index",
    platforms: tuple[str, ...] = ("amd64", "arm64"),
    os: str = "linux",
    ca_file: str | None = None,
    auth: tuple[str, str] | None = None,
) -> PushedImage:
    """Push a stand-in image named ``name:tag`` (repository path, no registry host).

    ``layers`` are file contents (each becomes a one-file tar.gz layer), existing tar.gz
    layers (e.g. from standin_layer) or Layer objects. ``shape`` picks an OCI index, a
    Docker manifest list (both over ``platforms``), or a single OCI / Docker schema2
    manifest for ``arch``. Platforms other than ``arch`` get their own layers.
    """
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {SHAPES}, not {shape!r}")
    docker = shape.startswith("docker")
    pusher = _Pusher(registry_url, ca_file, auth)
    single = shape in ("oci-manifest", "docker-schema2")
    wanted = (arch,) if single else platforms
    manifest_type = mediatypes.DOCKER_MANIFEST if docker else mediatypes.OCI_MANIFEST
    result = PushedImage(name, tag, shape, digest="", media_type=manifest_type)
    children = []
    for platform_arch in wanted:
        built = [layer_from(c, "" if platform_arch == arch else platform_arch) for c in layers]
        config = build_config(built, platform_arch, os)
        manifest = build_manifest(config, built, docker)
        for blob in [config] + [layer.blob for layer in built]:
            pusher.push_blob(name, blob)
            result.blob_sizes[_sha256(blob)] = len(blob)
        platform = _platform(platform_arch, os)
        key = f"{os}/{platform_arch}"
        result.manifests[key] = _sha256(manifest)
        result.configs[key] = _sha256(config)
        result.layers[key] = [layer.digest for layer in built]
        if single:
            pusher.push_manifest(name, tag, manifest, manifest_type)
            result.digest = _sha256(manifest)
            return result
        pusher.push_manifest(name, _sha256(manifest), manifest, manifest_type)
        children.append(
            {
                "mediaType": manifest_type,
                "digest": _sha256(manifest),
                "size": len(manifest),
                "platform": platform,
            }
        )
    index_type = mediatypes.DOCKER_MANIFEST_LIST if docker else mediatypes.OCI_INDEX
    index = json.dumps(
        {"schemaVersion": 2, "mediaType": index_type, "manifests": children}, indent=3
    ).encode()
    pusher.push_manifest(name, tag, index, index_type)
    result.digest = _sha256(index)
    result.media_type = index_type
    return result

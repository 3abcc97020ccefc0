"""Images from a local Docker Engine (``--image-source docker``) instead of a registry.

``docker save`` streams a tar (layer tars, the config ``<id>.json``, ``manifest.json``
last). It is read once, as a stream, straight into the blob store:

- the config is stored as is, so its digest stays the Docker image ID;
- each layer arrives as an uncompressed tar; its sha256 must equal the config's
  ``rootfs.diff_ids`` entry (that is the integrity check), and it is stored gzip'd
  (deterministically: no name, mtime 0) as ``application/vnd.docker.image.rootfs.diff.tar.gzip``
  because bundles should carry compressed layers like a registry would serve;
- a Docker schema2 manifest is built over them, so the result is a ResolvedImage like any
  registry pull and every later step treats both sources alike.

A small map ``<store>/docker-source/<image-id-hex>`` remembers the manifest made for an
image ID, so a warm rebuild reads nothing from the daemon.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
import zlib
from typing import Any, Iterator

from kubeferry.errors import InputError, OperationError
from kubeferry.oci import mediatypes
from kubeferry.oci.client import PullResult, ResolvedImage
from kubeferry.oci.descriptor import Descriptor
from kubeferry.oci.reference import DIGEST_RE, ImageReference
from kubeferry.oci.store import BlobStore

_SMALL = 16 << 20  # configs and manifest.json are small; refuse anything huge
_CHUNK = 1 << 20


class _IterReader:
    """A read()-able view of an iterator of byte chunks (the docker save stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        parts = []
        wanted = size
        while wanted != 0:
            if self._pos >= len(self._chunk):
                self._chunk, self._pos = next(self._chunks, b""), 0
                if not self._chunk:
                    break
            end = len(self._chunk) if wanted < 0 else min(len(self._chunk), self._pos + wanted)
            parts.append(self._chunk[self._pos : end])
            if wanted > 0:
                wanted -= end - self._pos
            self._pos = end
        data = b"".join(parts)
        self.count += len(data)
        return data


class _GzipReader:
    """Reads a tar member, hashing it uncompressed, and yields it gzip-compressed."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self._compressor = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip wrapper
        self.diff_hash = hashlib.sha256()
        self._done = False
        self._pending = b""

    def read(self, size: int = _CHUNK) -> bytes:
        while not self._done and len(self._pending) < size:
            chunk = self._source.read(_CHUNK)
            if chunk:
                self.diff_hash.update(chunk)
                self._pending += self._compressor.compress(chunk)
            else:
                self._pending += self._compressor.flush()
                self._done = True
        data, self._pending = self._pending[:size], self._pending[size:]
        return data


def _docker_host() -> str:
    """Where ``docker.from_env`` connects: $DOCKER_HOST when set, else the default socket."""
    host = os.environ.get("DOCKER_HOST")
    return f"{host} (from DOCKER_HOST)" if host else "the default Docker socket (/var/run/docker.sock)"


class DockerSource:
    """Takes images from a Docker Engine through the ``docker`` package."""

    def __init__(self, base_url: str | None = None, timeout: float = 300.0) -> None:
        try:
            import docker
        except ImportError:
            raise InputError(
                "--image-source docker needs the 'docker' package: pip install 'kubeferry[docker]'"
            ) from None
        try:
            if base_url:
                self._client = docker.DockerClient(base_url=base_url, timeout=int(timeout))
            else:
                self._client = docker.from_env(timeout=int(timeout))
            self._client.ping()
        except (docker.errors.DockerException, OSError) as error:  # requests' errors are OSErrors
            where = base_url or _docker_host()
            reason = " ".join(str(error).split())
            raise OperationError(f"cannot reach the Docker Engine at {where}: {reason}") from None
        self._docker = docker

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> DockerSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _image_id(self, ref: ImageReference) -> tuple[str, str]:
        """(name the daemon knows, image ID) for ``ref``."""
        names = [str(ref)]
        if ref.registry == "docker.io":  # the daemon lists Hub images without docker.io/
            short = ref.repository.removeprefix("library/")
            names.append(f"{short}:{ref.tag}" if ref.tag else short)
        for name in names:
            try:
                return name, self._client.images.get(name).id
            except self._docker.errors.ImageNotFound:
                continue
            except self._docker.errors.DockerException as error:
                raise OperationError(f"Docker Engine: cannot inspect {ref}: {error}") from None
        raise OperationError(
            f"{ref} is not in the local Docker Engine; docker pull or load it first"
        )

    def resolve(
        self,
        ref: ImageReference,
        arch: str = "amd64",
        os: str = "linux",
        store: BlobStore | None = None,
    ) -> ResolvedImage:
        """Import ``ref`` from the daemon into ``store`` (unless already imported).

        Same signature as RegistryClient.resolve, but the store is required: the only way
        to read an image out of Docker is the whole ``docker save`` stream. Blobs imported
        here are listed in ``fetched_blobs`` (their bytes in ``fetched_bytes``).
        """
        if store is None:
            raise InputError("images from the Docker Engine need a cache directory (a store)")
        return self._import(ref, store, arch, os)[0]

    def fetch_blob(
        self,
        ref: ImageReference,
        descriptor: Descriptor,
        store: BlobStore,
        progress: Any = None,
    ) -> int:
        """Nothing to fetch: resolve() stored every blob. Returns 0 (bytes fetched)."""
        if not store.has(descriptor.digest):
            raise OperationError(
                f"blob {descriptor.digest} of {ref} is not in the cache; resolve the image again"
            )
        return 0

    def pull(
        self,
        ref: ImageReference,
        store: BlobStore,
        arch: str = "amd64",
        os: str = "linux",
        workers: int = 1,
        progress: Any = None,
    ) -> PullResult:
        """Like RegistryClient.pull; bytes_downloaded counts bytes read from the daemon."""
        image, read = self._import(ref, store, arch, os)
        blob_bytes = sum(blob.size for blob in image.blobs)
        return PullResult(image, bytes_downloaded=read, bytes_cached=0 if read else blob_bytes)

    def _import(
        self, ref: ImageReference, store: BlobStore, arch: str, os_name: str
    ) -> tuple[ResolvedImage, int]:
        name, image_id = self._image_id(ref)
        memo = store.root / "docker-source" / image_id.removeprefix("sha256:")
        if memo.is_file():
            manifest_digest = memo.read_text().strip()
            if DIGEST_RE.match(manifest_digest) and store.has(manifest_digest):
                image = _image_from_manifest(ref, store, manifest_digest)
                if all(store.has(blob.digest) for blob in image.blobs):
                    _check_platform(ref, image.platform, arch, os_name)
                    return image, 0
        try:
            stream = _IterReader(iter(self._client.api.get_image(name)))
            image = _read_save_stream(ref, stream, store)
        except self._docker.errors.DockerException as error:
            raise OperationError(f"Docker Engine: docker save of {ref} failed: {error}") from None
        _check_platform(ref, image.platform, arch, os_name)
        if image.config.digest != image_id:
            raise OperationError(
                f"docker save of {ref} gave config {image.config.digest}, not image {image_id}"
            )
        image.fetched_bytes = stream.count
        image.fetched_blobs = tuple(blob.digest for blob in image.blobs)
        memo.parent.mkdir(parents=True, exist_ok=True)
        temp = memo.with_suffix(".tmp")
        temp.write_text(image.manifest_digest + "\n")
        temp.replace(memo)
        return image, stream.count


def _check_platform(ref: ImageReference, platform: dict, arch: str, os_name: str) -> None:
    wanted_arch = arch.partition("/")[0]
    if platform.get("architecture") != wanted_arch or platform.get("os", os_name) != os_name:
        have = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
        raise OperationError(f"{ref} in the Docker Engine is {have}, not {os_name}/{arch}")


def _platform_of(config: dict) -> dict:
    return {
        key: config[key]
        for key in ("os", "architecture", "variant")
        if isinstance(config.get(key), str) and config[key]
    }


def _read_small(archive: tarfile.TarFile, member: tarfile.TarInfo, ref: ImageReference) -> bytes:
    if member.size > _SMALL:
        raise OperationError(f"docker save of {ref}: {member.name} is too large ({member.size} B)")
    handle = archive.extractfile(member)
    assert handle is not None
    return handle.read()


def _read_save_stream(ref: ImageReference, stream: Any, store: BlobStore) -> ResolvedImage:
    """Store the layers and config of a ``docker save`` stream; build its schema2 manifest."""
    layers: dict[str, tuple[str, Descriptor]] = {}  # member name -> (diff_id, gzip'd blob)
    small: dict[str, bytes] = {}
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            if not member.isfile():
                continue
            if member.name.endswith("/layer.tar"):
                handle = archive.extractfile(member)
                assert handle is not None
                gzipped = _GzipReader(handle)
                digest, size = store.put_stream(gzipped)  # type: ignore[arg-type]
                diff_id = "sha256:" + gzipped.diff_hash.hexdigest()
                blob = Descriptor(mediatypes.DOCKER_LAYER_GZIP, digest, size)
                layers[member.name] = (diff_id, blob)
            elif member.name.endswith(".json"):
                small[member.name] = _read_small(archive, member, ref)
    try:
        entries = json.loads(small["manifest.json"])
        (entry,) = entries
        config_name, layer_names = entry["Config"], list(entry["Layers"])
        config_data = small[config_name]
        config = json.loads(config_data)
        diff_ids = list(config["rootfs"]["diff_ids"])
    except (KeyError, ValueError, TypeError) as error:
        raise OperationError(
            f"docker save of {ref} is not a docker image archive ({error})"
        ) from None
    if len(diff_ids) != len(layer_names):
        raise OperationError(
            f"docker save of {ref}: config lists {len(diff_ids)} layers, "
            f"the archive {len(layer_names)}"
        )
    blobs = []
    for layer_name, expected in zip(layer_names, diff_ids):
        if layer_name not in layers:
            raise OperationError(f"docker save of {ref}: layer {layer_name} is missing")
        diff_id, blob = layers[layer_name]
        if diff_id != expected:
            raise OperationError(
                f"docker save of {ref}: layer {layer_name} does not match its diff_id "
                f"{expected} (got {diff_id})"
            )
        blobs.append(blob)
    config_digest = store.put_bytes(config_data)
    config_descriptor = Descriptor(mediatypes.DOCKER_CONFIG, config_digest, len(config_data))
    manifest = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mediatypes.DOCKER_MANIFEST,
            "config": config_descriptor.to_dict(),
            "layers": [blob.to_dict() for blob in blobs],
        },
        indent=3,
    ).encode()
    manifest_digest = store.put_bytes(manifest)
    return ResolvedImage(
        reference=ref,
        index_digest=None,
        index_media_type=None,
        manifest_digest=manifest_digest,
        manifest_media_type=mediatypes.DOCKER_MANIFEST,
        manifest=manifest,
        config=config_descriptor,
        layers=blobs,
        platform=_platform_of(config),
    )


def _image_from_manifest(ref: ImageReference, store: BlobStore, digest: str) -> ResolvedImage:
    manifest = store.get_bytes(digest)
    document = json.loads(manifest)
    config = Descriptor.from_dict(document["config"], f"manifest {digest}")
    layers = [Descriptor.from_dict(layer, f"manifest {digest}") for layer in document["layers"]]
    platform = _platform_of(json.loads(store.get_bytes(config.digest)))
    return ResolvedImage(
        reference=ref,
        index_digest=None,
        index_media_type=None,
        manifest_digest=digest,
        manifest_media_type=mediatypes.DOCKER_MANIFEST,
        manifest=manifest,
        config=config,
        layers=layers,
        platform=platform,
    )

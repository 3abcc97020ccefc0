"""``kubeferry bundle build`` as a Python API: one release in, one bundle file out."""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from kubeferry import __version__, manifests
from kubeferry.bundle.format import bundle_filename
from kubeferry.bundle.metadata import RecordedImages
from kubeferry.bundler.content import Content, build_time
from kubeferry.bundler.images import ImagePull, layout_content
from kubeferry.bundler.sources import Sources, apply_overrides, default_sources
from kubeferry.bundler.writer import write_bundle
from kubeferry.errors import InputError
from kubeferry.oci.store import BlobStore
from kubeferry.outputs import check_target, probe_directory, remove_stale_partials
from kubeferry.versions import ImageSet, image_set

CONTENT = ("kubeferry", "images", "packages", "kernel", "files")

Progress = Callable[[str, int, int], None]  # (phase, bytes just done, phase total)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/kubeferry``, or ``~/.cache/kubeferry``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "kubeferry"


def check_platform(os_name: str, arch: str) -> None:
    platforms = manifests.load("platforms")
    if os_name not in platforms["oses"]:
        raise InputError(f"--os {os_name!r} is not supported: choose one of "
                         + ", ".join(platforms["oses"]))
    if arch not in platforms["arches"]:
        raise InputError(f"--arch {arch!r} is not supported: choose one of "
                         + ", ".join(platforms["arches"]))


def default_include(os_name: str) -> tuple[str, ...]:
    """Everything a site needs: the admin kit, images, packages, files, and kernel-ml where it
    is bundled (el7)."""
    from kubeferry.bundler.repositories import kernel_default

    return ("kubeferry", "images", "packages") + (("kernel",) if kernel_default(os_name) else ()) + ("files",)


def parse_include(value: str | None, os_name: str) -> tuple[str, ...]:
    """``images,files`` as a tuple (the OS default when None); InputError for unknown names."""
    if value is None:
        return default_include(os_name)
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in CONTENT]
    if unknown or not names:
        raise InputError(f"--include {value!r}: choose from {', '.join(CONTENT)}")
    if "kernel" in names and "packages" not in names:
        raise InputError("--include kernel: kernel-ml is resolved with the package set;"
                         " include packages too")
    if "kernel" in names and "kernel" not in default_include(os_name):
        raise InputError(f"--include kernel: kernel-ml is bundled for el7 only, not {os_name}")
    return names


@dataclass
class BuildRequest:
    """Everything a build needs; the CLI fills it from flags."""

    kubernetes: str
    os: str = "el7"
    arch: str = "amd64"
    include: tuple[str, ...] = ("images",)
    sources_file: Path | None = None
    mirrors: tuple[str, ...] = ()
    cache_dir: Path = field(default_factory=default_cache_dir)
    output_dir: Path = Path("bundles")
    image_source: str = "registry"
    registry_auth: Path | None = None
    registry_ca: Path | None = None
    workers: int = 4
    packages_extra: tuple[str, ...] = ()
    kernel_version: str | None = None
    plain_http_credentials: bool = False  # --send-password-over-plain-http


def check_options(request: BuildRequest) -> None:
    """Refuse options this build would ignore: silently dropping them surprises at the site."""
    include = ",".join(request.include)
    if request.kernel_version and "kernel" not in request.include:
        where = (f"--include {include} has no kernel" if "kernel" in default_include(request.os)
                 else f"kernel-ml is bundled for el7 only, not {request.os}")
        raise InputError(f"--kernel-version {request.kernel_version}: {where}; drop the option")
    if request.packages_extra and "packages" not in request.include:
        raise InputError(f"--packages-extra {','.join(request.packages_extra)}: --include {include}"
                         " has no packages; add packages to --include or drop the option")


@dataclass
class BuildResult:
    path: Path
    metadata: dict[str, Any]
    images: int
    downloaded: int
    cached: int
    size: int
    seconds: float
    sha256: str = ""  # of the whole file: what `sha256sum` prints on the admin host


def effective_sources(request: BuildRequest) -> Sources:
    return apply_overrides(default_sources(request.kubernetes, request.os, request.arch),
                           request.sources_file, request.mirrors)


def build(request: BuildRequest, progress: Progress | None = None) -> BuildResult:
    """Fetch what ``request`` names into the cache and write the bundle file."""
    started = time.monotonic()
    images = image_set(request.kubernetes)
    request = replace(request, kubernetes=images.kubernetes)  # one spelling: 1.25.0, never v1.25.0
    check_platform(request.os, request.arch)
    check_options(request)
    sources = effective_sources(request)
    output_dir = request.output_dir
    probe_directory(output_dir, "--output")  # read-only, full or a file: say so before downloading
    target = output_dir / bundle_filename(request.kubernetes, request.os, request.arch)
    check_target(target, "bundle file")
    remove_stale_partials(target)  # left by a build killed with -9 (a live build's stay)
    probe_directory(request.cache_dir, "--cache-dir")
    store = BlobStore(request.cache_dir)
    contents: list[Content] = []
    stats: dict[str, int] = {}
    if "kubeferry" in request.include:  # first: tar finds it at the bundle's start
        from kubeferry.bundler.kit import build_kit

        contents.append(build_kit(sources, request.cache_dir, stats=stats,
                                  progress=(lambda n: progress("kubeferry", n, 0)) if progress else None))
    with contextlib.ExitStack() as running:
        pull = None
        if "images" in request.include:
            # the source's closing removes its temp CA bundle; the pull's waits for its downloads
            source = running.enter_context(image_source(request, sources))
            pull = running.enter_context(ImagePull(
                images.images, source, store, request.arch, request.workers,
                progress=(lambda n, total: progress("pull", n, total)) if progress else None,
            ))
            contents.append(layout_content(pull, store))  # blobs still arriving: written as they land
        if "packages" in request.include:
            from kubeferry.bundler.packages import build_packages

            contents += build_packages(
                request.kubernetes, request.os, request.arch, sources, request.cache_dir,
                extra=request.packages_extra, include_kernel="kernel" in request.include,
                kernel_version=request.kernel_version, stats=stats, admin="kubeferry" in request.include,
                progress=(lambda n: progress("packages", n, 0)) if progress else None)
        if "files" in request.include:
            from kubeferry.bundler.files import build_files

            contents.append(build_files(request.kubernetes, sources, request.cache_dir, stats=stats,
                                        progress=(lambda n: progress("files", n, 0)) if progress else None))
        metadata = bundle_metadata(request, images, sources, contents)
        members = [member for content in contents for member in content.members]
        total = sum(member.size for member in members)
        file_hash = hashlib.sha256()
        written = write_bundle(
            target, metadata, members,
            progress=(lambda n: progress("write", n, total)) if progress else None,
            mtime=int(build_time().timestamp()), file_hash=file_hash,
            settle=pull.finish if pull else None,
        )
        pulled = pull.finish() if pull else None
    downloaded = stats.get("downloaded", 0) + (pulled.downloaded if pulled else 0)
    cached = stats.get("cached", 0) + (pulled.cached if pulled else 0)
    return BuildResult(
        path=target, metadata=written, images=len(written.get("images", [])),
        downloaded=downloaded, cached=cached, size=target.stat().st_size,
        seconds=time.monotonic() - started, sha256=file_hash.hexdigest(),
    )


def image_source(request: BuildRequest, sources: Sources):
    """Where ``request`` pulls images from: the registries of ``sources``, or a Docker Engine."""
    if request.image_source == "docker":
        from kubeferry.oci.docker_source import DockerSource

        return DockerSource()
    from kubeferry.oci.auth import Credentials
    from kubeferry.oci.client import RegistryClient

    return RegistryClient(
        endpoints=sources.registries,
        credentials=Credentials.from_docker_config(request.registry_auth),
        ca_file=str(request.registry_ca) if request.registry_ca else None,
        allow_plain_http_credentials=request.plain_http_credentials,
        jobs=request.workers,
    )


def bundle_metadata(request: BuildRequest, images: ImageSet, sources: Sources,
                    contents: list[Content]) -> dict[str, Any]:
    """The metadata of a bundle of ``request`` holding ``contents``; with ``write_bundle``
    the seam that assembles a bundle from contents made elsewhere."""
    metadata: dict[str, Any] = {
        "kubernetes": request.kubernetes,
        "os": request.os,
        "arch": request.arch,
        "created": build_time().strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kubeferryVersion": __version__,
        "include": list(request.include),
        "sources": sources.to_dict(),
        "imageSet": RecordedImages.of_release(images).to_dict(),
        "images": [],
    }
    for content in contents:
        metadata.update(content.metadata)
    return metadata

"""Pinned files as bundle content: calico.yaml for the release matched to --k8s, and every
entry of ``manifests/files.yaml``, each checked against its pinned sha256 on download.

The URLs come from the effective sources (section ``files``, remappable with --sources);
the checksums only from kubeferry's manifests, so a mirror must serve the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping

from kubeferry import manifests
from kubeferry.bundler.content import Content, Member
from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.sources import Sources
from kubeferry.errors import InputError, OperationError
from kubeferry.versions import image_set, minor_of

CALICO = "calico.yaml"
Progress = Callable[[int], None]


def _context(kubernetes: str) -> dict[str, str]:
    return {"kubernetes": kubernetes, "minor": minor_of(kubernetes),
            "calico": image_set(kubernetes).calico}


def pinned_files(kubernetes: str,
                 pinned: Mapping[str, Mapping[str, str]] | None = None) -> dict[str, dict[str, str]]:
    """Every pinned file of a release: name -> {url, sha256} (default URLs)."""
    images = image_set(kubernetes)
    files: dict[str, dict[str, str]] = {
        CALICO: {"url": images.calico_manifest_url, "sha256": images.calico_manifest_sha256 or ""},
    }
    context = _context(kubernetes)
    entries = (manifests.load("files").get("files") or {}) if pinned is None else pinned
    for name, entry in entries.items():
        url = str(entry["url"])
        files[str(name)] = {"url": url.format_map(context) if "{" in url else url,
                            "sha256": str(entry.get("sha256") or "").lower()}
    return files


def pinned_file_urls(kubernetes: str) -> dict[str, str]:
    """name -> default URL, for the ``files`` section of the default sources."""
    return {name: entry["url"] for name, entry in pinned_files(kubernetes).items()}


def build_files(kubernetes: str, sources: Sources, cache_dir: Path,
                progress: Progress | None = None, *,
                pinned: Mapping[str, Mapping[str, str]] | None = None,
                stats: dict[str, int] | None = None) -> Content:
    """The ``files`` content: each pinned file under ``files/<name>``, verified.

    ``pinned`` replaces manifests/files.yaml (tests). A file whose bytes differ from the
    pinned sha256 fails the build naming the URL, the expected and the received checksum.
    """
    fetcher = Fetcher(cache_dir, progress=progress)
    members: list[Member] = []
    rows: list[dict[str, Any]] = []
    for name, entry in pinned_files(kubernetes, pinned).items():
        if "/" in name or name in ("", ".", ".."):
            raise InputError(f"pinned file {name!r}: a file name may not contain '/'")
        expected = entry["sha256"]
        if len(expected) != 64:
            raise OperationError(f"file {name}: no sha256 is pinned for it in kubeferry's "
                                 "manifests; refusing an unverified download")
        url = sources.files.get(name) or entry["url"]
        path = fetcher.fetch(url, ("sha256", expected), f"file {name}")
        member = Member(path=f"files/{name}", source=path, size=path.stat().st_size,
                        sha256=expected)
        members.append(member)
        rows.append({"name": name, "url": url, "sha256": expected, "size": member.size,
                     "path": member.path})
    if stats is not None:
        stats["downloaded"] = stats.get("downloaded", 0) + fetcher.downloaded_bytes
        stats["cached"] = stats.get("cached", 0) + fetcher.cached_bytes
    metadata = {"files": {"calico": image_set(kubernetes).calico, "files": rows}}
    return Content(kind="files", members=members, metadata=metadata)

"""The repositories inside the bundle: rpm-md for yum/dnf, flat apt for apt.

rpm-md metadata is written here in Python rather than by createrepo_c, so a build runs on
any host: primary.xml reuses each package's upstream entry verbatim except its location
and checksum (now sha256 of the unchanged file), filelists.xml comes from the packages'
own headers, other.xml carries no changelogs. Everything is gzip (yum on EL7 reads no
zstd) with mtime 0, so the same packages give the same bytes. The apt repository is flat
(``deb [trusted=yes] file:/path ./``): Packages keeps each upstream stanza with Filename
pointing into ``pool/``, and an unsigned Release lists the indexes' hashes.
"""

from __future__ import annotations

import gzip
import hashlib
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from kubeferry.bundler.content import Member, build_time
from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.pkgmodel import Package
from kubeferry.bundler.rpmheader import rpm_files
from kubeferry.bundler.rpmmd import COMMON_NS, FILELISTS_NS, REPO_NS, RPM_NS, XML_BASE

OTHER_NS = "http://linux.duke.edu/metadata/other"
_C = "{" + COMMON_NS + "}"


@dataclass(frozen=True)
class Bundled:
    """One package going into a bundle repository: its metadata and its cached file."""

    package: Package
    path: Path  # the verified file in the cache
    sha256: str


def pool_names(bundled: list[Bundled]) -> dict[str, str]:
    """A file name inside the repository for each package (by sha256), unique."""
    names: dict[str, str] = {}
    taken: dict[str, str] = {}
    for item in bundled:
        name = item.package.filename
        if taken.get(name, item.sha256) != item.sha256:
            name = f"{item.package.repo}-{name}"
        taken[name] = item.sha256
        names[item.sha256] = name
    return names


def _gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _xml(root: ET.Element) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="utf-8") + b"\n"


def _repomd_data(kind: str, plain: bytes, packed: bytes, href: str, timestamp: int) -> ET.Element:
    data = ET.Element(f"{{{REPO_NS}}}data", {"type": kind})
    ET.SubElement(data, f"{{{REPO_NS}}}checksum", {"type": "sha256"}).text = (
        hashlib.sha256(packed).hexdigest())
    ET.SubElement(data, f"{{{REPO_NS}}}open-checksum", {"type": "sha256"}).text = (
        hashlib.sha256(plain).hexdigest())
    ET.SubElement(data, f"{{{REPO_NS}}}location", {"href": href})
    ET.SubElement(data, f"{{{REPO_NS}}}timestamp").text = str(timestamp)
    ET.SubElement(data, f"{{{REPO_NS}}}size").text = str(len(packed))
    ET.SubElement(data, f"{{{REPO_NS}}}open-size").text = str(len(plain))
    return data


def write_rpm_repo(prefix: str, bundled: list[Bundled], entries: dict[str, ET.Element],
                   store: Fetcher) -> list[Member]:
    """Members of an rpm-md repository at ``prefix`` holding ``bundled``.

    ``entries`` maps each package's upstream checksum hex to its upstream primary element.
    """
    ET.register_namespace("", COMMON_NS)
    ET.register_namespace("rpm", RPM_NS)
    names = pool_names(bundled)
    ordered = sorted(bundled, key=lambda b: (b.package.name, b.package.arch, names[b.sha256]))
    primary = ET.Element(f"{_C}metadata", {"packages": str(len(ordered))})
    filelists = ET.Element(f"{{{FILELISTS_NS}}}filelists", {"packages": str(len(ordered))})
    other = ET.Element(f"{{{OTHER_NS}}}otherdata", {"packages": str(len(ordered))})
    members: list[Member] = []
    newest = 0
    for item in ordered:
        package = item.package
        element = entries[package.checksum[1]]
        href = f"Packages/{names[item.sha256]}"
        location = element.find(f"{_C}location")
        if location is not None:
            location.attrib.pop(XML_BASE, None)
            location.set("href", href)
        checksum = element.find(f"{_C}checksum")
        if checksum is not None:
            checksum.set("type", "sha256")
            checksum.set("pkgid", "YES")
            checksum.text = item.sha256
        time_el = element.find(f"{_C}time")
        if time_el is not None and (time_el.get("build") or "").isdigit():
            newest = max(newest, int(time_el.get("build") or 0))
        primary.append(element)
        evr = package.evr
        version_attrs = {"epoch": str(evr.epoch), "ver": evr.version, "rel": evr.release or ""}
        pkg_attrs = {"pkgid": item.sha256, "name": package.name, "arch": package.arch}
        listed = ET.SubElement(filelists, f"{{{FILELISTS_NS}}}package", pkg_attrs)
        ET.SubElement(listed, f"{{{FILELISTS_NS}}}version", version_attrs)
        for path, kind in rpm_files(item.path):
            file_el = ET.SubElement(listed, f"{{{FILELISTS_NS}}}file",
                                    {"type": kind} if kind else {})
            file_el.text = path
        changes = ET.SubElement(other, f"{{{OTHER_NS}}}package", pkg_attrs)
        ET.SubElement(changes, f"{{{OTHER_NS}}}version", version_attrs)
        members.append(Member(path=f"{prefix}/{href}", source=item.path,
                              size=item.path.stat().st_size, sha256=item.sha256))
    repomd = ET.Element(f"{{{REPO_NS}}}repomd")
    ET.register_namespace("", REPO_NS)
    documents = []
    for kind, root, default_ns in (("primary", primary, COMMON_NS),
                                   ("filelists", filelists, FILELISTS_NS),
                                   ("other", other, OTHER_NS)):
        ET.register_namespace("", default_ns)
        plain = _xml(root)
        documents.append((kind, plain))
    revision = hashlib.sha256(b"".join(plain for _, plain in documents)).hexdigest()[:16]
    ET.SubElement(repomd, f"{{{REPO_NS}}}revision").text = revision
    for kind, plain in documents:
        packed = _gz(plain)
        href = f"repodata/{hashlib.sha256(packed).hexdigest()}-{kind}.xml.gz"
        repomd.append(_repomd_data(kind, plain, packed, href, newest))
        stored = store.put_bytes(packed)
        members.append(Member(path=f"{prefix}/{href}", source=stored, size=len(packed),
                              sha256=stored.name))
    ET.register_namespace("", REPO_NS)
    repomd_bytes = _xml(repomd)
    stored = store.put_bytes(repomd_bytes)
    members.append(Member(path=f"{prefix}/repodata/repomd.xml", source=stored,
                          size=len(repomd_bytes), sha256=stored.name))
    return members


_FILENAME = re.compile(r"^Filename:.*$", re.M)


def write_apt_repo(prefix: str, bundled: list[Bundled],
                   stanzas: dict[tuple[str, str, str], str], arch: str,
                   store: Fetcher, date: datetime | None = None) -> list[Member]:
    """Members of a flat apt repository at ``prefix`` holding ``bundled``.

    ``stanzas`` maps (name, version, arch) to each package's upstream Packages stanza.
    """
    names = pool_names(bundled)
    ordered = sorted(bundled, key=lambda b: (b.package.name, b.package.arch, names[b.sha256]))
    members: list[Member] = []
    blocks = []
    for item in ordered:
        package = item.package
        stanza = stanzas[(package.name, package.version, package.arch)]
        href = f"pool/{names[item.sha256]}"
        blocks.append(_FILENAME.sub(lambda _m, h=href: f"Filename: {h}", stanza, count=1))
        members.append(Member(path=f"{prefix}/{href}", source=item.path,
                              size=item.path.stat().st_size, sha256=item.sha256))
    packages_text = ("\n\n".join(blocks) + "\n").encode()
    indexes = {"Packages": packages_text, "Packages.gz": _gz(packages_text)}
    when = (date or build_time()).strftime("%a, %d %b %Y %H:%M:%S UTC")
    lines = ["Origin: kubeferry", "Label: kubeferry", "Suite: kubeferry", "Codename: kubeferry",
             f"Date: {when}", f"Architectures: {arch} all",
             "Description: packages of a kubeferry bundle (verify the bundle, not this file)"]
    for title, algo in (("MD5Sum", "md5"), ("SHA256", "sha256")):
        lines.append(f"{title}:")
        for name, data in indexes.items():
            lines.append(f" {hashlib.new(algo, data).hexdigest()} {len(data)} {name}")
    release = ("\n".join(lines) + "\n").encode()
    for name, data in (*indexes.items(), ("Release", release)):
        stored = store.put_bytes(data)
        members.append(Member(path=f"{prefix}/{name}", source=stored, size=len(data),
                              sha256=stored.name))
    return members

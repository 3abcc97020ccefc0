"""Read rpm-md repository metadata: repomd.xml, primary, filelists and modules.

Pure Python on any build host: gzip, bz2 and xz come with Python; zstd (createrepo_c >= 1.0's
default, used by current third-party repositories) is read with the ``zstandard`` package,
else Python 3.14's ``compression.zstd``, else the ``zstd`` command (kubeferry.pyz leaves
zstandard out: see manifests/admin-kit.yaml).
Parsing streams with ``iterparse`` so a 100 MB primary.xml never sits in memory as a tree.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

import yaml

from kubeferry.bundler.pkgmodel import RPM, And, Cap, If, Or, Package, Req, Unless
from kubeferry.bundler.versioncmp import RPM_FLAGS
from kubeferry.errors import OperationError

REPO_NS = "http://linux.duke.edu/metadata/repo"
COMMON_NS = "http://linux.duke.edu/metadata/common"
RPM_NS = "http://linux.duke.edu/metadata/rpm"
FILELISTS_NS = "http://linux.duke.edu/metadata/filelists"
XML_BASE = "{http://www.w3.org/XML/1998/namespace}base"

_C = f"{{{COMMON_NS}}}"
_R = f"{{{RPM_NS}}}"
_F = f"{{{FILELISTS_NS}}}"

# What an x86_64/aarch64 node installs: its own arch and noarch (i686 multilib ignored).
RPM_ARCHES = {"amd64": ("x86_64", "noarch"), "arm64": ("aarch64", "noarch")}


class MetadataError(OperationError):
    """Repository metadata that cannot be read: names the repository and the file."""


@dataclass(frozen=True)
class RepomdEntry:
    """One ``<data>`` of repomd.xml: where a metadata file is and its checksum."""

    type: str
    href: str
    checksum: tuple[str, str]
    size: int | None


def checksum_type(name: str | None) -> str:
    """The hashlib name of an rpm-md checksum type ("sha" is old createrepo's sha1)."""
    name = (name or "sha256").lower()
    return "sha1" if name == "sha" else name


def open_compressed(path: Path) -> IO[bytes]:
    """A binary stream of ``path`` decompressed by its magic (gz, xz, bz2, zst or plain)."""
    handle = open(path, "rb")  # noqa: SIM115 - handed to the caller inside the decompressor
    magic = handle.read(6)
    handle.seek(0)
    if magic[:2] == b"\x1f\x8b":
        return gzip.GzipFile(fileobj=handle)  # type: ignore[return-value]
    if magic[:6] == b"\xfd7zXZ\x00":
        return lzma.LZMAFile(handle)  # type: ignore[return-value]
    if magic[:3] == b"BZh":
        return bz2.BZ2File(handle)  # type: ignore[return-value]
    if magic[:4] == b"\x28\xb5\x2f\xfd":
        return _zstd_reader(handle, path)
    return handle


def _zstd_reader(handle: IO[bytes], path: Path) -> IO[bytes]:
    """A zstd stream's decompressed bytes, with whichever zstd reader this host has."""
    try:
        import zstandard
    except ImportError:
        pass
    else:
        return zstandard.ZstdDecompressor().stream_reader(handle, closefd=True)  # type: ignore[return-value]
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
    except ImportError:
        pass
    else:
        return zstd.ZstdFile(handle)  # type: ignore[no-any-return]
    handle.close()
    try:
        result = subprocess.run(["zstd", "-q", "-d", "-c", str(path)], capture_output=True,
                                timeout=600, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise MetadataError(f"{path.name}: zstd-compressed metadata needs the zstd command"
                            " or Python 3.14 here (or pip install zstandard)") from None
    if result.returncode != 0:
        raise MetadataError(f"{path.name}: corrupt metadata (zstd: "
                            f"{result.stderr.decode(errors='replace').strip()})")
    return io.BytesIO(result.stdout)


def parse_repomd(data: bytes, where: str) -> dict[str, RepomdEntry]:
    """The ``<data>`` entries of a repomd.xml by type (primary, filelists, modules, ...)."""
    try:
        root = ET.fromstring(data)
    except ET.ParseError as error:
        raise MetadataError(f"{where}: repomd.xml is not valid XML ({error})") from None
    if root.tag != f"{{{REPO_NS}}}repomd":
        raise MetadataError(f"{where}: repomd.xml has no <repomd> root (got {root.tag!r})")
    entries: dict[str, RepomdEntry] = {}
    for data_el in root.findall(f"{{{REPO_NS}}}data"):
        kind = data_el.get("type", "")
        location = data_el.find(f"{{{REPO_NS}}}location")
        checksum = data_el.find(f"{{{REPO_NS}}}checksum")
        if location is None or checksum is None or not location.get("href"):
            raise MetadataError(f"{where}: repomd.xml entry {kind!r} lacks location or checksum")
        size = data_el.findtext(f"{{{REPO_NS}}}size")
        entries[kind] = RepomdEntry(
            type=kind, href=location.get("href", ""),
            checksum=(checksum_type(checksum.get("type")), (checksum.text or "").strip().lower()),
            size=int(size) if size and size.isdigit() else None,
        )
    if "primary" not in entries:
        raise MetadataError(f"{where}: repomd.xml lists no primary metadata")
    return entries


def _cap(entry: ET.Element) -> Cap:
    name = sys.intern(entry.get("name", ""))
    flags = entry.get("flags")
    if not flags:
        return Cap(name)
    version = entry.get("ver") or ""
    epoch = entry.get("epoch")
    if epoch and epoch != "0":
        version = f"{epoch}:{version}"
    release = entry.get("rel")
    if release:
        version = f"{version}-{release}"
    return Cap(name, RPM_FLAGS.get(flags), version)


_RICH_TOKEN = re.compile(r"\(|\)|[^\s()]+")
_RICH_OPS = {"<", "<=", "=", "==", ">=", ">"}


def parse_rich(text: str) -> Req:
    """An rpm rich dependency such as ``(containerd or cri-o)`` as a requirement tree.

    Supports and, or, if/else, unless/else, with (as and) and without (its left side).
    """
    tokens = _RICH_TOKEN.findall(text)
    pos = 0

    def peek() -> str:
        return tokens[pos] if pos < len(tokens) else ""

    def take() -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"rich dependency ends early: {text!r}")
        pos += 1
        return tokens[pos - 1]

    def term() -> Req:
        word = take()
        if word == "(":
            return expression()
        if peek() in _RICH_OPS:
            op = take()
            return Cap(word, "=" if op == "==" else op, take())
        return Cap(word)

    def expression() -> Req:
        left = term()
        word = take()
        if word == ")":
            return left
        if word in ("and", "or", "with", "without"):
            items = [left, term()]
            while peek() == word:
                take()
                items.append(term())
            if take() != ")":
                raise ValueError(f"rich dependency mixes operators: {text!r}")
            if word == "or":
                return Or(tuple(items))
            if word == "without":
                return left
            return And(tuple(items))
        if word in ("if", "unless"):
            cond = term()
            otherwise = None
            if peek() == "else":
                take()
                otherwise = term()
            if take() != ")":
                raise ValueError(f"rich dependency is malformed: {text!r}")
            kind = If if word == "if" else Unless
            return kind(left, cond, otherwise)
        raise ValueError(f"unknown rich dependency operator {word!r} in {text!r}")

    if take() != "(":
        raise ValueError(f"rich dependency must start with '(': {text!r}")
    result = expression()
    if pos != len(tokens):
        raise ValueError(f"trailing text in rich dependency {text!r}")
    return result


def _requirement(entry: ET.Element) -> Req | None:
    name = entry.get("name", "")
    if name.startswith("rpmlib(") or not name:
        return None  # provided by rpm itself
    if name.startswith("("):
        return parse_rich(name)
    return _cap(entry)


def _package(element: ET.Element, repo: str) -> Package:
    version_el = element.find(f"{_C}version")
    checksum_el = element.find(f"{_C}checksum")
    location_el = element.find(f"{_C}location")
    size_el = element.find(f"{_C}size")
    if version_el is None or checksum_el is None or location_el is None:
        raise ValueError("package entry lacks version, checksum or location")
    epoch = version_el.get("epoch") or "0"
    evr = f"{version_el.get('ver')}-{version_el.get('rel')}"
    if epoch != "0":
        evr = f"{epoch}:{evr}"
    location = location_el.get("href", "")
    base = location_el.get(XML_BASE)
    if base:
        location = base.rstrip("/") + "/" + location
    name = sys.intern(element.findtext(f"{_C}name") or "")
    provides: list[Cap] = []
    requires: list[Req] = []
    files: list[str] = []
    fmt = element.find(f"{_C}format")
    if fmt is not None:
        for entry in fmt.iterfind(f"{_R}provides/{_R}entry"):
            provides.append(_cap(entry))
        for entry in fmt.iterfind(f"{_R}requires/{_R}entry"):
            requirement = _requirement(entry)
            if requirement is not None:
                requires.append(requirement)
        files = [sys.intern(f.text) for f in fmt.iterfind(f"{_C}file") if f.text]
    if not any(cap.name == name for cap in provides):
        provides.append(Cap(name, "=", evr))  # rpm always provides itself
    return Package(
        family=RPM, name=name, arch=sys.intern(element.findtext(f"{_C}arch") or ""),
        version=evr, repo=repo, location=location,
        checksum=(checksum_type(checksum_el.get("type")), (checksum_el.text or "").strip().lower()),
        size=int(size_el.get("package", "0")) if size_el is not None else 0,
        provides=provides, requires=requires, files=files,
    )


def _iter_elements(stream: IO[bytes], tag: str, where: str) -> Iterator[ET.Element]:
    """Each complete ``tag`` element of an XML stream, cleared after the caller is done."""
    try:
        context = ET.iterparse(stream, events=("start", "end"))
        root: ET.Element | None = None
        for event, element in context:
            if root is None and event == "start":
                root = element
            if event == "end" and element.tag == tag:
                yield element
                if root is not None:
                    root.clear()
    except (ET.ParseError, EOFError, OSError, lzma.LZMAError) as error:
        raise MetadataError(f"{where}: corrupt metadata ({error})") from None
    except Exception as error:  # zstandard raises its own ZstdError
        if type(error).__name__ == "ZstdError":
            raise MetadataError(f"{where}: corrupt metadata ({error})") from None
        raise


def parse_primary(path: Path, repo: str, arches: Iterable[str], where: str) -> list[Package]:
    """The packages of a primary.xml(.gz|.xz|.zst|.bz2) for the given arches."""
    wanted = set(arches)
    packages: list[Package] = []
    with open_compressed(path) as stream:
        for element in _iter_elements(stream, f"{_C}package", where):
            if element.get("type", "rpm") != "rpm":
                continue
            if element.findtext(f"{_C}arch") not in wanted:
                continue
            try:
                packages.append(_package(element, repo))
            except ValueError as error:
                name = element.findtext(f"{_C}name") or "?"
                raise MetadataError(f"{where}: package {name}: {error}") from None
    return packages


def primary_entries(path: Path, checksums: set[str], where: str) -> dict[str, ET.Element]:
    """The upstream ``<package>`` elements with the given checksums, by checksum.

    The bundle's primary.xml reuses them verbatim except for location and checksum.
    """
    found: dict[str, ET.Element] = {}
    if not checksums:
        return found
    with open_compressed(path) as stream:
        for element in _iter_elements(stream, f"{_C}package", where):
            checksum_el = element.find(f"{_C}checksum")
            key = (checksum_el.text or "").strip().lower() if checksum_el is not None else ""
            if key in checksums:
                found[key] = element
                if len(found) == len(checksums):
                    break
    return found


def scan_filelists(path: Path, paths: set[str], where: str) -> dict[str, list[str]]:
    """Which packages (by pkgid, the primary checksum) own any of ``paths``."""
    owners: dict[str, list[str]] = {}
    with open_compressed(path) as stream:
        for element in _iter_elements(stream, f"{_F}package", where):
            hits = [f.text for f in element.iterfind(f"{_F}file") if f.text in paths]
            if hits:
                owners.setdefault((element.get("pkgid") or "").lower(), []).extend(
                    h for h in hits if h)
    return owners


@dataclass
class ModuleFilter:
    """What dnf on a stock node hides: modular packages of streams that are not default,
    and non-modular packages that share a name with a default stream's packages."""

    hidden: set[str]  # NEVRAs (name-epoch:version-release.arch) of inactive streams
    active: set[str]  # NEVRAs of default streams
    active_names: set[str]  # package names of default streams' artifacts

    def visible(self, package: Package) -> bool:
        nevra = package.nevra
        if nevra in self.active:
            return True
        if nevra in self.hidden:
            return False
        return package.name not in self.active_names

    def merge(self, other: ModuleFilter) -> ModuleFilter:
        active = self.active | other.active
        return ModuleFilter(hidden=(self.hidden | other.hidden) - active, active=active,
                            active_names=self.active_names | other.active_names)


def _nevra_name(nevra: str) -> str:
    # name-epoch:version-release.arch: the name ends before the "-" that precedes epoch:
    head = nevra.rsplit(".", 1)[0]
    return head.rsplit("-", 2)[0]


def parse_modules(path: Path, where: str) -> ModuleFilter:
    """The module filter of a repository's modules.yaml (modulemd v2 + modulemd-defaults)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    streams: dict[tuple[str, str], set[str]] = {}
    defaults: dict[str, str] = {}
    try:
        with open_compressed(path) as stream:
            for document in yaml.load_all(io.TextIOWrapper(stream, encoding="utf-8"),
                                          Loader=loader):
                if not isinstance(document, dict):
                    continue
                data = document.get("data") or {}
                kind = document.get("document")
                if kind == "modulemd":
                    key = (str(data.get("name")), str(data.get("stream")))
                    rpms = ((data.get("artifacts") or {}).get("rpms")) or []
                    streams.setdefault(key, set()).update(str(item) for item in rpms)
                elif kind == "modulemd-defaults" and data.get("stream") is not None:
                    defaults[str(data.get("module"))] = str(data.get("stream"))
    except yaml.YAMLError as error:
        raise MetadataError(f"{where}: corrupt modules.yaml ({error})") from None
    active: set[str] = set()
    hidden: set[str] = set()
    for (module, stream_name), artifacts in streams.items():
        (active if defaults.get(module) == stream_name else hidden).update(artifacts)
    hidden -= active
    return ModuleFilter(hidden=hidden, active=active,
                        active_names={_nevra_name(n) for n in active
                                      if not n.endswith((".src", ".nosrc"))})

"""Read apt repository metadata: Release/InRelease and Packages, for dists/ and flat repos.

The chain of trust is apt's: InRelease (signature checked with ``gpgv`` against the
repository's keys when it has any) lists the sha256 of each Packages file, and each
Packages stanza the sha256 of its .deb.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Iterator

from kubeferry.bundler.pkgmodel import DEB, Cap, Or, Package, Req
from kubeferry.bundler.rpmmd import MetadataError, open_compressed
from kubeferry.bundler.versioncmp import DEB_RELATIONS
from kubeferry.errors import OperationError

# Preferred order of Packages indexes when a Release lists several.
PACKAGES_INDEXES = ("Packages.xz", "Packages.gz", "Packages.bz2", "Packages")
PRIORITY_RANK = {"required": 0, "important": 1, "standard": 2, "optional": 3, "extra": 4}


@dataclass
class Release:
    """The fields of a Release file and its SHA256 index: path -> (sha256, size)."""

    fields: dict[str, str]
    sha256: dict[str, tuple[str, int]] = field(default_factory=dict)

    def packages_index(self, prefix: str) -> tuple[str, str, int] | None:
        """(path, sha256, size) of the best Packages index under ``prefix`` ('' when flat)."""
        for name in PACKAGES_INDEXES:
            path = f"{prefix}{name}"
            if path in self.sha256:
                digest, size = self.sha256[path]
                return path, digest, size
        return None


def parse_deb822(text: str, multiline: frozenset[str] | None = None) -> Iterator[dict[str, str]]:
    """Each stanza of a deb822 file (Release, Packages) as a field map.

    Continuation lines are kept only for the fields in ``multiline`` (all when None):
    a Packages index is mostly long Descriptions nobody here reads.
    """
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        fields: dict[str, str] = {}
        key = ""
        for line in block.split("\n"):
            if not line or line[0] == "#":
                continue
            if line[0] in " \t":
                if key and (multiline is None or key in multiline):
                    fields[key] += "\n" + line.strip()
                continue
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"line without a field name: {line[:60]!r}")
            fields[key] = value.strip()
        if fields:
            yield fields


def strip_clearsign(text: str) -> str:
    """The signed text of an OpenPGP clearsigned message (InRelease), or ``text`` as is."""
    if not text.startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return text
    head, _, rest = text.partition("\n\n")
    body, _, _ = rest.partition("\n-----BEGIN PGP SIGNATURE-----")
    return "\n".join(line[2:] if line.startswith("- ") else line for line in body.split("\n"))


def parse_release(text: str, where: str) -> Release:
    """A Release (or the signed part of InRelease); MetadataError when it has no SHA256."""
    try:
        stanzas = list(parse_deb822(strip_clearsign(text)))
    except ValueError as error:
        raise MetadataError(f"{where}: corrupt Release ({error})") from None
    if not stanzas:
        raise MetadataError(f"{where}: empty Release file")
    fields = stanzas[0]
    release = Release(fields=fields)
    for line in fields.get("SHA256", "").split("\n"):
        parts = line.split()
        if len(parts) == 3 and parts[1].isdigit():
            release.sha256[parts[2]] = (parts[0].lower(), int(parts[1]))
    if not release.sha256:
        raise MetadataError(f"{where}: Release lists no SHA256 checksums")
    return release


_RELATION = re.compile(r"^\s*([^\s(:\[]+)(?::[a-z0-9-]+)?\s*(?:\(\s*([<>=]+)\s*([^)\s]+)\s*\))?")


@lru_cache(maxsize=1 << 18)
def parse_relation(text: str) -> Cap:
    """One ``name[:arch] [(op version)]`` of a Depends/Provides field."""
    match = _RELATION.match(text)
    if not match:
        raise ValueError(f"bad relation {text!r}")
    name, op, version = match.groups()
    if op is None:
        return Cap(sys.intern(name))
    if op not in DEB_RELATIONS:
        raise ValueError(f"bad relation operator {op!r} in {text!r}")
    return Cap(sys.intern(name), DEB_RELATIONS[op], version)


def parse_depends(text: str) -> list[Req]:
    """A Depends/Pre-Depends field: comma-separated groups of ``|`` alternatives."""
    return list(_parse_depends(text))


@lru_cache(maxsize=1 << 16)
def _parse_depends(text: str) -> tuple[Req, ...]:
    requirements: list[Req] = []
    for group in text.split(","):
        if not group.strip():
            continue
        alternatives = [parse_relation(alt) for alt in group.split("|")]
        requirements.append(alternatives[0] if len(alternatives) == 1 else Or(tuple(alternatives)))
    return tuple(requirements)


def _package(fields: dict[str, str], repo: str) -> Package:
    name = fields["Package"]
    version = fields["Version"]
    provides = [Cap(sys.intern(name), "=", version)]
    if fields.get("Provides"):
        provides.extend(parse_relation(item) for item in fields["Provides"].split(",")
                        if item.strip())
    depends = ", ".join(fields[key] for key in ("Pre-Depends", "Depends") if fields.get(key))
    digest = fields.get("SHA256")
    if not digest:
        raise ValueError("no SHA256 field")
    return Package(
        family=DEB, name=sys.intern(name), arch=sys.intern(fields.get("Architecture", "")),
        version=version, repo=repo, location=fields["Filename"],
        checksum=("sha256", digest.lower()), size=int(fields.get("Size", "0")),
        provides=provides, requires_text=depends, priority=fields.get("Priority", ""),
        essential=fields.get("Essential", "").lower() == "yes",
    )


# The fields a closure needs; a Packages index is mostly Descriptions nobody here reads.
_PACKAGE_FIELDS = re.compile(
    r"^(Package|Version|Architecture|Depends|Pre-Depends|Provides|Filename|Size|SHA256|"
    r"Priority|Essential): ?([^\n]*)", re.M)


def parse_packages(path: Path, repo: str, arches: Iterable[str], where: str) -> list[Package]:
    """The packages of a Packages(.xz|.gz|.bz2) index for the given arches (+ ``all``)."""
    wanted = set(arches) | {"all"}
    packages: list[Package] = []
    try:
        with open_compressed(path) as stream:
            text = stream.read().decode("utf-8", errors="replace")
        for block in text.split("\n\n"):
            if not block.strip():
                continue
            fields = {key: value.strip() for key, value in _PACKAGE_FIELDS.findall(block)}
            if fields.get("Architecture") not in wanted:
                continue
            packages.append(_package(fields, repo))
    except (KeyError, ValueError) as error:
        raise MetadataError(f"{where}: corrupt Packages index ({error})") from None
    except (OSError, EOFError) as error:
        raise MetadataError(f"{where}: corrupt Packages index ({error})") from None
    except Exception as error:
        if type(error).__name__ in ("LZMAError", "ZstdError"):
            raise MetadataError(f"{where}: corrupt Packages index ({error})") from None
        raise
    return packages


def packages_stanzas(path: Path,
                     wanted: set[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """The verbatim stanzas of (name, version, arch) triples, for the bundle's Packages."""
    found: dict[tuple[str, str, str], str] = {}
    with open_compressed(path) as stream:
        text = stream.read().decode("utf-8", errors="replace")
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        head = {}
        for line in block.split("\n"):
            key, _, value = line.partition(":")
            if key in ("Package", "Version", "Architecture"):
                head[key] = value.strip()
        key3 = (head.get("Package", ""), head.get("Version", ""), head.get("Architecture", ""))
        if key3 in wanted:
            found[key3] = block.strip("\n")
    return found


def dearmor(data: bytes) -> bytes:
    """Binary OpenPGP packets of an ASCII-armored key (gpgv reads only binary keyrings)."""
    text = data.decode("ascii", errors="replace")
    if "-----BEGIN PGP" not in text:
        return data
    out = b""
    for block in re.findall(r"-----BEGIN PGP [A-Z ]+-----\r?\n(.*?)-----END PGP", text, re.S):
        _, _, body = block.partition("\n\n") if "\n\n" in block else ("", "", block)
        lines = [line.strip() for line in body.replace("\r", "").split("\n")]
        payload = "".join(line for line in lines if line and not line.startswith("="))
        out += base64.b64decode(payload)
    return out


def verify_inrelease(inrelease: Path, keyrings: list[Path], where: str) -> list[str]:
    """Fingerprints of the good signatures on ``inrelease``; OperationError if there is none.

    Uses ``gpgv`` as apt does, reading its status lines: at least one VALIDSIG and no BADSIG.
    """
    args = ["gpgv", "--status-fd", "1"]
    for keyring in keyrings:
        args += ["--keyring", str(keyring)]
    args.append(str(inrelease))
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise OperationError(
            f"{where}: gpgv is needed to check the InRelease signature; install gnupg (gpgv)"
        ) from None
    status = [line.split() for line in result.stdout.splitlines()
              if line.startswith("[GNUPG:] ")]
    if any(parts[1] == "BADSIG" for parts in status if len(parts) > 1):
        raise OperationError(f"{where}: InRelease has a BAD signature; refusing the repository")
    good = [parts[2] for parts in status if len(parts) > 2 and parts[1] == "VALIDSIG"]
    if not good:
        raise OperationError(
            f"{where}: InRelease is not signed by any of the repository's keys"
            f" ({(result.stderr.strip().splitlines() or ['no signature'])[-1]})"
        )
    return good

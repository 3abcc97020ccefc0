"""Packages and dependencies as both rpm-md and apt metadata describe them.

One model for both families keeps the resolver single: a package has provides
(capabilities with an optional version) and requirements (a capability, or a boolean
expression of them: Debian's ``a | b`` is an ``Or``, rpm's rich dependencies map onto
``Or``/``And``/``If``/``Unless``). Versions are compared by the family's own rules.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Union

from kubeferry.bundler.versioncmp import (
    EVR,
    debian_compare,
    evr_compare,
    holds,
    parse_evr,
    rpm_ranges_overlap,
)

RPM = "rpm"
DEB = "deb"


class Cap(NamedTuple):
    """A capability, maybe with a relation: ``iptables >= 1.4.21``, ``/usr/sbin/conntrack``."""

    name: str
    op: str | None = None  # one of versioncmp.OPERATORS
    version: str | None = None

    def __str__(self) -> str:
        return f"{self.name} {self.op} {self.version}" if self.op else self.name


@dataclass(frozen=True)
class Or:
    items: tuple[Req, ...]

    def __str__(self) -> str:
        return "(" + " or ".join(str(item) for item in self.items) + ")"


@dataclass(frozen=True)
class And:
    items: tuple[Req, ...]

    def __str__(self) -> str:
        return "(" + " and ".join(str(item) for item in self.items) + ")"


@dataclass(frozen=True)
class If:
    """``(then if cond else otherwise)``: ``then`` is needed only when ``cond`` is installed."""

    then: Req
    cond: Req
    otherwise: Req | None = None

    def __str__(self) -> str:
        tail = f" else {self.otherwise}" if self.otherwise is not None else ""
        return f"({self.then} if {self.cond}{tail})"


@dataclass(frozen=True)
class Unless:
    """``(then unless cond else otherwise)``: ``then`` is needed when ``cond`` is not installed."""

    then: Req
    cond: Req
    otherwise: Req | None = None

    def __str__(self) -> str:
        tail = f" else {self.otherwise}" if self.otherwise is not None else ""
        return f"({self.then} unless {self.cond}{tail})"


Req = Union[Cap, Or, And, If, Unless]


@dataclass(eq=False)
class Package:
    """One binary package in one repository, as its metadata describes it."""

    family: str  # RPM or DEB
    name: str
    arch: str
    version: str  # rpm: [epoch:]version-release; deb: the Version field
    repo: str  # the repository name (a key of Sources.repositories)
    location: str  # path relative to the repository base URL
    checksum: tuple[str, str]  # (algorithm, hex) from the metadata
    size: int
    provides: list[Cap] = field(default_factory=list)
    requires: list[Req] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # rpm: the files primary.xml lists
    priority: str = ""  # deb: Priority
    essential: bool = False  # deb: Essential: yes
    requires_text: str = ""  # deb: Pre-Depends and Depends, parsed on first use
    _evr: EVR | None = None

    @property
    def requirements(self) -> list[Req]:
        """What the package requires (a deb's Depends are parsed only when first needed:
        a closure looks at a few hundred of Debian's 65,000 packages)."""
        if self.requires_text:
            from kubeferry.bundler.aptmeta import parse_depends
            from kubeferry.errors import OperationError

            try:
                self.requires = parse_depends(self.requires_text)
            except ValueError as error:
                raise OperationError(f"repository {self.repo}: package {self.name} has a corrupt"
                                     f" Depends field ({error})") from None
            self.requires_text = ""
        return self.requires

    @property
    def evr(self) -> EVR:
        if self._evr is None:
            self._evr = parse_evr(self.version)
        return self._evr

    @property
    def nevra(self) -> str:
        """name-epoch:version-release.arch as modulemd artifacts spell it (rpm only)."""
        evr = self.evr
        return f"{self.name}-{evr.epoch}:{evr.version}-{evr.release}.{self.arch}"

    @property
    def filename(self) -> str:
        return self.location.rsplit("/", 1)[-1]

    def upstream_version(self) -> str:
        """The version without epoch and release/revision: what ``--k8s`` pins."""
        if self.family == RPM:
            return self.evr.version
        text = self.version.split(":", 1)[-1]
        return text.rsplit("-", 1)[0] if "-" in text else text

    def label(self) -> str:
        return f"{self.name} {self.version} ({self.arch}, {self.repo})"

    def __repr__(self) -> str:
        return f"<Package {self.name}-{self.version}.{self.arch} from {self.repo}>"


def compare_versions(family: str, a: str, b: str) -> int:
    """-1, 0 or 1 comparing two versions of the given family."""
    if family == RPM:
        return evr_compare(parse_evr(a), parse_evr(b))
    return debian_compare(a, b)


def newer_first(family: str) -> Callable[[Package], Any]:
    """A sort key putting the newest version first (for ``sorted(..., key=...)``)."""
    import functools

    def cmp(x: Package, y: Package) -> int:
        return -compare_versions(family, x.version, y.version)

    return functools.cmp_to_key(cmp)  # type: ignore[return-value]


def provide_satisfies(family: str, provide: Cap, require: Cap) -> bool:
    """Whether one provided capability satisfies one required capability (same name)."""
    if family == RPM:
        return rpm_ranges_overlap(
            provide.op, parse_evr(provide.version) if provide.version else None,
            require.op, parse_evr(require.version) if require.version else None,
        )
    # dpkg: an unversioned requirement takes any provider; a versioned one needs a
    # versioned provide (always "="), compared with the requirement's relation.
    if not require.op:
        return True
    if provide.op != "=" or provide.version is None or require.version is None:
        return False
    return holds(debian_compare(provide.version, require.version), require.op)


def package_satisfies(package: Package, require: Cap) -> bool:
    """Whether ``package`` satisfies ``require`` by its own name, a provide or a file."""
    if require.name.startswith("/") and require.name in package.files:
        return True
    for provide in package.provides:
        if provide.name == require.name and provide_satisfies(package.family, provide, require):
            return True
    if package.family == DEB and package.name == require.name:
        if not require.op:
            return True
        return holds(debian_compare(package.version, require.version or ""), require.op)
    return False


def caps_of(req: Req) -> list[Cap]:
    """Every capability named anywhere in a requirement expression."""
    if isinstance(req, Cap):
        return [req]
    if isinstance(req, (Or, And)):
        return [cap for item in req.items for cap in caps_of(item)]
    parts = [req.then, req.cond] + ([req.otherwise] if req.otherwise is not None else [])
    return [cap for part in parts for cap in caps_of(part)]

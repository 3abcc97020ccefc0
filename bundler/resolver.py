"""Dependency closure over repository metadata, relative to what a node already has.

Not a SAT solver: a greedy closure with the policies yum/dnf and apt apply in practice,
which is what an offline repository needs (every package the node's package manager will
ask for is present):

- A requirement already met by a selected package, or by the node's installed (base) set,
  adds nothing. Installed packages count at their base-repository version; a requirement
  they do not meet (``glibc >= 2.28-225``) brings the newer package, and installed
  packages that the upgrade would break come along upgraded too.
- Otherwise the provider is a package of that exact name if one exists, else the best
  provider (Debian: by Priority, then name; rpm: shortest name, then name), at the newest
  version that meets every constraint seen on that name; pins (``kubeadm`` = ``--k8s``)
  restrict a name wherever it comes up.
- Debian ``a | b``: the first alternative that can be installed (apt's choice). rpm rich
  dependencies: ``or``/``and``/``if``/``unless`` with ``else``; ``with`` as ``and``.
- A constraint met by no version fails with the chain that needs it.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Iterable

from kubeferry.bundler.aptmeta import PRIORITY_RANK
from kubeferry.bundler.pkgmodel import (
    DEB,
    And,
    Cap,
    If,
    Or,
    Package,
    Req,
    Unless,
    caps_of,
    compare_versions,
    newer_first,
    package_satisfies,
)
from kubeferry.errors import InputError, OperationError


class Unsatisfiable(OperationError):
    """A dependency no package provides: the message carries the chain that needs it."""


class Universe:
    """Every visible package of the repositories a build reads, indexed for lookups."""

    def __init__(self, family: str, packages: Iterable[Package], repos: Iterable[str],
                 hidden: Iterable[Package] = (),
                 file_loader: Callable[[set[str]], dict[str, list[Package]]] | None = None):
        self.family = family
        self.packages = list(packages)
        self.repos = list(repos)
        self.by_name: dict[str, list[Package]] = {}
        self.by_provide: dict[str, list[Package]] = {}
        self.by_file: dict[str, list[Package]] = {}
        self.hidden: dict[str, list[Package]] = {}
        self._file_loader = file_loader
        self._files_loaded = False
        for package in self.packages:
            self.by_name.setdefault(package.name, []).append(package)
            for cap in package.provides:
                bucket = self.by_provide.setdefault(cap.name, [])
                if not bucket or bucket[-1] is not package:
                    bucket.append(package)
            for path in package.files:
                self.by_file.setdefault(path, []).append(package)
        for package in hidden:
            self.hidden.setdefault(package.name, []).append(package)

    def providers(self, cap: Cap) -> list[Package]:
        """Packages that satisfy ``cap`` (by provide, or by file for a path)."""
        found = [p for p in self.by_provide.get(cap.name, ()) if package_satisfies(p, cap)]
        if cap.name.startswith("/"):
            if cap.name not in self.by_file:
                self.load_files()
            found.extend(p for p in self.by_file.get(cap.name, ()) if p not in found)
        return found

    def load_files(self) -> None:
        """Look up, once, every file path any package requires in the full file lists.

        primary.xml lists only files under /etc, /usr/bin, /usr/sbin (and /bin, /sbin);
        a require on another path needs filelists.xml, as yum falls back to it.
        """
        if self._files_loaded or self._file_loader is None:
            return
        self._files_loaded = True
        wanted = {cap.name for package in self.packages for req in package.requirements
                  for cap in caps_of(req) if cap.name.startswith("/")}
        wanted -= set(self.by_file)
        if not wanted:
            return
        for path, owners in self._file_loader(wanted).items():
            bucket = self.by_file.setdefault(path, [])
            for owner in owners:
                if owner not in bucket:
                    bucket.append(owner)
                    if path not in owner.files:
                        owner.files.append(path)

    def repo_rank(self, package: Package) -> int:
        try:
            return self.repos.index(package.repo)
        except ValueError:
            return len(self.repos)


@dataclass
class Pin:
    """A restriction on one name: ``kubeadm`` at exactly ``--k8s``."""

    accepts: Callable[[Package], bool]
    description: str


@dataclass
class Resolution:
    """The chosen packages, why each was chosen, and what the installed set already had."""

    packages: list[Package]
    reasons: dict[str, str]  # package name -> the requirement chain that brought it
    unsatisfied: list[str] = field(default_factory=list)  # lenient mode only
    warnings: list[str] = field(default_factory=list)


class Resolver:
    """One closure computation; see the module docstring for the policy."""

    def __init__(self, universe: Universe, installed: Iterable[Package] = (),
                 pins: dict[str, Pin] | None = None, lenient: bool = False,
                 repos: set[str] | None = None):
        self.universe = universe
        self.family = universe.family
        self.installed: dict[str, Package] = {p.name: p for p in installed}
        self._installed_provides: dict[str, list[Package]] = {}
        for package in self.installed.values():
            for cap in package.provides:
                self._installed_provides.setdefault(cap.name, []).append(package)
            for path in package.files:
                self._installed_provides.setdefault(path, []).append(package)
        self.pins = pins or {}
        self.lenient = lenient
        self.repos = repos  # None: every repository of the universe
        self.selected: dict[str, Package] = {}
        self.parents: dict[str, tuple[str, str]] = {}  # name -> (parent name, requirement)
        self.constraints: dict[str, list[Cap]] = {}
        self.unsatisfied: list[str] = []
        self.warnings: list[str] = []
        self._failures = 0
        self._queue: deque[Package] = deque()

    # ---- satisfaction ----------------------------------------------------------------
    def _installed_satisfier(self, cap: Cap) -> Package | None:
        for package in self._installed_provides.get(cap.name, ()):
            replaced = self.selected.get(package.name)
            if replaced is not None and replaced is not package:
                continue  # upgraded: the installed version no longer counts
            if package_satisfies(package, cap):
                return package
        return None

    def _met(self, cap: Cap) -> bool:
        if (cap.name.startswith("/") and cap.name not in self._installed_provides
                and cap.name not in self.universe.by_file):
            self.universe.load_files()
            self._index_installed_files(cap.name)
        return self._installed_satisfier(cap) is not None or bool(self._selected_satisfiers(cap))

    def _index_installed_files(self, path: str) -> None:
        for package in self.universe.by_file.get(path, ()):
            if self.installed.get(package.name) is package:
                bucket = self._installed_provides.setdefault(path, [])
                if package not in bucket:
                    bucket.append(package)

    def satisfied(self, req: Req) -> bool:
        """Whether ``req`` holds for the installed set plus the selection so far."""
        if isinstance(req, Cap):
            return self._met(req)
        if isinstance(req, Or):
            return any(self.satisfied(item) for item in req.items)
        if isinstance(req, And):
            return all(self.satisfied(item) for item in req.items)
        if isinstance(req, If):
            if self.satisfied(req.cond):
                return self.satisfied(req.then)
            return req.otherwise is None or self.satisfied(req.otherwise)
        if isinstance(req, Unless):
            if not self.satisfied(req.cond):
                return self.satisfied(req.then)
            return req.otherwise is None or self.satisfied(req.otherwise)
        raise TypeError(req)

    # ---- choosing ----------------------------------------------------------------------
    def _allowed(self, package: Package) -> bool:
        if self.repos is not None and package.repo not in self.repos:
            return False
        pin = self.pins.get(package.name)
        if pin is not None and not pin.accepts(package):
            return False
        constraints = self.constraints.get(package.name, ())
        return all(package_satisfies(package, cap) for cap in constraints)

    def _name_rank(self, name: str, candidates: list[Package]) -> tuple:
        if self.family == DEB:
            best = min(PRIORITY_RANK.get(p.priority, 5) for p in candidates)
            return (best, name)
        return (len(name), name)

    def _choose(self, cap: Cap) -> Package | None:
        providers = [p for p in self.universe.providers(cap) if self._allowed(p)]
        if not providers:
            return None
        names: dict[str, list[Package]] = {}
        for package in providers:
            names.setdefault(package.name, []).append(package)
        if cap.name in names:
            name = cap.name
        else:
            installed_or_selected = [n for n in names if n in self.selected or n in self.installed]
            pool = installed_or_selected or list(names)
            name = min(pool, key=lambda n: self._name_rank(n, names[n]))
        ordered = sorted(names[name], key=lambda p: self.universe.repo_rank(p))
        return sorted(ordered, key=newer_first(self.family))[0]

    def _chain(self, name: str) -> list[str]:
        chain = [name]
        seen = {name}
        while name in self.parents and self.parents[name][0]:
            name = self.parents[name][0]
            if name in seen:
                break
            seen.add(name)
            chain.append(name)
        return list(reversed(chain))

    def _why_not(self, cap: Cap) -> str:
        """The tail of an Unsatisfiable message: what exists and why it does not fit."""
        repos = ", ".join(sorted(self.repos) if self.repos is not None else self.universe.repos)
        near = self.universe.by_provide.get(cap.name, []) or self.universe.by_name.get(cap.name, [])
        hidden = self.universe.hidden.get(cap.name, [])
        text = f"no package provides it in {repos}"
        if near:
            versions = ", ".join(sorted({f"{p.name} {p.version}" for p in near}))
            pins = [self.pins[p.name].description for p in near if p.name in self.pins]
            text = f"no version fits in {repos} (available: {versions}"
            constraints = self.constraints.get(cap.name)
            if constraints:
                text += "; also required: " + ", ".join(str(c) for c in constraints)
            if pins:
                text += "; pinned: " + pins[0]
            text += ")"
        elif hidden:
            text += (f" (only in module streams that are not enabled by default: "
                     f"{', '.join(sorted({p.version for p in hidden}))})")
        return text

    def _fail(self, requirer: Package | None, req: Req, cap: Cap) -> None:
        chain = self._chain(requirer.name) if requirer else []
        wanted = str(req)
        message = f"cannot satisfy {' -> '.join(chain + [wanted])}: {self._why_not(cap)}"
        if self.lenient:
            self._failures += 1
            if message not in self.unsatisfied:
                self.unsatisfied.append(message)
            return
        raise Unsatisfiable(message)

    def _select(self, package: Package, requirer: Package | None, why: str) -> None:
        current = self.selected.get(package.name)
        if current is package:
            return
        self.selected[package.name] = package
        if package.name not in self.parents or current is not None:
            self.parents[package.name] = (requirer.name if requirer else "", why)
        self._queue.append(package)

    def _satisfy_cap(self, cap: Cap, requirer: Package | None, req: Req) -> None:
        if self._met(cap):
            return
        choice = self._choose(cap)
        if choice is None:
            self._fail(requirer, req, cap)
            return
        self._select(choice, requirer, str(req))

    def _satisfy(self, req: Req, requirer: Package | None) -> None:
        if self.satisfied(req):
            return
        if isinstance(req, Cap):
            self._satisfy_cap(req, requirer, req)
        elif isinstance(req, Or):
            for item in req.items:
                if self._try(item, requirer):
                    return
            self._fail(requirer, req, caps_of(req.items[0])[0])
        elif isinstance(req, And):
            for item in req.items:
                self._satisfy(item, requirer)
        elif isinstance(req, If):
            if self.satisfied(req.cond):
                self._satisfy(req.then, requirer)
            elif req.otherwise is not None:
                self._satisfy(req.otherwise, requirer)
        elif isinstance(req, Unless):
            if not self.satisfied(req.cond):
                self._satisfy(req.then, requirer)
            elif req.otherwise is not None:
                self._satisfy(req.otherwise, requirer)

    def _installable(self, req: Req) -> bool:
        return all(any(self._allowed(p) for p in self.universe.providers(cap))
                   for cap in caps_of(req) if not self._met(cap))

    def _try(self, req: Req, requirer: Package | None) -> bool:
        """Satisfy one alternative, undoing the attempt if it cannot be satisfied."""
        if not self._installable(req):
            return False
        saved = (dict(self.selected), dict(self.parents), len(self._queue), len(self.unsatisfied))
        failures = self._failures
        try:
            self._satisfy(req, requirer)
            if self._failures == failures:
                return True
        except Unsatisfiable:
            pass
        self.selected, self.parents = saved[0], saved[1]
        while len(self._queue) > saved[2]:
            self._queue.pop()
        del self.unsatisfied[saved[3]:]
        return False

    def _record_constraints(self, package: Package) -> None:
        """Versioned requirements on a name hold for every later choice of that name."""
        for req in package.requirements:
            if isinstance(req, Cap) and req.op:
                bucket = self.constraints.setdefault(req.name, [])
                if req not in bucket:
                    bucket.append(req)

    # ---- the closure -------------------------------------------------------------------
    def request(self, name: str) -> None:
        """Select ``name`` (a package name or, failing that, a capability) and its closure.

        A requested package is bundled even when the installed set has it: the installer
        asks for it by name, and a minimal node may lack it.
        """
        candidates = [p for p in self.universe.by_name.get(name, []) if self._allowed(p)]
        if not candidates:
            candidates = [p for p in self.universe.providers(Cap(name)) if self._allowed(p)]
        if not candidates:
            repos = ", ".join(sorted(self.repos) if self.repos is not None else self.universe.repos)
            available = self.universe.by_name.get(name, [])
            if available and name in self.pins:
                versions = ", ".join(sorted({p.upstream_version() for p in available}))
                raise InputError(f"package {name} {self.pins[name].description} not found in "
                                 f"{repos} (available: {versions})")
            hidden = self.universe.hidden.get(name)
            extra = " (only in module streams not enabled by default)" if hidden else ""
            raise InputError(f"package {name!r} not found in {repos}{extra}; check the name "
                             "(--packages-extra) and the repositories (--sources)")
        by_name: dict[str, list[Package]] = {}
        for package in candidates:
            by_name.setdefault(package.name, []).append(package)
        chosen_name = name if name in by_name else min(by_name, key=lambda n: (len(n), n))
        pool = sorted(by_name[chosen_name], key=lambda p: self.universe.repo_rank(p))
        best = sorted(pool, key=newer_first(self.family))[0]
        self._select(best, None, "requested")

    def _drain(self) -> None:
        while self._queue:
            package = self._queue.popleft()
            if self.selected.get(package.name) is not package:
                continue  # replaced by another version meanwhile
            self._record_constraints(package)
            for req in package.requirements:
                self._satisfy(req, package)

    def _recheck(self) -> bool:
        """Re-evaluate every requirement after replacements and conditionals; True if
        anything new had to be selected."""
        changed = False
        for package in list(self.selected.values()):
            for req in package.requirements:
                if not self.satisfied(req):
                    before = dict(self.selected)
                    self._satisfy(req, package)
                    changed = changed or before != self.selected
        # Installed packages an upgrade would break come along upgraded.
        if not any(name in self.installed for name in self.selected):
            return changed
        for package in list(self.installed.values()):
            if package.name in self.selected:
                continue
            for req in package.requirements:
                if not self._broken_by_upgrade(req) or self.satisfied(req):
                    continue
                replacement = self._upgrade_for(package, req)
                if replacement is not None:
                    self._select(replacement, None, f"upgrade kept consistent with {req}")
                    changed = True
                    break
                warning = (f"installed {package.name} {package.version} needs {req}, which the "
                           "bundled upgrade does not provide, and no newer version exists")
                if warning not in self.warnings:
                    self.warnings.append(warning)
        return changed

    def _broken_by_upgrade(self, req: Req) -> bool:
        return any(self.installed.get(p.name) is not None
                   for cap in caps_of(req) for p in self.universe.by_provide.get(cap.name, ())
                   if self.selected.get(p.name) is p)

    def _upgrade_for(self, installed: Package, req: Req) -> Package | None:
        """A newer version of installed package whose requirement ``req`` an upgrade broke."""
        for candidate in sorted(self.universe.by_name.get(installed.name, []),
                                key=newer_first(self.family)):
            if candidate is installed or not self._allowed(candidate):
                continue
            if compare_versions(self.family, candidate.version, installed.version) <= 0:
                break
            return candidate
        return None

    def resolve(self, names: Iterable[str]) -> Resolution:
        """The closure of ``names``: requested packages plus what they need beyond the
        installed set."""
        requested = list(dict.fromkeys(names))
        for name in requested:
            self.request(name)
        for _ in range(100):
            self._drain()
            if not self._recheck():
                break
            self._drain()
        else:
            raise OperationError("dependency closure did not settle after 100 rounds")
        packages = self._prune(requested)
        reasons = {p.name: " -> ".join(self._chain(p.name)) for p in packages}
        return Resolution(packages=packages, reasons=reasons, unsatisfied=self.unsatisfied,
                          warnings=self.warnings)

    def _prune(self, requested: list[str]) -> list[Package]:
        """The selected packages still reachable from the requests (a replaced version's
        dependencies may have become unnecessary), in selection order."""
        roots = [self.selected[n] for n in self.selected
                 if self.parents.get(n, ("", ""))[0] == ""]
        keep: set[str] = set()
        queue = deque(roots)
        while queue:
            package = queue.popleft()
            if package.name in keep:
                continue
            keep.add(package.name)
            for req in package.requirements:
                for cap in caps_of(req):
                    if self._installed_satisfier(cap) is not None:
                        continue
                    for other in self._selected_satisfiers(cap):
                        if other.name not in keep:
                            queue.append(other)
        return [p for name, p in self.selected.items() if name in keep]

    def _selected_satisfiers(self, cap: Cap) -> list[Package]:
        found = [p for p in self.universe.by_provide.get(cap.name, ())
                 if self.selected.get(p.name) is p and package_satisfies(p, cap)]
        if cap.name.startswith("/"):
            found += [p for p in self.universe.by_file.get(cap.name, ())
                      if self.selected.get(p.name) is p and p not in found]
        return found[:1]

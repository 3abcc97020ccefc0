"""Phase ``packages``: the bundle's package set, installed from the bundle's repository alone.

EL: /etc/yum.repos.d/kubeferry.repo (baseurl file:// into the distributed bundle,
gpgcheck=1 with the bundled keys imported by ``rpm --import``), then ``yum``/``dnf
install --disablerepo='*' --enablerepo=kubeferry``, kubeadm/kubelet/kubectl versionlocked
(``installer/versionlock.py``). Debian/Ubuntu: a source list outside
sources.list.d used alone (``Dir::Etc::sourcelist`` + ``sourceparts=-``), held, ``[trusted=yes]``
because the flat repository's Release is unsigned (its integrity is the bundle's: every
file was checked by sha256 on the node by ``distribute``). Packages already installed at
the bundled version (or newer, except the pinned kubeadm/kubelet/kubectl) are left alone.
Then chrony is configured (the ``os`` phase could not if it was missing), kubelet enabled
(not started: it restarts until kubeadm init/join writes its configuration).
"""

from __future__ import annotations

import shlex
from typing import Any

from kubeferry.bundler.versioncmp import debian_compare, evr_compare, parse_evr
from kubeferry.errors import InputError, OperationError
from kubeferry.installer import facts, operations, timesync, versionlock
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.platform import Platform, data, platform
from kubeferry.installer.roles import NODE_BUNDLE_DIR
from kubeferry.installer.ssh import Connection
from kubeferry.installer.workflow import Phase
from kubeferry.openpgp import rpm_key_ids


def section(ctx: InstallContext, kind: str = "packages") -> dict[str, Any]:
    found = ctx.bundle.metadata.get(kind)
    if not found:
        raise InputError(f"{ctx.bundle.path}: the bundle has no {kind}; build it with"
                         f" --include {kind}")
    return found


def repo_dir(part: dict[str, Any]) -> str:
    return f"{NODE_BUNDLE_DIR}/{part['path']}"


# -- EL ------------------------------------------------------------------------------------------


def rpm_repo_text(repo_id: str, part: dict[str, Any]) -> str:
    keys = " ".join(f"file://{NODE_BUNDLE_DIR}/{key['path']}" for key in part.get("keys", []))
    return (f"# written by kubeferry: the bundle's {part['os']} repository on this node\n"
            f"[{repo_id}]\nname=kubeferry bundle {part['path']}\n"
            f"baseurl=file://{repo_dir(part)}/\nenabled=1\ngpgcheck=1\nrepo_gpgcheck=0\n"
            f"metadata_expire=0\n" + (f"gpgkey={keys}\n" if keys else ""))


def rpm_repo_steps(ctx: InstallContext, conn: Connection, repo_id: str, repo_file: str,
                   part: dict[str, Any]) -> list[Step]:
    """The repository file, and every bundled key rpm does not know yet imported."""
    steps = operations.file(conn, repo_file, rpm_repo_text(repo_id, part))
    imported = facts.RPM_GPG_KEYS.read(conn)
    for key in part.get("keys", []):
        ids = rpm_key_ids(ctx.bundle.read_member(key["path"]))
        if not ids or not set(ids) <= imported:
            path = f"{NODE_BUNDLE_DIR}/{key['path']}"
            steps.append(Step(f"rpm --import {path}", f"rpm --import {shlex.quote(path)}"))
    return steps


def rpm_install_command(target: Platform, repo_ids: list[str], specs: list[str]) -> str:
    weak = " --setopt=install_weak_deps=False" if target.packager == "dnf" else ""
    return (f"{target.packager} install -y --disablerepo='*' --enablerepo={','.join(repo_ids)}{weak} "
            + " ".join(shlex.quote(spec) for spec in specs))


# -- Debian / Ubuntu -------------------------------------------------------------------------------


def apt_options() -> str:
    source = data()["packages"]["apt_source_file"]
    return (f"-o Dir::Etc::sourcelist={shlex.quote(source)} -o Dir::Etc::sourceparts=-"
            " -o APT::Get::List-Cleanup=0")


def apt_install_command(specs: list[str]) -> str:
    options = apt_options()
    # --allow-change-held-packages: kubeferry holds kubeadm/kubelet/kubectl itself, and asks
    # for exact versions only (a newer bundle upgrades them; downgrades are refused earlier)
    return (f"apt-get {options} -q update && DEBIAN_FRONTEND=noninteractive apt-get {options} -q -y"
            " --no-install-recommends --allow-change-held-packages -o Dpkg::Options::=--force-confdef"
            " -o Dpkg::Options::=--force-confold install " + " ".join(shlex.quote(spec) for spec in specs))


# -- what to install ---------------------------------------------------------------------------------


def _compare(target: Platform, have: str, want: str) -> int:
    if target.is_rpm:
        return evr_compare(parse_evr(have), parse_evr(want))
    return debian_compare(have, want)


def wanted_version(target: Platform, row: dict[str, Any]) -> str:
    """The version as the node's package database spells it (rpm: epoch:version-release)."""
    if target.is_rpm:
        return f"{row.get('epoch', 0)}:{row['ver']}-{row['release']}"
    return row["version"]


def install_spec(target: Platform, row: dict[str, Any]) -> str:
    """``kubeadm-1.25.0-0.x86_64`` (yum/dnf) or ``kubeadm=1.25.0-1.1`` (apt).

    rpm: the full name-[epoch:]version-release.arch, the one form EL7's yum and dnf both
    take with an epoch (yum has no name-epoch:version-release without the arch).
    """
    if not target.is_rpm:
        return f"{row['name']}={row['version']}"
    epoch = f"{row['epoch']}:" if row.get("epoch") else ""
    return f"{row['name']}-{epoch}{row['ver']}-{row['release']}.{row['arch']}"


def to_install(ctx: InstallContext, host: Host, rows: list[dict[str, Any]]) -> list[str]:
    """Install specs of the rows the node lacks; refuses to downgrade a pinned package."""
    target = platform(ctx.bundle.os)
    conn = ctx.conn(host)
    names = [row["name"] for row in rows]
    if target.is_rpm:
        installed = facts.installed_rpms(names).read(conn)
    else:
        installed = {name: [version] for name, version in facts.installed_debs(names).read(conn).items()}
    pinned = set(data()["packages"]["pinned"])
    specs = []
    for row in rows:
        want = wanted_version(target, row)
        have = installed.get(row["name"], [])
        if any(_compare(target, version, want) == 0 for version in have):
            continue
        newer = [version for version in have if _compare(target, version, want) > 0]
        if newer and row["name"] in pinned:
            raise OperationError(f"{host.name}: {row['name']} {newer[0]} is installed, the bundle has"
                                 f" {row['version']}: kubeferry does not downgrade; remove it or use a"
                                 " bundle of that version")
        if newer:
            continue  # a newer OS package is fine
        specs.append(install_spec(target, row))
    return specs


def requested_rows(part: dict[str, Any], host: Host) -> list[dict[str, Any]]:
    """The package set for ``host``: all of it on Kubernetes nodes, not their own on lb hosts."""
    skip = set() if host.is_kubernetes_node else set(data()["packages"]["node_only"])
    return [row for row in part.get("packages", []) if row.get("requested") and row["name"] not in skip]


def install_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """Repository, keys, the package install and (apt) holds; nothing when all is in place."""
    part = section(ctx)
    target = platform(ctx.bundle.os)
    conn = ctx.conn(host)
    settings = data()["packages"]
    rows = requested_rows(part, host)
    specs = to_install(ctx, host, rows)
    if target.is_rpm:
        steps = rpm_repo_steps(ctx, conn, settings["rpm_repo_id"], settings["rpm_repo_file"], part)
        if specs:
            steps += versionlock.unlock_steps(conn, target.packager, locked_rows(target, rows))
            command = rpm_install_command(target, [settings["rpm_repo_id"]], specs)
            steps.append(Step(command, command))
        return steps
    source = f"deb [trusted=yes] file:{repo_dir(part)} ./\n"
    steps = operations.file(conn, settings["apt_source_file"], "# written by kubeferry\n" + source)
    if specs:
        steps.append(Step("apt-get update && apt-get install (the bundle's repository only) "
                          + " ".join(specs), apt_install_command(specs)))
    return steps + hold_steps(conn, rows)


def hold_steps(conn: Connection, rows: list[dict[str, Any]]) -> list[Step]:
    """Debian/Ubuntu: kubeadm/kubelet/kubectl of ``rows`` held against upgrades unless they
    are (after an install: ``apt-get install --allow-change-held-packages`` of a held
    package leaves it unheld)."""
    hold = [name for name in data()["packages"]["hold"] if name in {row["name"] for row in rows}]
    held = facts.APT_HOLDS.read(conn) if hold else set()
    unheld = [name for name in hold if name not in held]
    if not unheld:
        return []
    command = "apt-mark hold " + " ".join(shlex.quote(name) for name in unheld) + " >/dev/null"
    return [Step(f"apt-mark hold {' '.join(unheld)}", command)]


def locked_rows(target: Platform, rows: list[dict[str, Any]]) -> versionlock.Wanted:
    """The rows locked against upgrades (EL: versionlock; apt holds them), by name."""
    hold = set(data()["packages"]["hold"])
    return {row["name"]: (wanted_version(target, row), install_spec(target, row))
            for row in rows if row["name"] in hold}


def lock_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """EL: kubeadm/kubelet/kubectl versionlocked at the bundle's version (after the install)."""
    target = platform(ctx.bundle.os)
    if not target.is_rpm:
        return []
    rows = requested_rows(section(ctx), host)
    return versionlock.lock_steps(ctx.conn(host), target.packager, locked_rows(target, rows))


def enable_steps(conn: Connection, host: Host) -> list[Step]:
    """Enabled at boot, not started (kubelet restarts until kubeadm configures it)."""
    steps = []
    for unit in data()["packages"]["enable"] if host.is_kubernetes_node else []:
        enabled, _active = facts.service_state(unit).read(conn)
        if not enabled:
            steps.append(Step(f"enable {unit}", f"systemctl enable {shlex.quote(unit)} 2>/dev/null"))
    return steps


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """The install, then chrony and the units to enable. When the install has work, what
    comes after it depends on what it installed (chrony's unit, its config), so those steps
    are computed again once it ran: the plan shows them as they read now."""
    conn = ctx.conn(host)
    install = install_steps(ctx, host)
    after = _after_install(ctx, host)
    if not install:
        return after
    return [*install, Step("; ".join(step.describe for step in after) or "check chronyd",
                           run=lambda: operations.apply(conn, _after_install(ctx, host, installed=True)))]


def _after_install(ctx: InstallContext, host: Host, installed: bool = False) -> list[Step]:
    """Version locks (EL), chrony, the units to enable: what follows from what is installed."""
    if installed and not timesync.installed(ctx, host):
        raise OperationError(f"{host.name}: chronyd is still missing after the install: add chrony"
                             " to the bundle's packages")
    return [*lock_steps(ctx, host), *timesync.chrony_steps(ctx, host),
            *enable_steps(ctx.conn(host), host)]


def inputs(ctx: InstallContext, host: Host) -> object:
    """The package set of the host's roles, and chrony's peers."""
    return [[row["name"] for row in requested_rows(section(ctx), host)], timesync.site_inputs(ctx)]


PHASE = Phase(
    name="packages",
    short="install the bundle's packages from its own repository (no network), enable kubelet",
    hosts=lambda ctx: ctx.inventory.hosts,
    steps=steps,
    inputs=inputs,
)

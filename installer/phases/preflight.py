"""Phase ``preflight``: read every node's facts in parallel, print one table, and fail
before anything changes.

Cross-node checks (duplicate hostname / MAC / product_uuid, clock skew) need every
node's facts, so the phase's ``before`` reads all of them at once (in parallel) on the
admin host and each host's result is then decided from the whole picture. Errors stop the install;
warnings name what a later phase fixes (swap, SELinux, firewalld: the ``os`` phase).
No marker: it runs every time.
"""

from __future__ import annotations

import ipaddress
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubeferry.console import human_bytes
from kubeferry.errors import KubeferryError, OperationError
from kubeferry.installer import facts
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.phases import distribute
from kubeferry.installer.platform import Platform, data, describe, platform
from kubeferry.installer.roles import NODE_BUNDLE_DIR, images_for
from kubeferry.installer.workflow import Phase

MB = 1 << 20


@dataclass
class NodeFacts:
    """What preflight read from one node (or why it could not)."""

    host: Host
    error: str = ""
    os_release: dict[str, str] = field(default_factory=dict)
    arch: str = ""
    kernel: str = ""
    hostname: str = ""
    cpus: int = 0
    memory_mb: int = 0
    swap: list[str] = field(default_factory=list)
    selinux: str = ""
    firewalld: bool = False
    product_uuid: str = ""
    machine_id: str = ""
    macs: list[str] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    kubernetes_running: str | None = None  # the kubelet's version once kubeadm joined the node
    offset: float = 0.0  # node clock minus admin clock, seconds
    bundle_space: tuple[str, int] = ("?", 0)  # (mount, free MB)
    containerd_space: tuple[str, int] = ("?", 0)
    bundle_need: int = 0  # bytes still to receive
    containerd_need: int = 0  # bytes ctr import will add
    networks: list[str] | None = None  # "10.0.0.5/24" per IPv4 address; read on VIP holders only


@dataclass
class Verdict:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _settings() -> dict[str, Any]:
    return data()["preflight"]


def _clock_offset(conn) -> float:
    before = time.time()
    node = facts.EPOCH.read(conn)
    after = time.time()
    return node - (before + after) / 2


def _read(ctx: InstallContext, host: Host) -> NodeFacts:
    node = NodeFacts(host)
    try:
        conn = ctx.conn(host)
        node.os_release = facts.OS_RELEASE.read(conn)
        node.arch = facts.ARCH.read(conn)
        node.kernel = facts.KERNEL.read(conn)
        node.hostname = facts.HOSTNAME.read(conn)
        node.cpus = facts.CPUS.read(conn)
        node.memory_mb = facts.MEMORY_MB.read(conn)
        node.swap = facts.SWAP_DEVICES.read(conn)
        node.selinux = facts.SELINUX.read(conn)
        node.firewalld = facts.FIREWALLD.read(conn)
        node.product_uuid = facts.PRODUCT_UUID.read(conn)
        node.machine_id = facts.MACHINE_ID.read(conn)
        node.macs = facts.node_macs(host.address).read(conn)
        node.ports = facts.LISTENING_PORTS.read(conn)
        node.kubernetes_running = facts.CLUSTER_MEMBER.read(conn)
        if ctx.inventory.cluster.vip and host in ctx.inventory.lb_hosts:
            node.networks = facts.IPV4_ADDRESSES.read(conn)
        node.offset = _clock_offset(conn)
        node.bundle_space = facts.path_space(NODE_BUNDLE_DIR).read(conn)
        node.containerd_space = facts.path_space(_settings()["containerd_root"]).read(conn)
        present = facts.file_sizes_under(NODE_BUNDLE_DIR).read(conn)
        node.bundle_need = sum(member["size"] for member in distribute.wanted(ctx, host)
                               if present.get(member["path"]) != member["size"])
        images = images_for(ctx.bundle, host)
        if images:
            held = facts.CONTAINERD_IMAGE_DIGESTS.read(conn)
            missing = sum(image.get("size", 0) for image in images
                          if held.get(image["name"]) != image["digest"])
            node.containerd_need = int(missing * float(_settings()["containerd_bytes_per_image_byte"]))
    except KubeferryError as error:
        node.error = str(error)
    return node


def gather(ctx: InstallContext) -> list[Step]:
    """Every host's facts, read in parallel, judged together and printed as one table: the
    phase's ``before`` (no change, so no step)."""
    hosts = list(ctx.inventory.hosts)
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(hosts)))) as pool:
        found = dict(zip([h.name for h in hosts], pool.map(lambda h: _read(ctx, h), hosts)))
    verdicts = judge(ctx, found)
    ctx.state.facts, ctx.state.verdicts = found, verdicts
    ctx.echo(table(ctx, found, verdicts))
    return []


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.replace("-", ".").split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


def shared_values(found: dict[str, NodeFacts], values) -> dict[str, dict[str, list[str]]]:
    """host -> {value: [other hosts sharing it]} for the values ``values(node)`` lists."""
    owners: dict[str, list[str]] = {}
    for name, node in found.items():
        for value in set(values(node)):
            if value:
                owners.setdefault(value, []).append(name)
    shared: dict[str, dict[str, list[str]]] = {}
    for value, names in owners.items():
        if len(names) > 1:
            for name in names:
                shared.setdefault(name, {})[value] = [n for n in names if n != name]
    return shared


def _ports_for(host: Host) -> list[int]:
    ports = _settings()["ports"]
    wanted = list(ports["control-plane"]) if host.is_control_plane else []
    if host.is_worker:
        wanted += [port for port in ports["worker"] if port not in wanted]
    return wanted


def judge(ctx: InstallContext, found: dict[str, NodeFacts]) -> dict[str, Verdict]:
    """Errors and warnings per host, from every host's facts."""
    settings = _settings()
    target: Platform = platform(ctx.bundle.os)
    arch = target.uname_arch(ctx.bundle.arch)
    verdicts = {name: Verdict() for name in found}
    readable = {name: node for name, node in found.items() if not node.error}
    for kind, values in (("hostname", lambda n: [n.hostname]),
                         ("product_uuid", lambda n: [n.product_uuid]),
                         ("MAC", lambda n: n.macs)):
        for name, shared in shared_values(readable, values).items():
            for value, others in shared.items():
                verdicts[name].errors.append(f"duplicate {kind} {value} (also on {', '.join(others)})"
                                             + ("; clone VMs with a fresh one" if kind != "hostname" else ""))
    for name, shared in shared_values(readable, lambda n: [n.machine_id]).items():
        verdicts[name].warnings.append(f"same /etc/machine-id as {', '.join(next(iter(shared.values())))}")
    offsets = [node.offset for node in readable.values()]
    skew = max(offsets) - min(offsets) if offsets else 0.0
    fixed_by_os = ctx.runs("os")
    for name, node in found.items():
        verdict = verdicts[name]
        if node.error:
            verdict.errors.append(f"cannot read facts: {node.error}")
            continue
        host = node.host
        if not target.matches(node.os_release):
            verdict.errors.append(f"OS is {describe(node.os_release)}, the bundle is for {target.os}:"
                                  f" use a {target.os} bundle for this node")
        if node.arch != arch:
            verdict.errors.append(f"architecture {node.arch}, the bundle is {ctx.bundle.arch} ({arch})")
        if host.is_control_plane and node.cpus < settings["control_plane_min_cpus"]:
            verdict.errors.append(f"{node.cpus} CPU: kubeadm needs {settings['control_plane_min_cpus']}"
                                  " on a control plane")
        if host.is_control_plane and node.memory_mb < settings["control_plane_min_memory_mb"]:
            verdict.errors.append(f"{node.memory_mb} MB memory: kubeadm needs"
                                  f" {settings['control_plane_min_memory_mb']} MB on a control plane")
        elif node.memory_mb < settings["memory_warn_mb"]:
            verdict.warnings.append(f"{node.memory_mb} MB memory (under {settings['memory_warn_mb']} MB)")
        for what, bad in (("swap is on", bool(node.swap)),
                          ("SELinux is enforcing", node.selinux == "enforcing"),
                          ("firewalld is running", node.firewalld)):
            if bad:
                (verdict.warnings if fixed_by_os else verdict.errors).append(
                    what + ("; the os phase turns it off" if fixed_by_os else "; run the os phase"))
        if (target.os == "el7" and ctx.inventory.cluster.proxy_mode == "ipvs"
                and _version_tuple(node.kernel) < _version_tuple(settings["el7_min_kernel"])):
            verdict.warnings.append(f"kernel {node.kernel}: the kernel phase installs kernel-ml"
                                    f" (>= {settings['el7_min_kernel']} for IPVS)")
        busy = [port for port in _ports_for(host) if port in node.ports]
        if busy and node.kubernetes_running is None:
            verdict.errors.append(f"port{'s' if len(busy) > 1 else ''} {', '.join(map(str, busy))}"
                                  " in use: stop what listens there")
        if skew > settings["skew_warn_seconds"] and node.offset in (max(offsets), min(offsets)):
            verdict.warnings.append(f"clocks differ by {skew:.1f} s between nodes; the os phase"
                                    " syncs them to the first control plane (chrony)")
        if node.kubernetes_running and node.kubernetes_running != ctx.bundle.kubernetes:
            verdict.errors.append(
                f"it runs Kubernetes v{node.kubernetes_running}, the bundle is"
                f" {ctx.bundle.kubernetes}: install does not upgrade a cluster (its packages would"
                " outrun the control plane); use the bundle the cluster was installed from")
        verdict.errors.extend(_space_errors(node))
        vip_error = _vip_error(ctx.inventory.cluster.vip, node.networks)
        if vip_error:
            verdict.errors.append(vip_error)
    return verdicts


def _vip_error(vip: str | None, networks: list[str] | None) -> str | None:
    """keepalived can only hold the VIP on an interface whose subnet contains it."""
    if not vip or networks is None:
        return None
    subnets = []
    for text in networks:
        try:
            subnets.append(ipaddress.ip_interface(text.strip()).network)
        except ValueError:
            continue
    address = ipaddress.ip_address(vip)
    if any(address in subnet for subnet in subnets):
        return None
    return (f"cluster.vip {vip} is on none of its networks ({', '.join(map(str, subnets)) or 'none'}):"
            " keepalived could not hold it; choose a free address in the nodes' subnet")


def _space_errors(node: NodeFacts) -> list[str]:
    needs: dict[str, int] = {}
    free: dict[str, int] = {}
    for (mount, free_mb), need in ((node.bundle_space, node.bundle_need),
                                   (node.containerd_space, node.containerd_need)):
        needs[mount] = needs.get(mount, 0) + need
        free[mount] = free_mb
    errors = []
    for mount, need in needs.items():
        if need > free[mount] * MB:
            errors.append(f"{mount} has {human_bytes(free[mount] * MB)} free, needs {human_bytes(need)}"
                          f" ({NODE_BUNDLE_DIR} and containerd's images): free some space")
    return errors


def _cell(node: NodeFacts, column: str) -> str:
    if node.error:
        return "?"
    if column == "os":
        return describe(node.os_release)
    if column == "disk":
        need = node.bundle_need + node.containerd_need
        return f"{human_bytes(need)}/{human_bytes(node.bundle_space[1] * MB)}"
    return {
        "arch": node.arch, "cpu": str(node.cpus), "memory": f"{node.memory_mb / 1024:.1f}G",
        "kernel": node.kernel, "swap": "on" if node.swap else "off", "selinux": node.selinux,
        "firewalld": "active" if node.firewalld else "-",
        "skew": f"{node.offset:+.2f}s",
    }[column]


COLUMNS = ("os", "arch", "cpu", "memory", "kernel", "swap", "selinux", "firewalld", "skew", "disk")


def table(ctx: InstallContext, found: dict[str, NodeFacts], verdicts: dict[str, Verdict]) -> str:
    """The preflight table (one row per host) and one line per problem below it."""
    header = ["host", *COLUMNS, "result"]
    rows = [header]
    for name, node in found.items():
        verdict = verdicts[name]
        result = "ERROR" if verdict.errors else "warn" if verdict.warnings else "ok"
        rows.append([name, *(_cell(node, column) for column in COLUMNS), result])
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [f"preflight: bundle {ctx.bundle.os} {ctx.bundle.arch}, Kubernetes {ctx.bundle.kubernetes}"]
    lines += ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows]
    for name, verdict in verdicts.items():
        lines += [f"  {name}: error: {problem}" for problem in verdict.errors]
        lines += [f"  {name}: warning: {problem}" for problem in verdict.warnings]
    return "\n".join(lines)


def decide(ctx: InstallContext, host: Host) -> list[Step]:
    """Nothing to change; OperationError with every error preflight found on ``host``."""
    verdict = (ctx.state.verdicts or {}).get(host.name)
    if verdict is None:
        raise OperationError(f"{host.name}: preflight has no facts of this host")
    log = ctx.log(host)
    for warning in verdict.warnings:
        log(f"preflight warning: {warning}")
    if verdict.errors:
        raise OperationError(f"{host.name}: preflight: " + "; ".join(verdict.errors))
    return []


PHASE = Phase(
    name="preflight",
    short="check every node (OS, arch, resources, duplicates, ports, disk) before changing anything",
    hosts=lambda ctx: ctx.inventory.hosts,
    before=gather,
    steps=decide,
    marker=False,
)

"""Phase ``os``: the kernel and OS settings kubeadm and kube-proxy need (runbook 000 1.1).

Swap off (now and in /etc/fstab), SELinux permissive (EL), firewalld stopped and disabled or
opened per the inventory (``installer/firewall.py``), kernel modules and sysctls now and at boot,
/etc/hosts entries for the nodes, the API endpoint name and Harbor (one marked block),
and chrony against the first control plane when chrony is already on the node (else the
``packages`` phase installs and configures it). Module availability is checked first: a
kernel without IPVS fails the phase before anything changes.
"""

from __future__ import annotations

import ipaddress
import re

from kubeferry.errors import OperationError
from kubeferry.installer import facts, firewall, operations, timesync
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import MissingModules, Step
from kubeferry.installer.platform import data, platform
from kubeferry.installer.workflow import Phase

FSTAB = "/etc/fstab"


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return False
    return True


def hosts_lines(ctx: InstallContext) -> list[str]:
    """The /etc/hosts block: every node, the API endpoint name, Harbor's name."""
    inventory = ctx.inventory
    lines = [f"{host.address} {host.name}" for host in inventory.hosts]
    endpoint = inventory.cluster.endpoint_host
    if not _is_ip(endpoint):
        lines.append(f"{inventory.cluster.vip or inventory.first_control_plane.address} {endpoint}")
    registry = inventory.registry
    if registry is not None and registry.address and not _is_ip(registry.hostname):
        lines.append(f"{registry.address} {registry.hostname}")
    return lines


def without_swap(fstab: str) -> str:
    """``fstab`` with every active swap line commented out."""
    out = []
    for line in fstab.splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.lstrip().startswith("#") and fields[2] == "swap":
            line = "#" + line
        out.append(line)
    return "\n".join(out) + ("\n" if fstab.endswith("\n") or not fstab else "")


def _swap(conn) -> list[Step]:
    steps = []
    if facts.SWAP_DEVICES.read(conn):
        steps.append(Step("swapoff -a", "swapoff -a"))
    fstab = facts.file_content(FSTAB).read(conn)
    if fstab is not None and without_swap(fstab) != fstab:
        steps += operations.file(conn, FSTAB, without_swap(fstab))
    return steps


_ENFORCING = re.compile(r"^SELINUX=enforcing\s*$", re.M)


def _selinux(conn) -> list[Step]:
    steps = []
    if facts.SELINUX.read(conn) == "enforcing":
        steps.append(Step("setenforce 0", "setenforce 0"))
    path = data()["os"]["selinux_config"]
    config = facts.file_content(path).read(conn)
    if config is not None and _ENFORCING.search(config):
        steps += operations.file(conn, path, _ENFORCING.sub("SELINUX=permissive", config))
    return steps


def module_names(ctx: InstallContext) -> list[str]:
    settings = data()["os"]
    ipvs = settings["ipvs_modules"] if ctx.inventory.cluster.proxy_mode == "ipvs" else []
    return [*settings["modules"], *ipvs]


def _modules(ctx: InstallContext, host: Host) -> list[Step]:
    conn = ctx.conn(host)
    settings = data()["os"]
    try:
        return operations.modules(conn, module_names(ctx), settings["modules_file"])
    except MissingModules as error:
        kernel = facts.KERNEL.read(conn)
        ipvs = [name for name in error.missing if name in settings["ipvs_modules"]]
        if ipvs:
            advice = ("use cluster.proxyMode: iptables, or a kernel with IPVS"
                      + (" (the kernel phase installs kernel-ml)" if ctx.bundle.os == "el7" else ""))
        else:
            advice = "use a kernel that has them (kubeadm needs them)"
        raise OperationError(f"{host.name}: {', '.join(error.missing)}: not available in kernel"
                             f" {kernel} ({error.reason}); {advice}") from None


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """Everything the node still needs, in order; raises before any change if it cannot work."""
    conn = ctx.conn(host)
    settings = data()["os"]
    kubernetes = host.is_kubernetes_node  # lb-only hosts need no swap, modules or sysctl changes
    modules = _modules(ctx, host) if kubernetes else []  # first: may refuse the node
    planned = _swap(conn) if kubernetes else []
    if platform(ctx.bundle.os).is_rpm:
        planned += _selinux(conn)
    planned += firewall.steps(ctx, host)
    planned += modules
    if kubernetes:
        planned += operations.sysctl(conn, dict(settings["sysctl"]), settings["sysctl_file"])
    planned += operations.marked_block(conn, settings["hosts_file"], settings["hosts_marker"],
                                       hosts_lines(ctx))
    if timesync.installed(ctx, host):
        planned += timesync.chrony_steps(ctx, host)
    else:
        ctx.log(host)("os: chrony is not installed yet: the packages phase installs and configures it")
    return planned


def inputs(ctx: InstallContext, host: Host) -> object:
    """The site data this phase writes from: /etc/hosts, modules, chrony's peers."""
    return [hosts_lines(ctx), module_names(ctx), host.is_kubernetes_node, timesync.site_inputs(ctx),
            ctx.inventory.os.firewalld, firewall.wanted(ctx, host)]


PHASE = Phase(
    name="os",
    short="swap off, SELinux permissive, firewalld off, modules, sysctl, /etc/hosts, chrony",
    hosts=lambda ctx: ctx.inventory.hosts,
    steps=steps,
    inputs=inputs,
)

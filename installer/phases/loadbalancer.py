"""Phase ``loadbalancer`` (HA only): haproxy + keepalived hold the API endpoint on the VIP.

On each lb host (the ``lb`` hosts, else the control planes when ``cluster.vip`` is set;
none: nothing to do): haproxy forwards the endpoint port to every control plane's
kube-apiserver (health-checked with GET /healthz over TLS), keepalived holds the VIP where
haproxy listens. haproxy and keepalived come from the bundle's packages (the ``packages``
phase installs them on lb hosts); a host without them fails with one line saying so.
Configs are checked by the programs themselves before they replace the old ones; a
service restarts only when its files changed. Then the admin host waits (bounded) until
the VIP is up on exactly one lb host.
"""

from __future__ import annotations

import time

from kubeferry import manifests
from kubeferry.errors import OperationError
from kubeferry.installer import facts, lb_config, operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.ssh import Connection
from kubeferry.installer.workflow import ADMIN, Phase

PROGRAMS = ("haproxy", "keepalived")


def addresses(conn: Connection) -> dict[str, str]:
    """IPv4 address -> interface, from ``ip -o -4 addr show``."""
    result = conn.run("ip -o -4 addr show", check=False)
    found = {}
    for line in result.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == "inet":
            found[fields[3].split("/")[0]] = fields[1].rstrip(":").split("@")[0]
    return found


def _interface(conn: Connection, host: Host) -> str:
    interface = addresses(conn).get(host.address)
    if interface is None:
        raise OperationError(f"{host.name}: no interface holds {host.address} (ip -o -4 addr show)")
    return interface


def _missing_programs(conn: Connection) -> list[str]:
    return [name for name in PROGRAMS
            if not conn.run(f"test -x /usr/sbin/{name} || command -v {name} >/dev/null", check=False).ok]


def _os_family(ctx: InstallContext) -> str:
    return manifests.load("platforms")["oses"][ctx.bundle.os]["family"]


def _files(ctx: InstallContext, host: Host) -> dict[str, tuple[str, str, str]]:
    """What goes where: role -> (path, content, mode)."""
    conn, inventory, data = ctx.conn(host), ctx.inventory, lb_config.settings()
    defaults_path, defaults = lb_config.defaults_file(_os_family(ctx))
    return {
        "haproxy": (data["haproxy"]["path"], lb_config.haproxy_cfg(inventory), "0644"),
        "check": (data["checkScript"]["path"], lb_config.check_script(inventory), "0755"),
        "defaults": (defaults_path, defaults, "0644"),
        "keepalived": (data["keepalived"]["path"],
                       lb_config.keepalived_conf(inventory, host, _interface(conn, host)), "0644"),
    }


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """Each file written only after the program itself accepted it (``-c``/``-t`` on the
    temp copy), then each service restarted only if its files changed."""
    conn = ctx.conn(host)
    missing = _missing_programs(conn)
    if missing:
        raise OperationError(f"{host.name}: {' and '.join(missing)} not installed; the packages phase"
                             " installs haproxy and keepalived from the bundle on lb hosts (run it first)")
    files = _files(ctx, host)

    def put(role: str, check: str | None = None) -> list[Step]:
        path, content, mode = files[role]
        return operations.file(conn, path, content, mode, check=check)

    haproxy = put("haproxy", "haproxy -c -q -f {}")
    keepalived = put("check") + put("defaults")  # the config test wants the check script there
    keepalived += put("keepalived", "keepalived -t -f {}")
    return [*haproxy, *keepalived,
            *operations.service(conn, "haproxy", restart=bool(haproxy)),
            *operations.service(conn, "keepalived", restart=bool(keepalived))]


def _planned_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """``steps``; in a plan made before the packages phase installed haproxy and keepalived,
    what it will do with them once they are there."""
    if ctx.options.plan:
        missing = _missing_programs(ctx.conn(host))
        if missing:
            return [Step(f"configure haproxy + keepalived for {ctx.inventory.cluster.vip} (once the"
                         f" packages phase installed {' and '.join(missing)})",
                         run=lambda: "")]
    return steps(ctx, host)


def vip_holders(ctx: InstallContext) -> list[str]:
    """The lb hosts that hold the VIP right now."""
    vip = ctx.inventory.cluster.vip
    return [host.name for host in ctx.inventory.lb_hosts if vip in addresses(ctx.conn(host))]


def vip_steps(ctx: InstallContext) -> list[Step]:
    """After the lb hosts: the admin host waits (bounded) for the VIP on exactly one."""
    if not ctx.inventory.lb_hosts:
        return []
    return [Step(f"wait for VIP {ctx.inventory.cluster.vip} on exactly one lb host",
                 run=lambda: check_vip(ctx))]


def check_vip(ctx: InstallContext) -> str:
    """Wait (bounded) until the VIP is on exactly one lb host and haproxy listens on each."""
    port = ctx.inventory.cluster.endpoint_port
    deaf = [host.name for host in ctx.inventory.lb_hosts
            if port not in facts.LISTENING_PORTS.read(ctx.conn(host))]
    if deaf:
        raise OperationError(f"haproxy does not listen on port {port} on {', '.join(deaf)}"
                             " (journalctl -u haproxy there)")
    timeout = lb_config.settings()["vipTimeout"]
    deadline = time.monotonic() + timeout
    holders = vip_holders(ctx)
    while len(holders) != 1 and time.monotonic() < deadline:
        time.sleep(1)
        holders = vip_holders(ctx)
    vip = ctx.inventory.cluster.vip
    if len(holders) != 1:
        where = ", ".join(holders) if holders else "no lb host"
        raise OperationError(f"VIP {vip} is on {where} after {timeout} s, not on exactly one"
                             " (journalctl -u keepalived on the lb hosts)")
    ctx.log(ADMIN)(f"loadbalancer: VIP {vip} is on {holders[0]}; haproxy listens on port {port}")
    return ""


def inputs(ctx: InstallContext, host: Host) -> object:
    """The backends (every control plane), the VIP and its peers (every lb host)."""
    inventory = ctx.inventory
    return [lb_config.haproxy_cfg(inventory), inventory.cluster.vip,
            [f"{h.name} {h.address}" for h in inventory.lb_hosts]]


PHASE = Phase(
    name="loadbalancer",
    short="haproxy + keepalived on the lb hosts: the API endpoint on the VIP (HA only)",
    hosts=lambda ctx: ctx.inventory.lb_hosts,
    steps=_planned_steps,
    after=vip_steps,
    inputs=inputs,
)

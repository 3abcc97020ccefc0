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

import shlex
import time

from kubeferry import manifests
from kubeferry.errors import OperationError
from kubeferry.installer import facts, lb_config, operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.ssh import Connection
from kubeferry.installer.workflow import ADMIN, Phase

STAGE_DIR = "/var/lib/kubeferry/loadbalancer"  # configs are validated here before use
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


def _check_staged(conn: Connection, path: str, content: str, check: str) -> None:
    """OperationError unless ``check`` (``{}`` = a staged copy of ``content``) passes."""
    stage = f"{STAGE_DIR}/{path.rsplit('/', 1)[-1]}"
    operations.apply(conn, operations.file(conn, stage, content))
    result = conn.run(check.format(shlex.quote(stage)), check=False)
    if not result.ok:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise OperationError(f"{conn.host.name}: the {path} kubeferry made does not pass"
                             f" `{check.format(stage)}`: {lines[-1] if lines else 'no output'}")


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


def _require_programs(conn: Connection, host: Host) -> None:
    missing = _missing_programs(conn)
    if missing:
        raise OperationError(f"{host.name}: {' and '.join(missing)} not installed; the packages phase"
                             " installs haproxy and keepalived from the bundle on lb hosts (run it first)")


def plan(ctx: InstallContext, host: Host) -> list[str]:
    conn = ctx.conn(host)
    missing = _missing_programs(conn)
    if missing:  # a whole-install plan: the packages phase would install them first
        return [f"configure haproxy + keepalived for {ctx.inventory.cluster.vip} (once the packages"
                f" phase installed {' and '.join(missing)})"]
    files = _files(ctx, host)
    steps = {role: operations.file(conn, *entry) for role, entry in files.items()}
    keepalived = steps["check"] + steps["defaults"] + steps["keepalived"]
    services = operations.service(conn, "haproxy", restart=bool(steps["haproxy"]))
    services += operations.service(conn, "keepalived", restart=bool(keepalived))
    return [step.describe for step in steps["haproxy"] + keepalived + services]


def apply(ctx: InstallContext, host: Host) -> str:
    conn = ctx.conn(host)
    _require_programs(conn, host)
    files = _files(ctx, host)
    done: list[Step] = []

    def put(role: str, check: str | None = None) -> list[Step]:
        path, content, mode = files[role]
        steps = operations.file(conn, path, content, mode)
        if steps and check:
            _check_staged(conn, path, content, check)
        operations.apply(conn, steps)
        done.extend(steps)
        return steps

    haproxy = put("haproxy", "haproxy -c -q -f {}")
    keepalived = put("check") + put("defaults")  # the config test wants the check script there
    keepalived += put("keepalived", "keepalived -t -f {}")
    for unit, changed in (("haproxy", haproxy), ("keepalived", keepalived)):
        steps = operations.service(conn, unit, restart=bool(changed))
        operations.apply(conn, steps)
        done.extend(steps)
    return "; ".join(step.describe for step in done)


def vip_holders(ctx: InstallContext) -> list[str]:
    """The lb hosts that hold the VIP right now."""
    vip = ctx.inventory.cluster.vip
    return [host.name for host in ctx.inventory.lb_hosts if vip in addresses(ctx.conn(host))]


def check_vip(ctx: InstallContext) -> str:
    """Wait (bounded) until the VIP is on exactly one lb host and haproxy listens on each."""
    if not ctx.inventory.lb_hosts:
        return ""
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


def _admin_plan(ctx: InstallContext) -> list[str]:
    if not ctx.inventory.lb_hosts:
        return []
    return [f"wait for VIP {ctx.inventory.cluster.vip} on exactly one lb host"]


PHASE = Phase(
    name="loadbalancer",
    short="haproxy + keepalived on the lb hosts: the API endpoint on the VIP (HA only)",
    hosts=lambda ctx: ctx.inventory.lb_hosts,
    apply=apply,
    plan=plan,
    admin=check_vip,
    admin_plan=_admin_plan,
)

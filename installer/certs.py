"""``kubeferry certs check|renew``: the control planes' certificates, as kubeadm reports them.

``check`` runs ``kubeadm certs check-expiration`` on every control plane and reads its
report (kubeadm's text table: CERTIFICATE, EXPIRES as ``Jan 02, 2006 15:04 UTC``,
RESIDUAL TIME, CERTIFICATE AUTHORITY, EXTERNALLY MANAGED; then the CAs), so what an
operator sees is exactly what kubeadm would tell them on each node. kubeadm makes leaf
certificates for one year and CAs for ten: under 30 days left is a warning, under 7 days
(or expired, or missing) fails the check (exit 1), so a cron job or a monitoring probe can
run it.

``renew`` runs ``kubeadm certs renew all`` on one control plane at a time, then restarts its
control-plane static pods (installer/controlplane.py) and waits for its API server's
/healthz before the next node, so an HA cluster keeps serving throughout. kubeadm does not
renew CAs; a CA near its end is reported, not renewed. The admin kubeconfig beside the
inventory is fetched again (its client certificate was renewed too).
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from typing import Callable

from kubeferry.errors import KubeferryError, OperationError
from kubeferry.installer import controlplane, operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host

WARN_DAYS = 30
FAIL_DAYS = 7
DAY = 86400.0
CHECK = "kubeadm certs check-expiration"
RENEW = "kubeadm certs renew all"
_CELLS = re.compile(r"\s{2,}")


@dataclass(frozen=True)
class Expiry:
    """One line of kubeadm's report on one control plane."""

    host: str
    name: str
    expires: str  # as kubeadm prints it; "" when missing
    residual: str  # kubeadm's RESIDUAL TIME; "" when missing
    seconds_left: float | None  # None: kubeadm reports it !MISSING!
    authority: bool  # a CA (second table)

    @property
    def days_left(self) -> float | None:
        return None if self.seconds_left is None else self.seconds_left / DAY


def parse_report(host: str, text: str, now: float) -> list[Expiry]:
    """The rows of ``kubeadm certs check-expiration``'s two tables."""
    rows: list[Expiry] = []
    table = None
    for line in text.splitlines():
        cells = _CELLS.split(line.strip())
        if cells[0] in ("CERTIFICATE", "CERTIFICATE AUTHORITY") and "EXPIRES" in cells:
            table = cells[0]
            continue
        if not line.strip() or table is None:
            continue
        authority = table == "CERTIFICATE AUTHORITY"
        if cells[0].startswith("!MISSING!"):
            rows.append(Expiry(host, cells[0].split(None, 1)[1], "", "", None, authority))
            continue
        if len(cells) < 3:
            continue
        try:
            expires = calendar.timegm(time.strptime(cells[1].replace(" UTC", ""), "%b %d, %Y %H:%M"))
        except ValueError:
            raise OperationError(f"{host}: cannot read `{CHECK}` line {line.strip()!r}") from None
        rows.append(Expiry(host, cells[0], cells[1], cells[2], expires - now, authority))
    if not rows:
        raise OperationError(f"{host}: `{CHECK}` printed no certificate table")
    return rows


def check(ctx: InstallContext) -> list[Expiry]:
    """Every control plane's report, in inventory order."""
    rows: list[Expiry] = []
    for host in ctx.inventory.control_planes:
        result = operations.run(ctx.conn(host), CHECK, timeout=120)
        rows += parse_report(host.name, result.stdout, time.time())
    return rows


def problems(rows: list[Expiry]) -> tuple[list[str], list[str]]:
    """(warnings, failures): one line each, naming host, certificate and time left."""
    warnings, failures = [], []
    for row in rows:
        what = f"{row.host} {'CA ' if row.authority else ''}{row.name}"
        fix = ("kubeadm does not renew CAs: plan a CA rotation" if row.authority
               else "run `kubeferry certs renew`")
        days = row.days_left
        if days is None:
            failures.append(f"{what} is missing")
        elif days < FAIL_DAYS:
            left = "expired" if days < 0 else f"expires in {row.residual}"
            failures.append(f"{what} {left} ({row.expires}): {fix}")
        elif days < WARN_DAYS:
            warnings.append(f"{what} expires in {row.residual} ({row.expires}): {fix}")
    return warnings, failures


def table(rows: list[Expiry]) -> list[str]:
    """HOST, CERTIFICATE, EXPIRES, RESIDUAL TIME: what kubeadm said, per control plane."""
    cells = [["HOST", "CERTIFICATE", "EXPIRES", "RESIDUAL TIME"]]
    cells += [[r.host, ("CA " if r.authority else "") + r.name, r.expires or "!MISSING!", r.residual]
              for r in rows]
    widths = [max(len(row[i]) for row in cells) + 3 for i in range(3)]
    return ["".join(c.ljust(w) for c, w in zip(row, widths)) + row[3] for row in cells]


def renew_host(ctx: InstallContext, host: Host) -> str:
    operations.run(ctx.conn(host), RENEW, timeout=300)
    controlplane.restart_static_pods(ctx, host)
    return "certificates renewed; kube-apiserver, kube-controller-manager, kube-scheduler and etcd restarted"


def renew(ctx: InstallContext, report: Callable[[str], None]) -> None:
    """One control plane at a time; stops at the first that fails (the others keep serving)."""
    from kubeferry.installer.phases.init import fetch_admin_kubeconfig

    for host in ctx.inventory.control_planes:
        try:
            report(f"[certs] {host.name}: {renew_host(ctx, host)}")
        except KubeferryError as error:
            ctx.log(host)(f"FAILED certs renew: {error}")
            raise OperationError(f"{host.name}: {error} (log: {ctx.run_dir / (host.name + '.log')}); the"
                                 " control planes before it are renewed: fix it and run the same command"
                                 " again") from None
    written = fetch_admin_kubeconfig(ctx)
    if written:
        report(f"[certs] admin-host: {written}")

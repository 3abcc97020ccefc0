"""Ordered, named phases, each runnable alone and idempotent (kubeadm's workflow), fanned
out over hosts (kubeadm runs on one node; kubeferry drives many).

A phase is plain data: a name, a one-line description, which hosts it touches, and one
function per host, ``steps``: read the facts, return what the host still needs (nothing
when it is there). ``--plan`` prints the steps' descriptions; a run applies the same
steps (operations.Step), so a plan cannot promise what a run would not do. Work on the
admin host is steps too: ``before`` the hosts (preflight's facts, the relay) and
``after`` them (Harbor seeding, the admin kubeconfig, the VIP check).

A phase that completes on a host leaves a marker there (``/var/lib/kubeferry/phases/<name>``,
holding the bundle digest and a digest of the phase's ``inputs``: the part of the site it
depends on, such as every node's name and address for /etc/hosts), so a re-run repeats
only what did not finish, and what a changed inventory affects. A failed host
does not stop the others in its phase; the run stops after that phase and the summary
names host, phase and log file.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Sequence

from kubeferry.errors import InputError, KubeferryError
from kubeferry.installer import operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step

MARKER_DIR = "/var/lib/kubeferry/phases"
ADMIN = "admin-host"  # the name results use for work done on the admin host itself


@dataclass
class HostResult:
    host: str
    phase: str
    status: str  # "changed", "ok" (nothing to change), "done" (marker: finished before), "failed"
    detail: str = ""
    plan: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class HostGroup:
    """Hosts a grouped phase works on together: the next group starts once this one succeeded."""

    hosts: Sequence[Host]
    parallel: bool = True


def _no_steps(ctx: InstallContext, host: Host) -> list[Step]:
    return []


@dataclass(frozen=True)
class Phase:
    """One step of the install."""

    name: str
    short: str
    # what ``host`` still needs, from its facts ([] when it is there); raises if it cannot work
    steps: Callable[[InstallContext, Host], list[Step]] = _no_steps
    # the hosts it touches, at once; or ``groups``: ordered groups of them
    hosts: Callable[[InstallContext], Sequence[Host]] = lambda ctx: ()
    parallel: bool = True
    marker: bool = True
    # ordered groups instead of ``hosts`` at once (kubeadm join: control planes, then workers)
    groups: Callable[[InstallContext], Sequence[HostGroup]] | None = None
    # False for checks (verify): what a run returns is a report, not a change ("ok" + detail)
    changes: bool = True
    # the admin host's own steps, once: before the hosts (preflight's facts, the relay) and
    # after them, when every host succeeded (Harbor seeding, the admin kubeconfig)
    before: Callable[[InstallContext], list[Step]] | None = None
    after: Callable[[InstallContext], list[Step]] | None = None
    # what of the site (inventory, not facts) the result on ``host`` depends on: JSON data;
    # when it differs from what the marker recorded, the phase runs again there
    inputs: Callable[[InstallContext, Host], object] = lambda ctx, host: None


def _marker(name: str) -> str:
    return f"{MARKER_DIR}/{name}"


def marker_text(ctx: InstallContext, host: Host, phase: Phase) -> str:
    """``<bundle digest> <inputs digest>``: what a finished phase leaves on the host."""
    inputs = json.dumps(phase.inputs(ctx, host), sort_keys=True, default=str).encode()
    return f"{ctx.bundle.digest} sha256:{hashlib.sha256(inputs).hexdigest()}"


def has_marker(ctx: InstallContext, host: Host, phase: Phase) -> bool:
    result = ctx.conn(host).run(f"cat {shlex.quote(_marker(phase.name))} 2>/dev/null", check=False)
    return result.ok and result.stdout.strip() == marker_text(ctx, host, phase)


def write_marker(ctx: InstallContext, host: Host, phase: Phase) -> None:
    path = _marker(phase.name)
    ctx.conn(host).run(
        f"mkdir -p {MARKER_DIR} && printf '%s\\n' {shlex.quote(marker_text(ctx, host, phase))}"
        f" > {shlex.quote(path)}.tmp && mv {shlex.quote(path)}.tmp {shlex.quote(path)}")


def select(phases: Sequence[Phase], only: Sequence[str] = (), skip: Sequence[str] = ()) -> list[Phase]:
    """The phases to run, in order; InputError for a name that is not a phase."""
    names = [phase.name for phase in phases]
    for given in (*only, *skip):
        if given not in names:
            raise InputError(f"no phase named {given!r}: phases are {', '.join(names)}")
    chosen = [p for p in phases if (not only or p.name in only) and p.name not in skip]
    if not chosen:
        raise InputError("--only/--skip leave no phase to run")
    return chosen


def _run_host(ctx: InstallContext, phase: Phase, host: Host) -> HostResult:
    log = ctx.log(host)
    try:
        if phase.marker and has_marker(ctx, host, phase):
            return HostResult(host.name, phase.name, "done", "finished in an earlier run")
        steps = phase.steps(ctx, host)
        if ctx.options.plan:
            planned = [step.describe for step in steps]
            return HostResult(host.name, phase.name, "changed" if planned else "ok", plan=planned)
        log(f"== phase {phase.name}")
        changed = operations.apply(ctx.conn(host), steps)
        if phase.marker:
            write_marker(ctx, host, phase)
        status = "changed" if changed and phase.changes else "ok"
        return HostResult(host.name, phase.name, status, changed)
    except KubeferryError as error:
        log(f"FAILED {phase.name}: {error}")
        return HostResult(host.name, phase.name, "failed", str(error))


def _run_hosts(ctx: InstallContext, phase: Phase, hosts: Sequence[Host], parallel: bool) -> list[HostResult]:
    if parallel and len(hosts) > 1:
        with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(hosts)))) as pool:
            return list(pool.map(lambda host: _run_host(ctx, phase, host), hosts))
    results: list[HostResult] = []
    for host in hosts:
        results.append(_run_host(ctx, phase, host))
        if results[-1].status == "failed":
            break  # serial phases (joins, init) must not go on past a failure
    return results


def run_phase(ctx: InstallContext, phase: Phase) -> list[HostResult]:
    """One phase: its ``before`` steps, its hosts (or groups in order), its ``after`` steps."""
    results: list[HostResult] = []
    if phase.before is not None:
        result = _run_admin(ctx, phase, phase.before)
        if result.status == "failed":
            return [result]
        results += [result] if result.detail or result.plan else []  # nothing done: no line
    if phase.groups is not None:
        for group in phase.groups(ctx):
            results += _run_hosts(ctx, phase, list(group.hosts), group.parallel)
            if any(r.status == "failed" for r in results):
                break
    else:
        results += _run_hosts(ctx, phase, list(phase.hosts(ctx)), phase.parallel)
    if phase.after is not None and not any(r.status == "failed" for r in results):
        results.append(_run_admin(ctx, phase, phase.after))
    return results


def _run_admin(ctx: InstallContext, phase: Phase,
               steps_of: Callable[[InstallContext], list[Step]]) -> HostResult:
    log = ctx.log(ADMIN)
    try:
        steps = steps_of(ctx)
        if ctx.options.plan:
            planned = [step.describe for step in steps]
            return HostResult(ADMIN, phase.name, "changed" if planned else "ok", plan=planned)
        log(f"== phase {phase.name}")
        changed = operations.apply(None, steps)
        return HostResult(ADMIN, phase.name, "changed" if changed and phase.changes else "ok", changed)
    except KubeferryError as error:
        log(f"FAILED {phase.name}: {error}")
        return HostResult(ADMIN, phase.name, "failed", str(error))


def run(ctx: InstallContext, phases: Sequence[Phase],
        report: Callable[[HostResult], None] = lambda result: None) -> list[HostResult]:
    """Run ``phases`` in order; stops after the first phase in which a host failed."""
    results: list[HostResult] = []
    for phase in phases:
        phase_results = run_phase(ctx, phase)
        for result in phase_results:
            report(result)
        results.extend(phase_results)
        if any(result.status == "failed" for result in phase_results):
            break
    return results

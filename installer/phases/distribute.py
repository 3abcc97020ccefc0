"""Phase ``distribute``: each node gets only what its roles need, streamed from the bundle.

With three or more nodes to feed (``--relay auto``), the bytes first go down a chain of
nodes (installer/relay.py): the admin host's link carries each byte once. Whatever a node
still lacks afterwards (it fell out of the chain, its peers cannot reach it on SSH) comes
directly, as below.

Members are copied to ``/var/lib/kubeferry/bundle/<path>`` on the node, read at their
offsets in the bundle (never extracted on the admin host), written as ``<path>.part`` and
renamed only after ``sha256sum`` on the node matched the bundle's listing. An
interrupted transfer resumes from the bytes already on the node; a complete file is
never sent again.
"""

from __future__ import annotations

import shlex
from concurrent.futures import ThreadPoolExecutor

from kubeferry.errors import OperationError
from kubeferry.installer import relay
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.roles import NODE_BUNDLE_DIR, MemberPlan
from kubeferry.installer.workflow import ADMIN, Phase, has_marker


def _member_plan(ctx: InstallContext) -> MemberPlan:
    with ctx.state.lock:
        if ctx.state.member_plan is None:
            ctx.state.member_plan = MemberPlan(ctx.bundle)
        return ctx.state.member_plan


def wanted(ctx: InstallContext, host: Host) -> list[dict]:
    first = host.name == ctx.inventory.first_control_plane.name
    return _member_plan(ctx).members_for(host, first_control_plane=first)


def _on_node(ctx: InstallContext, host: Host) -> dict[str, int]:
    """Relative path -> size of every file already under the node's bundle directory."""
    command = (f"cd {NODE_BUNDLE_DIR} 2>/dev/null && find . -type f -exec wc -c {{}} + | "
               "awk '$2 != \"total\" {print $1, substr($2, 3)}'")
    result = ctx.conn(host).run(command, check=False)
    sizes = {}
    for line in result.stdout.splitlines():
        size, _, path = line.partition(" ")
        if size.isdigit() and path:
            sizes[path] = int(size)
    return sizes


# "<sha256>  <path>" of every file renamed into place after its sha256 matched (the last
# line for a path wins): a file of the right size from another bundle is not this one's.
VERIFIED = f"{NODE_BUNDLE_DIR}.verified"


def _verified(ctx: InstallContext, host: Host) -> dict[str, str]:
    """Relative path -> sha256 each file had when it was verified on arrival."""
    result = ctx.conn(host).run(f"cat {shlex.quote(VERIFIED)} 2>/dev/null", check=False)
    verified = {}
    for line in result.stdout.splitlines():
        digest, _, path = line.partition("  ")
        if path:
            verified[path] = digest
    return verified


def _todo(ctx: InstallContext, host: Host) -> list[tuple[dict, int]]:
    """(member, bytes already there as .part) for every member the node still lacks."""
    present = _on_node(ctx, host)
    verified = _verified(ctx, host)
    todo = []
    for member in wanted(ctx, host):
        path = member["path"]
        if present.get(path) == member["size"] and verified.get(path) == member["sha256"]:
            continue  # renamed into place only after its sha256 matched
        partial = present.get(member["path"] + ".part", 0)
        todo.append((member, partial if partial <= member["size"] else -1))
    return todo


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """One step: send what the node lacks (resuming parts), each file checked on arrival."""
    todo = _todo(ctx, host)
    if not todo:
        return []
    remaining = sum(m["size"] - max(0, done) for m, done in todo)
    resumed = sum(1 for _, done in todo if done > 0)
    describe = f"send {len(todo)} files ({remaining} bytes)" + (f", resuming {resumed}" if resumed else "")
    return [Step(describe, run=lambda: _send(ctx, host, todo))]


# Reads "<sha256> <part>" lines: renames each part whose sha256 matches and records it in
# VERIFIED, deletes (and names) the rest.
_SETTLE = (
    "while read -r sha part; do"
    " if printf '%s  %s\\n' \"$sha\" \"$part\" | sha256sum -c --status; then"
    ' final="${part%.part}"; mv -f "$part" "$final"'
    f' && printf \'%s  %s\\n\' "$sha" "${{final#{NODE_BUNDLE_DIR}/}}" >> {VERIFIED};'
    ' else rm -f "$part"; echo "$part"; fi;'
    " done"
)


def relay_first(ctx: InstallContext) -> list[Step]:
    """Before the hosts: relay what the nodes lack, when it pays. A failure is a notice:
    the hosts' own steps then send whatever the relay did not deliver."""
    if ctx.options.relay == "off":
        return []
    hops = relay.chain(list(ctx.inventory.hosts), _lacking(ctx))
    if not relay.worth_it(ctx.options.relay, hops):
        return []
    path = " -> ".join(["admin", *(hop.host.name for hop in hops)])
    return [Step(f"relay the nodes' files through {path} (each byte leaves the admin host once)",
                 run=lambda: _relayed(ctx, hops, path))]


def _relayed(ctx: InstallContext, hops: list[relay.Hop], path: str) -> str:
    sent = _relay(ctx, hops)  # each node checked and renamed what it kept on arrival
    return f"relayed {sent} bytes once through {path}" if sent else ""


def _lacking(ctx: InstallContext) -> dict[str, list[dict]]:
    """Host name -> the members it still lacks (none where distribute finished before)."""
    def survey(host: Host) -> list[dict]:
        if has_marker(ctx, host, PHASE):
            return []
        if not ctx.options.plan:
            relay.sweep(ctx, host)  # what a killed run may have left
        return [member for member, _ in _todo(ctx, host)]

    hosts = list(ctx.inventory.hosts)
    with ThreadPoolExecutor(max_workers=max(1, min(ctx.options.forks, len(hosts)))) as pool:
        return dict(zip((h.name for h in hosts), pool.map(survey, hosts)))


def _relay(ctx: InstallContext, hops: list[relay.Hop]) -> int | None:
    """The bytes streamed down the chain (0: it broke on the way); None: not relayed."""
    def notice(what: str, next_step: str) -> None:
        ctx.echo(f"distribute: {what}; {next_step}")
        ctx.log(ADMIN)(what)

    try:
        with relay.Relay(ctx, hops) as chain:
            problem = chain.probe()
            if problem is not None:
                notice(f"relay off: {problem}", "sending to each node directly")
                return None
            return chain.send(progress=ctx.progress("distribute"))
    except relay.RelayBroken as error:
        notice(f"relay broken: {error}", "the nodes after it get the rest directly")
        return 0
    except OperationError as error:
        notice(f"relay off: {error}", "sending to each node directly")
        return None


def _settle(conn, members: list[dict]) -> list[str]:
    """Check on the node and rename what matched; the parts that did not."""
    listing = "".join(f"{m['sha256']} {NODE_BUNDLE_DIR}/{m['path']}.part\n" for m in members)
    return conn.run(_SETTLE, stdin=listing.encode()).stdout.split()


def _send(ctx: InstallContext, host: Host, todo: list[tuple[dict, int]]) -> str:
    """Prepare in one round trip, then one upload per file; each file is checked on the node
    (on a second SSH channel) while the next one is on the wire."""
    conn = ctx.conn(host)
    fresh = [f"{NODE_BUNDLE_DIR}/{m['path']}.part" for m, done in todo if done <= 0]
    if fresh:  # new parts start empty (a part longer than its member is not ours to resume)
        directories = sorted({part.rsplit("/", 1)[0] for part in fresh})
        conn.run("mkdir -p " + " ".join(shlex.quote(d) for d in directories) + " && for p in "
                 + " ".join(shlex.quote(p) for p in fresh) + '; do : > "$p"; done')
    sent = 0
    with ThreadPoolExecutor(max_workers=1) as checker:
        checks = []
        for member, done in todo:
            start = max(0, done)
            with ctx.bundle.open_member(member["path"], start=start) as source:
                conn.upload(source, f"{NODE_BUNDLE_DIR}/{member['path']}.part",
                            member["size"] - start, progress=ctx.progress("distribute"))
            sent += member["size"] - start
            checks.append(checker.submit(_settle, conn, [member]))
        damaged = [part for check in checks for part in check.result()]
    if damaged:
        raise OperationError(f"{host.name}: {len(damaged)} file(s) arrived damaged (sha256 differs),"
                             f" first {damaged[0]}; run the install again to resend them")
    return f"sent {len(todo)} files, {sent} bytes"


PHASE = Phase(
    name="distribute",
    short="send each node what its roles need from the bundle, verified by sha256",
    hosts=lambda ctx: ctx.inventory.hosts,
    steps=steps,
    before=relay_first,
    inputs=lambda ctx, host: [member["path"] for member in wanted(ctx, host)],  # by its roles
)

"""The relay: the admin host sends each byte of ``distribute`` once; the nodes pass it on.

At a real site the admin host is one machine on one link, and N direct copies cost N
times one node's transfer. Nodes have links of their own, so the bytes go down a
pipelined chain instead: the admin host streams every member any node still lacks to the
first node, whose ``tee`` hands the stream to the next node's SSH while it keeps what its
own roles need, and so on. N nodes cost about one node's time plus a small delay per hop.

Only what nodes already have is used: POSIX sh, coreutils (``tee``, ``head``, ``grep``)
and OpenSSH. For the run, the admin host makes an ephemeral ed25519 key pair; each
sender gets the private key and the next node's host key (from the admin's own
known_hosts: host keys verified, as everywhere); each receiver authorises the public key
for the one command of the relay, only from its sender's address (``restrict,
from=...,command=...``). All of it is removed when the transfer ends, and a later run
removes what a killed run left. Every node checks every file it keeps by sha256 while it
arrives and renames it into place only if it matched, as ``distribute`` does; what a node
lacks after the chain (one fell out, a link failed) is sent to it directly.
"""

from __future__ import annotations

import shlex
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kubeferry.errors import OperationError
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.roles import NODE_BUNDLE_DIR
from kubeferry.installer.ssh import Connection, blocks

RELAY_DIR = "/var/lib/kubeferry/relay"
MARK = "kubeferry-relay"  # the comment every relay key carries in authorized_keys
MIN_NODES = 3  # `--relay auto`: relay when at least this many nodes need bytes
HOP_TIMEOUT = 10  # seconds: ssh's connect timeout and its dead-peer detection between nodes

# Each node runs this (command= in authorized_keys, or the admin's exec): keep the members
# listed in `wanted`, each checked by sha256 as it arrives and renamed into place only then
# (recorded as distribute records it), and pass the whole stream on to the next node. Its
# temp name is `.relay`, never distribute's `.part`: a direct send that follows a broken
# chain cannot collide with a hop that has not ended yet. With
# SIGPIPE ignored, tee goes on feeding this node when the next one falls out of the chain
# (coreutils' tee drops a failed output and writes to the rest; EL7's 8.22 has no `-p`).
HOP_SCRIPT = """\
set -u
cd {relay}
keep() {{
  while read -r size sha path; do
    if grep -qxF -- "$path" wanted; then
      case $path in */*) mkdir -p "{bundle}/${{path%/*}}";; esac
      got=$(head -c "$size" | tee "{bundle}/$path.relay" | sha256sum)
      if [ "${{got%% *}}" = "$sha" ]; then
        mv -f "{bundle}/$path.relay" "{bundle}/$path" && printf '%s  %s\\n' "$sha" "$path" >> {verified}
      else
        rm -f "{bundle}/$path.relay"
      fi
    else
      head -c "$size" > /dev/null
    fi
  done
}}
status=0
if [ -s next ]; then
  rm -f stream.fifo && mkfifo -m 600 stream.fifo
  sh ./next < stream.fifo > next.out 2>&1 &
  forward=$!
  (trap '' PIPE; exec tee stream.fifo 2>/dev/null) | keep
  wait "$forward" || {{ echo "relay: the node after $(hostname) fell out of the chain" >&2; status=1; }}
  rm -f stream.fifo
else
  keep
fi
exit $status
"""


@dataclass(frozen=True)
class Hop:
    """One node of the chain: what it keeps, and who comes after it."""

    host: Host
    wanted: list[dict]
    next: Host | None


def chain(hosts: list[Host], wanted: dict[str, list[dict]]) -> list[Hop]:
    """The nodes that still need something, in inventory order, each pointing at the next."""
    needing = [host for host in hosts if wanted.get(host.name)]
    return [Hop(host, wanted[host.name], needing[index + 1] if index + 1 < len(needing) else None)
            for index, host in enumerate(needing)]


def worth_it(mode: str, hops: list[Hop]) -> bool:
    """``--relay auto``: when enough nodes share the admin host's link to pay for the setup."""
    return mode == "on" or (mode == "auto" and len(hops) >= MIN_NODES)


class Relay:
    """One relayed transfer: set up, stream, always clean up (``with Relay(...) as relay``)."""

    def __init__(self, ctx: InstallContext, hops: list[Hop]) -> None:
        self.ctx = ctx
        self.hops = hops
        self.run_id = uuid.uuid4().hex[:12]
        key = Ed25519PrivateKey.generate()
        self._private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                               serialization.PublicFormat.OpenSSH).decode()
        self._public = f"{public} {MARK}-{self.run_id}"

    # -- set-up ---------------------------------------------------------------------------

    def __enter__(self) -> Relay:
        try:
            self._each(self._prepare)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _each(self, action: Callable[[Hop], None]) -> None:
        forks = max(1, min(self.ctx.options.forks, len(self.hops)))
        with ThreadPoolExecutor(max_workers=forks) as pool:
            list(pool.map(action, self.hops))

    def _prepare(self, hop: Hop) -> None:
        conn = self.ctx.conn(hop.host)
        user = conn.settings.user
        previous = next((h.host for h in self.hops
                         if h.next is not None and h.next.name == hop.host.name), None)
        hop_command = f"sh {RELAY_DIR}/hop.sh"
        if user != "root":
            hop_command = f"sudo -n {hop_command}"
        files = {"hop.sh": HOP_SCRIPT.format(relay=RELAY_DIR, bundle=NODE_BUNDLE_DIR,
                                             verified=f"{NODE_BUNDLE_DIR}.verified"),
                 "wanted": "".join(f"{member['path']}\n" for member in hop.wanted),
                 "next": self._next_command(hop) if hop.next is not None else ""}
        if hop.next is not None:
            files["key"] = self._private.decode()
            files["known_hosts"] = self._known_hosts_line(hop.next)
        script = [f"umask 077 && rm -rf {RELAY_DIR} && mkdir -p {RELAY_DIR} {NODE_BUNDLE_DIR}"]
        payload = b""
        for name, text in files.items():  # one round trip: every file from one stdin
            data = text.encode()
            script.append(f"head -c {len(data)} > {RELAY_DIR}/{name}")
            payload += data
        conn.run(" && ".join(script), stdin=payload)
        if previous is not None:  # this node takes the stream from `previous`, for this command only
            line = f'restrict,from="{previous.address}",command="{hop_command}" {self._public}\n'
            keys = shlex.quote(authorized_keys(conn))
            conn.run(f"mkdir -p \"$(dirname {keys})\" && {{ grep -v {shlex.quote(MARK)} {keys} 2>/dev/null;"
                     f" cat; }} > {keys}.kubeferry && chmod 600 {keys}.kubeferry"
                     f" && chown {shlex.quote(user)} {keys}.kubeferry && mv -f {keys}.kubeferry {keys}",
                     stdin=line.encode())

    def _next_command(self, hop: Hop) -> str:
        assert hop.next is not None
        settings = self.ctx.conn(hop.next).settings
        options = ["-i", f"{RELAY_DIR}/key", "-o", f"UserKnownHostsFile={RELAY_DIR}/known_hosts",
                   "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
                   "-o", f"ConnectTimeout={HOP_TIMEOUT}", "-o", "ServerAliveInterval=5",
                   "-o", f"ServerAliveCountMax={max(1, HOP_TIMEOUT // 5)}", "-p", str(settings.port),
                   "-T", f"{settings.user}@{hop.next.address}"]
        return "exec ssh " + " ".join(shlex.quote(option) for option in options) + "\n"

    def _known_hosts_line(self, host: Host) -> str:
        """The next node's host key as the admin host knows it: nodes verify each other too."""
        settings = self.ctx.conn(host).settings
        path = Path(settings.known_hosts).expanduser()
        try:
            known = paramiko.HostKeys(str(path))
        except (OSError, paramiko.SSHException) as error:
            raise OperationError(f"known hosts file {path}: cannot read it ({error})") from None
        name = host.address if settings.port == 22 else f"[{host.address}]:{settings.port}"
        keys = known.lookup(name)
        if not keys:
            raise OperationError(f"relay: no host key for {host.name} ({name}) in {path}")
        return "".join(f"{name} {kind} {key.get_base64()}\n" for kind, key in keys.items())

    # -- the transfer ---------------------------------------------------------------------

    def probe(self) -> str | None:
        """Why the chain does not hold, or None: an empty stream sent end to end."""
        first = self.hops[0]
        result = self.ctx.conn(first.host).run(f"sh {RELAY_DIR}/hop.sh </dev/null", check=False,
                                               timeout=HOP_TIMEOUT * len(self.hops) + 30)
        return None if result.ok else self.broken_link()

    def broken_link(self) -> str:
        """Which node could not pass the stream on, from what its ssh said (``next.out``)."""
        for hop in self.hops:
            if hop.next is None:
                continue
            try:
                out = self.ctx.conn(hop.host).run(f"cat {RELAY_DIR}/next.out 2>/dev/null", check=False)
            except OperationError:  # this node is gone itself: its sender says so
                continue
            own = [line for line in out.stdout.splitlines() if line.strip() and not line.startswith("relay:")]
            if own:
                return f"{hop.host.name} cannot pass it on to {hop.next.name} ({own[-1].strip()})"
        return "a node could not pass the stream on"

    def send(self, progress: Callable[[int], None] | None = None) -> int:
        """Stream the union of what the nodes lack down the chain; the bytes sent."""
        members = {m["path"]: m for hop in self.hops for m in hop.wanted}
        ordered = [members[path] for path in sorted(members)]
        total = sum(len(_header(m)) + m["size"] for m in ordered)
        first = self.hops[0]
        result = self.ctx.conn(first.host).feed(f"sh {RELAY_DIR}/hop.sh", self._chunks(ordered),
                                                progress=progress, what="the relay")
        if not result.ok:
            raise RelayBroken(self.broken_link())
        return total

    def _chunks(self, members: list[dict]) -> Iterator[bytes]:
        for member in members:
            yield _header(member)
            with self.ctx.bundle.open_member(member["path"]) as source:
                yield from blocks(source, member["size"], f"the bundle's {member['path']}")

    # -- clean-up -------------------------------------------------------------------------

    def close(self) -> None:
        """Remove every key, script and relay file this relay put on its nodes."""
        def clean(hop: Hop) -> None:
            try:
                sweep(self.ctx, hop.host)
            except OperationError as error:  # a node that is gone: the next run sweeps it
                self.ctx.log(hop.host)(f"relay clean-up: {error}")

        self._each(clean)


def authorized_keys(conn: Connection) -> str:
    """The login user's authorized_keys on the node (its home from the user database)."""
    user = conn.settings.user
    home = conn.run(f"getent passwd {shlex.quote(user)} | cut -d: -f6", check=False).stdout.strip()
    if not home.startswith("/"):
        raise OperationError(f"{conn.host.name}: no home directory for {user} (getent passwd)")
    return f"{home}/.ssh/authorized_keys"


def sweep(ctx: InstallContext, host: Host) -> None:
    """Remove any relay key and file from ``host``: this run's, or what a killed run left.
    One read-only look first, so a clean node is not written to."""
    conn = ctx.conn(host)
    try:
        keys = shlex.quote(authorized_keys(conn))
    except OperationError:  # no home: no key of ours can be there
        keys = "/dev/null"
    mark = shlex.quote(MARK)
    found = conn.run(f"grep -q {mark} {keys} 2>/dev/null && echo keys; test -e {RELAY_DIR} && echo dir;"
                     f" find {NODE_BUNDLE_DIR} -name '*.relay' -type f 2>/dev/null | head -n 1", check=False)
    if not found.stdout.strip():
        return
    conn.run(f"if grep -q {mark} {keys} 2>/dev/null; then grep -v {mark} {keys} > {keys}.kubeferry;"
             f" chmod 600 {keys}.kubeferry && mv -f {keys}.kubeferry {keys}; fi;"
             f" rm -rf {RELAY_DIR}; find {NODE_BUNDLE_DIR} -name '*.relay' -type f -delete 2>/dev/null",
             check=False)


class RelayBroken(OperationError):
    """A node fell out of the chain: those after it lack what it did not pass on."""


def _header(member: dict) -> bytes:
    return f"{member['size']} {member['sha256']} {member['path']}\n".encode()

"""A lab site: a bridge, its nodes and service hosts, and the journal that can undo it all.

Address plan on the site's subnet: .1 the admin host (this machine), .2 the Harbor
stand-in (``registry_name``, ``harbor.lab`` by default), .100 the control-plane VIP,
nodes from .11 up. Every node gets the doubles' configuration and the site's shared
cluster state directory (``cluster_state``). ``Site.up`` is safe to repeat
(a healthy site of the same size is returned as is) and so is ``down``, which also
cleans up after a crashed ``up`` or a killed node.
"""

from __future__ import annotations

import fcntl
import ipaddress
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from kubeferry.errors import InputError, OperationError
from kubeferry.lab import airgap, cgroups, el_root, leftovers, network, node, paths, proc, rootfs, teardown
from kubeferry.lab.doubles_recipe import double_conf
from kubeferry.lab.journal import Journal
from kubeferry.lab.node import Node
from kubeferry.lab.service_host import ServiceHost

DEFAULT_NAME = "lab"
DEFAULT_REGISTRY_NAME = "harbor.lab"  # the Harbor stand-in's name at .2, as images spell it
DEFAULT_SUBNET = "10.88.0.0/24"
DEFAULT_OS = "debian12"  # the base root's own OS
NODE_OSES = (DEFAULT_OS, "el8", "el7")
OTHER_SUBNETS_FROM = "10.88.1.0/24"  # other sites keep clear of the default lab's subnet
ADMIN_HOST = 1  # this machine on the bridge: the internet side, where bundles are built
HARBOR_HOST = 2
ADMIN_SERVICE_HOST = 3  # the site's own, air-gapped admin host (lab/admin_host.py)
VIP_HOST = 100
FIRST_NODE = 11
MAX_NODES = 50
LOCK_TIMEOUT = rootfs.LOCK_TIMEOUT
_NAME = re.compile(r"^[a-z][a-z0-9]{0,7}$")
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")
_OVERLAY_UPPER_FILESYSTEMS = ("ext2/ext3", "xfs", "btrfs", "tmpfs")

Log = Callable[[str], None]


def _quiet(_line: str) -> None:
    pass


class Site:
    """A running (or partly made) lab site, described by its journal."""

    def __init__(self, journal: Journal):
        self.journal = journal
        description = journal.site
        self.name: str = description["name"]
        self.subnet = ipaddress.IPv4Network(description["subnet"])
        self.bridge: str = description["bridge"]
        self.base = Path(description["base"])
        # the node OS: debian12 (the base root), or an EL OS whose layer lies over it
        self.os: str = description.get("os", DEFAULT_OS)
        self.layer = Path(description["layer"]) if description.get("layer") else None
        self.directory = journal.path.parent
        self.data_directory = Path(description["data"])
        self.nodes: list[Node] = [Node.from_dict(n) for n in description.get("nodes", [])]
        self.hosts: dict[str, ServiceHost] = {
            name: ServiceHost(**host, site=self)
            for name, host in description.get("hosts", {}).items()
        }

    # -- the public surface -------------------------------------------------------------

    @property
    def airgap_iptables(self) -> str:
        """The air-gap counter's iptables: xtables on EL sites (firewalld flushes nftables)."""
        return "iptables" if self.layer is None else "iptables-legacy"

    @property
    def lower(self) -> str:
        """The nodes' overlay lower directories: the EL layer (if any) over the base root."""
        return str(self.base) if self.layer is None else f"{self.layer}:{self.base}"

    @property
    def ssh_key(self) -> Path:
        """The private key that logs in as root (and as the sudo user) on every node."""
        return self.directory / "id_ed25519"

    @property
    def known_hosts_file(self) -> Path:
        """An OpenSSH known_hosts file with every node's pinned host key, by address."""
        return self.directory / "known_hosts"

    @property
    def admin_address(self) -> str:
        """The admin host's (this machine's) address on the lab bridge."""
        return self._address(ADMIN_HOST)

    @property
    def vip(self) -> str:
        """An address reserved for a control-plane VIP; no lab host holds it."""
        return self._address(VIP_HOST)

    @property
    def registry_name(self) -> str:
        """The site registry's (Harbor stand-in's) host name, as image names spell it.

        Nodes resolve it through /etc/hosts, written by the installer's os phase from the
        inventory's ``registry.address``; the doubles admit images from it.
        """
        return self.journal.site.get("registry_name", DEFAULT_REGISTRY_NAME)

    @property
    def registry_address(self) -> str:
        """The site registry's address: the Harbor stand-in's service host (.2)."""
        return self._address(HARBOR_HOST)

    @property
    def cluster_state(self) -> Path:
        """The doubles' shared cluster state on the admin host (``ClusterRecord(path)``),
        bind-mounted at /var/lib/kubeferry-lab/cluster in every node."""
        return self.data_directory / "cluster"

    @property
    def sudo_user(self) -> str:
        """A non-root login on every node with passwordless sudo and the lab key."""
        return self.journal.site["sudo_user"]

    def node(self, name: str) -> Node:
        for candidate in self.nodes:
            if candidate.name == name:
                return candidate
        names = ", ".join(n.name for n in self.nodes)
        raise InputError(f"lab {self.name} has no node {name!r} (nodes: {names})")

    @classmethod
    def up(
        cls,
        nodes: int = 3,
        name: str = DEFAULT_NAME,
        subnet: str | None = None,
        log: Log = _quiet,
        owner: int | None = None,
        registry_name: str = DEFAULT_REGISTRY_NAME,
        os_name: str = DEFAULT_OS,
    ) -> Site:
        """Bring a site of ``nodes`` nodes up (or return it if it is up and healthy).

        ``owner``: the pid of a process whose death abandons the site (test sessions);
        ``Site.abandoned()`` finds such sites so a later session can remove them.
        ``registry_name``: the site registry's host name the doubles admit images from.
        ``os_name``: the nodes' OS, debian12 or an EL OS of ``lab/el_root.py`` (el8).
        """
        _check_name(name)
        if not _HOSTNAME.match(registry_name):
            raise InputError(f"registry name {registry_name!r} is not a lowercase DNS name "
                             "like harbor.lab")
        if not 1 <= nodes <= MAX_NODES:
            raise InputError(f"--nodes must be between 1 and {MAX_NODES}, not {nodes}")
        if os_name not in NODE_OSES:
            raise InputError(f"--os {os_name}: lab nodes run {', '.join(NODE_OSES)}")
        requested = _parse_subnet(subnet) if subnet is not None else None
        _require_root()
        with SiteLock(name):
            existing = cls.load(name)
            if existing is not None:
                same = (len(existing.nodes) == nodes and requested in (None, existing.subnet)
                        and existing.registry_name == registry_name and existing.os == os_name)
                if existing.healthy() and same:
                    log(f"lab {name} is already up with {nodes} nodes")
                    return existing
                if existing.healthy():
                    raise InputError(
                        f"lab {name} is up with {len(existing.nodes)} nodes on "
                        f"{existing.subnet} ({existing.os}, registry {existing.registry_name}), "
                        f"not {nodes} on {requested or 'its subnet'} ({os_name}, registry "
                        f"{registry_name}); "
                        f"run 'kubeferry-lab down --name {name}' first"
                    )
                log(f"lab {name} is partly up (a crash?): cleaning it before starting again")
                existing._teardown()
            return cls._create(name, nodes, requested, log, owner, registry_name, os_name)

    @classmethod
    def load(cls, name: str = DEFAULT_NAME) -> Site | None:
        """The site ``name`` as its state records it, or None when there is none."""
        _check_name(name)
        journal = Journal.load(paths.run_dir() / name / "state.json")
        return cls(journal) if journal is not None else None

    def down(self) -> None:
        """Stop and remove everything this site made; safe to call again.

        Works from the state on disk, not this object's copy: another process (or a second
        ``up``) may have changed the site since this object was made.
        """
        for member in self.nodes:
            member.close()
        with SiteLock(self.name):
            current = Site.load(self.name)
            if current is not None:
                current._teardown()

    @classmethod
    def down_named(cls, name: str = DEFAULT_NAME) -> bool:
        """Remove site ``name`` if it exists (False when there was nothing to remove)."""
        _require_root()
        with SiteLock(name):
            site = cls.load(name)
            if site is None:
                return False
            site._teardown()
            return True

    @classmethod
    def abandoned(cls) -> list[str]:
        """Names of sites made for a process (``owner``) that is gone: a killed test run."""
        names = []
        for state in sorted(paths.run_dir().glob("*/state.json")):
            journal = Journal.load(state)
            owner = journal.site.get("owner") if journal is not None else None
            if owner and not proc.is_same_process(owner[0], owner[1]):
                names.append(journal.site["name"])  # type: ignore[union-attr]
        return names

    def healthy(self) -> bool:
        """Every node's init is alive (what ``up`` checks before reusing a site)."""
        if not self.nodes:
            return False
        return all(self._init_alive(n) for n in self.nodes)

    def status(self) -> list[dict[str, str]]:
        """One row per node and service host: name, address, and whether it is up."""
        rows = []
        for member in self.nodes:
            alive = self._init_alive(member)
            rows.append({
                "name": member.name, "address": member.address, "kind": "node",
                "state": ("ssh" if node.port_open(member.address, node.SSH_PORT) else "booting")
                if alive else "down",
            })
        for host in self.hosts.values():
            rows.append({"name": host.name, "address": host.address, "kind": "service",
                         "state": "up" if network.netns_exists(host.netns) else "down"})
        return rows

    def airgap_counts(self) -> dict[str, int]:
        """Packets each lab host tried to send out of the site since it was made (all
        refused in its own namespace; ``lab/airgap.py``), by host name."""
        members = [(n.name, n.netns) for n in self.nodes]
        members += [(h.name, h.netns) for h in self.hosts.values()]
        return {name: airgap.count(netns, self.airgap_iptables) for name, netns in members
                if network.netns_exists(netns)}

    def airgap_destinations(self) -> dict[str, list[str]]:
        """Where each lab host's refused packets were going, by host name (hosts with any)."""
        members = [(n.name, n.netns) for n in self.nodes]
        members += [(h.name, h.netns) for h in self.hosts.values()]
        found = {name: airgap.destinations(netns) for name, netns in members if network.netns_exists(netns)}
        return {name: tried for name, tried in found.items() if tried}

    def add_host(self, name: str, index: int = HARBOR_HOST) -> ServiceHost:
        """A service host ``name`` at ``.index`` on the lab subnet (the existing one if made)."""
        if name in self.hosts:
            return self.hosts[name]
        if not _NAME.match(name):
            raise InputError(f"service host name {name!r}: use 1-8 lowercase letters and digits")
        address = self._address(index)
        taken = {n.address for n in self.nodes} | {h.address for h in self.hosts.values()}
        if not 2 <= index < FIRST_NODE:
            raise InputError(f"service host index {index}: use 2-{FIRST_NODE - 1}")
        if address in taken:
            raise InputError(f"address {address} is already taken in lab {self.name}")
        host = ServiceHost(
            name=name, address=address, netns=leftovers.netns_name(self.name, name),
            veth=leftovers.link_name(self.name, "h", index),
            cgroup=str(cgroups.site_path(self.name) / name),
            site=self,
        )
        self.hosts[name] = host
        self._save_description()
        self._plug(host.netns, host.veth, address)
        self._site_resolver(host.netns)
        self.journal.add("cgroup", path=host.cgroup)
        cgroups.create(Path(host.cgroup))
        return host

    def shape(self, member: Node | ServiceHost | str, rate: str | None = "100mbit",
              delay: str | None = None) -> None:
        """Shape a node's (or service host's) link both ways; ``rate=None, delay=None`` clears."""
        target = self.node(member) if isinstance(member, str) else member
        network.shape(target.veth, target.netns, rate, delay)

    # -- making it ----------------------------------------------------------------------

    def _address(self, index: int) -> str:
        return str(self.subnet.network_address + index)

    @classmethod
    def _create(
        cls, name: str, count: int, subnet: ipaddress.IPv4Network | None, log: Log,
        owner: int | None, registry_name: str = DEFAULT_REGISTRY_NAME, os_name: str = DEFAULT_OS,
    ) -> Site:
        started = time.monotonic()
        network_ = _pick_subnet(name, subnet)
        base = rootfs.ensure_base(log=log)
        layer = None if os_name == DEFAULT_OS else el_root.ensure_el_layer(os_name, base, log=log)
        recipe = rootfs.Recipe.default()
        data = paths.data_dir() / name
        data.parent.mkdir(parents=True, exist_ok=True)
        _check_overlay_capable(data.parent)
        run = paths.run_dir() / name
        if run.exists():
            shutil.rmtree(run)
        run.mkdir(parents=True)
        journal = Journal.create(run / "state.json", {
            "name": name, "subnet": str(network_), "bridge": leftovers.bridge_name(name),
            "base": str(base), "data": str(data), "sudo_user": recipe.sudo_user,
            "registry_name": registry_name, "os": os_name,
            "layer": None if layer is None else str(layer),
            "nodes": [], "hosts": {},
            "owner": None if owner is None else [owner, proc.start_time(owner)],
        })
        journal.add("dir", path=str(data))
        if data.exists():  # node disks of a site whose state is gone (the host rebooted)
            teardown.remove({"kind": "dir", "path": str(data)})
        data.mkdir(parents=True)
        site = cls(journal)
        site._make(count, recipe, log)
        log(f"lab {name} up: {count} nodes in {time.monotonic() - started:.1f}s")
        return site

    def _make(self, count: int, recipe: rootfs.Recipe, log: Log) -> None:
        proc.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kubeferry-lab-{self.name}",
                  "-f", str(self.ssh_key)])
        public_key = Path(f"{self.ssh_key}.pub").read_text()
        self.journal.add("link", name=self.bridge)
        network.add_bridge(self.bridge, ipaddress.IPv4Interface(
            f"{self.admin_address}/{self.subnet.prefixlen}"))
        for rule in network.firewall_rules(self.bridge, leftovers.firewall_tag(self.name)):
            self.journal.add("iptables", rule=rule)
            network.add_rule(rule)
        self.journal.add("cgroup", path=str(cgroups.site_path(self.name)))
        self.cluster_state.mkdir(mode=0o755)  # inside the data directory: removed with it
        conf = double_conf(run_control_plane=True)

        for index in range(1, count + 1):
            machine_id, product_uuid = node.new_identity()
            member = Node(
                name=f"node{index}", address=self._address(FIRST_NODE + index - 1),
                netns=leftovers.netns_name(self.name, f"node{index}"),
                veth=leftovers.link_name(self.name, "n", index),
                directory=str(self.data_directory / "nodes" / f"node{index}"),
                cgroup=str(cgroups.site_path(self.name) / f"node{index}"),
                host_key="", machine_id=machine_id, product_uuid=product_uuid,
                key_file=str(self.ssh_key), known_hosts=str(self.known_hosts_file),
            )
            node.prepare(member, self.base, public_key, recipe.sudo_user, conf)
            self.nodes.append(member)
            self._save_description()
        self._write_known_hosts()

        for member in self.nodes:
            self._plug(member.netns, member.veth, member.address)
            self._boot(member)
        log(f"{count} nodes booting; waiting for systemd and sshd")
        with ThreadPoolExecutor(max_workers=min(8, count)) as pool:
            states = list(pool.map(self._wait, self.nodes))
        for member, state in zip(self.nodes, states):
            log(f"{member.name} {member.address}: {state}")

    def _plug(self, netns: str, veth: str, address: str) -> None:
        self.journal.add("netns", name=netns)
        network.add_netns(netns)
        self.journal.add("link", name=veth)
        network.add_veth(veth, netns, self.bridge,
                         ipaddress.IPv4Interface(f"{address}/{self.subnet.prefixlen}"))
        airgap.install(netns, self.subnet, self.admin_address, self.airgap_iptables)

    def _site_resolver(self, netns: str) -> None:
        """The site's resolv.conf (no DNS server) for processes ``ip netns exec`` starts in
        ``netns``: without it they would ask this machine's resolver, outside the site
        (Python's HTTP servers look up their own address when they bind)."""
        directory = network.NETNS_ETC / netns
        self.journal.add("dir", path=str(directory))
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "resolv.conf").write_text(network.SITE_RESOLV_CONF)

    def _boot(self, member: Node) -> None:
        self.journal.add("cgroup", path=member.cgroup)
        cgroups.create(Path(member.cgroup))
        launcher_record = self.journal.add("process", node=member.name, role="launcher")
        init_record = self.journal.add("process", node=member.name, role="init", stop="kill")
        launcher = node.launch(member, self.lower, self.cluster_state)
        self._record_pid(launcher_record, launcher.pid)
        self._record_pid(init_record, node.init_pid(member, launcher.pid))

    def _record_pid(self, record: dict, pid: int) -> None:
        """Record a pid with its start time; one already gone is recorded as nothing to stop."""
        started = proc.start_time(pid)
        self.journal.update(record, pid=pid if started is not None else None, started=started)

    def _wait(self, member: Node) -> str:
        record = self._init_record(member)
        return node.wait_ready(member, record["pid"], record["started"])

    def _init_record(self, member: Node) -> dict:
        for resource in self.journal.resources:
            if (resource["kind"], resource.get("node"), resource.get("role")) == (
                "process", member.name, "init"
            ):
                return resource
        return {}

    def _current_init(self, member: Node) -> dict:
        """The node's init record, brought up to date when the node rebooted (its launcher
        booted it again: another PID 1, lab/node.py BOOT_LOOP)."""
        record = self._init_record(member)
        if record.get("pid") and proc.is_same_process(record["pid"], record.get("started")):
            return record
        launcher = next((r for r in self.journal.resources if (r["kind"], r.get("node"), r.get("role"))
                         == ("process", member.name, "launcher")), {})
        if record and launcher.get("pid") and proc.is_same_process(launcher["pid"], launcher.get("started")):
            pid = node.find_init(launcher["pid"])
            if pid is not None:
                self._record_pid(record, pid)
        return record

    def init_pid(self, member: Node) -> int | None:
        """The admin-host pid of a node's PID 1 (systemd), for tests that crash a node."""
        return self._current_init(member).get("pid")

    def _init_alive(self, member: Node) -> bool:
        record = self._current_init(member)
        return bool(record.get("pid")) and proc.is_same_process(record["pid"], record["started"])

    def _write_known_hosts(self) -> None:
        lines = "".join(f"{m.address} {m.host_key}\n" for m in self.nodes)
        tmp = self.known_hosts_file.with_suffix(".tmp")
        tmp.write_text(lines)
        tmp.replace(self.known_hosts_file)

    def _save_description(self) -> None:
        self.journal.site["nodes"] = [m.to_dict() for m in self.nodes]
        self.journal.site["hosts"] = {n: h.to_dict() for n, h in self.hosts.items()}
        self.journal.save()

    # -- undoing it ---------------------------------------------------------------------

    def _teardown(self) -> None:
        for member in self.nodes:
            member.close()
            self._current_init(member)  # a rebooted node's PID 1 is another process
        errors = []
        for resource in reversed(list(self.journal.resources)):
            try:
                teardown.remove(resource)
            except OperationError as error:
                errors.append(str(error))
                continue
            self.journal.discard(resource)
        if errors:
            raise OperationError(
                f"lab {self.name}: {len(errors)} thing(s) could not be removed, "
                f"first: {errors[0]}; "
                f"its state stays in {self.journal.path} for another 'down'"
            )
        shutil.rmtree(self.directory, ignore_errors=True)
        remaining = leftovers.find(self.name)
        if remaining:
            raise OperationError(
                f"lab {self.name}: still present after down: {', '.join(remaining)}"
            )


def up_retrying(start: Callable[[], Site], name: str, attempts: int = 2, log: Log = _quiet) -> Site:
    """``start()``, a ``Site.up`` of site ``name``; a failed boot is taken down and tried again.

    On a heavily loaded machine a node can now and then miss READY_TIMEOUT (docs/lab.md,
    Limits). Bad input is not retried; anything else that fails leaves no site behind.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except InputError:
            raise
        except Exception as error:
            Site.down_named(name)
            if attempt == attempts:
                raise
            log(f"lab {name}: up failed ({error}); taken down, trying again")
        except BaseException:  # interrupted: still leave nothing behind
            Site.down_named(name)
            raise
    raise AssertionError("unreachable")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise InputError(f"lab name {name!r}: use 1-8 lowercase letters and digits, a letter first")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise InputError("the lab needs root (namespaces, mounts, a bridge): run it with sudo")


def _parse_subnet(subnet: str) -> ipaddress.IPv4Network:
    try:
        parsed = ipaddress.IPv4Network(subnet)
    except ValueError as error:
        raise InputError(
            f"--subnet {subnet!r} is not an IPv4 network like 10.88.0.0/24"
        ) from error
    if parsed.prefixlen > 24:
        raise InputError(f"--subnet {parsed} is too small: the lab's address plan needs a /24")
    return parsed


def _pick_subnet(name: str, subnet: ipaddress.IPv4Network | None) -> ipaddress.IPv4Network:
    """The requested subnet, or the default one: both checked against this host's networks."""
    if subnet is None:
        subnet = (ipaddress.IPv4Network(DEFAULT_SUBNET) if name == DEFAULT_NAME
                  else network.free_subnet(OTHER_SUBNETS_FROM))
    network.check_subnet_free(subnet)
    return subnet


def _check_overlay_capable(directory: Path) -> None:
    kind = proc.run(["stat", "-f", "-c", "%T", str(directory)]).stdout.decode().strip()
    if kind not in _OVERLAY_UPPER_FILESYSTEMS:
        raise InputError(
            f"{directory} is on {kind}, which cannot hold overlay layers; set "
            "KUBEFERRY_LAB_DATA to a directory on ext4, xfs, btrfs or tmpfs"
        )


class SiteLock:
    """One ``up``/``down`` at a time on this machine: an flock on the run directory itself
    (no lock file to leave behind), waited for at most LOCK_TIMEOUT seconds."""

    def __init__(self, name: str):
        self.name = name
        self.path = paths.run_dir()

    def __enter__(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)

        def acquired() -> bool:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not proc.wait_until(acquired, LOCK_TIMEOUT, interval=0.5):
            os.close(self.fd)
            raise OperationError(
                f"another kubeferry-lab up/down holds {self.path} (lab {self.name}); try again"
            )

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)


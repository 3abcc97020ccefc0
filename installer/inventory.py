"""The inventory: the site kubeferry installs onto, read from YAML and checked up front.

Every problem is reported as one line naming the key and what to do (exit 2). Secrets
are never in the file unless the operator asks (``passwordFrom`` names where they are).
"""

from __future__ import annotations

import ipaddress
import os
import re
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from kubeferry.errors import InputError
from kubeferry.yamlfile import read_yaml

ROLES = ("control-plane", "worker", "lb")
PROXY_MODES = ("ipvs", "iptables")
FIREWALLD_MODES = ("stopped", "open")
APISERVER_PORT = 6443  # kube-apiserver's bindPort on every control plane
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")  # a DNS label, as kubelet wants
# Harbor project names (FACTS.md)
PROJECT_NAME = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*$")
_LABEL = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
_REGISTRY_HOST = re.compile(rf"^(?:{_LABEL}(?:\.{_LABEL})*|\[[0-9a-fA-F:.]+\])$")
_DNS_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?(\.[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?)*$")


@dataclass(frozen=True)
class SecretRef:
    """Where a secret comes from: ``env:NAME``, ``file:/path`` or ``stdin``; read only on use."""

    source: str
    plaintext: str | None = field(default=None, repr=False)  # only when the file says so
    key: str = ""  # where the inventory names it: hosts[0].ssh.passwordFrom

    def problem(self) -> str | None:
        """Why reading this secret would fail (checked up front, never reading stdin), or None."""
        kind, _, where = self.source.partition(":")
        if self.plaintext is not None or self.source == "stdin":
            return None
        if kind == "env" and os.environ.get(where) is None:
            return f"environment variable {where} is not set"
        if kind == "file":
            try:
                with open(Path(where).expanduser(), "rb") as handle:
                    handle.read(1)
            except OSError as error:
                return f"cannot read {where} ({error.strerror})"
        return None

    def read(self, stdin_reader: Callable[[], str] | None = None) -> str:
        if self.plaintext is not None:
            return self.plaintext
        kind, _, where = self.source.partition(":")
        if kind == "env":
            value = os.environ.get(where)
            if value is None:
                raise InputError(f"secret {self.source}: environment variable {where} is not set")
            return value
        if kind == "file":
            try:
                return Path(where).expanduser().read_text().rstrip("\n")
            except OSError as error:
                raise InputError(f"secret {self.source}: cannot read it ({error.strerror})") from None
        if self.source == "stdin":
            return (stdin_reader or (lambda: sys.stdin.readline()))().rstrip("\n")
        raise InputError(f"secret {self.key or 'passwordFrom'}: use env:NAME, file:/path or stdin")


@dataclass(frozen=True)
class Bastion:
    host: str
    port: int = 22
    user: str = "root"
    key_file: str | None = None


@dataclass(frozen=True)
class SSHSettings:
    user: str = "root"
    port: int = 22
    key_file: str | None = None
    password: SecretRef | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    sudo: bool = False
    bastion: Bastion | None = None
    timeout: float = 15.0


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    roles: tuple[str, ...]
    ssh: SSHSettings

    @property
    def is_control_plane(self) -> bool:
        return "control-plane" in self.roles

    @property
    def is_worker(self) -> bool:
        return "worker" in self.roles

    @property
    def is_lb(self) -> bool:
        return "lb" in self.roles

    @property
    def is_kubernetes_node(self) -> bool:
        return self.is_control_plane or self.is_worker


@dataclass(frozen=True)
class RegistrySettings:
    """The site's Harbor."""

    url: str
    project: str = "google_containers"
    username: str = "admin"
    password: SecretRef | None = None
    ca_file: str | None = None
    address: str | None = None

    @property
    def host(self) -> str:
        """``harbor.example.local`` or ``harbor.example.local:8443``, as image names use it."""
        return self.url.split("://", 1)[1].rstrip("/")

    @property
    def hostname(self) -> str:
        return self.host.rsplit(":", 1)[0] if self.host.count(":") == 1 else self.host

    @property
    def repository(self) -> str:
        """kubeadm's ``imageRepository``: ``harbor.example.local/google_containers``."""
        return f"{self.host}/{self.project}"


@dataclass(frozen=True)
class ClusterSettings:
    control_plane_endpoint: str
    pod_subnet: str = "10.244.0.0/16"
    service_subnet: str = "10.96.0.0/12"
    proxy_mode: str = "ipvs"
    dns_domain: str = "cluster.local"
    vip: str | None = None

    @property
    def endpoint_host(self) -> str:
        return self.control_plane_endpoint.rsplit(":", 1)[0]

    @property
    def endpoint_port(self) -> int:
        return int(self.control_plane_endpoint.rsplit(":", 1)[1])


@dataclass(frozen=True)
class NodeOSSettings:
    """The inventory's ``os`` section: how the ``os`` and ``kernel`` phases treat the nodes."""

    firewalld: str = "stopped"  # stopped (and disabled), or open: running, the roles' ports opened
    reboot_timeout: float | None = None  # seconds; None: manifests/nodeprep.yaml's


@dataclass(frozen=True)
class Inventory:
    cluster: ClusterSettings
    registry: RegistrySettings | None
    hosts: tuple[Host, ...]
    os: NodeOSSettings = NodeOSSettings()
    source: str = "inventory"
    warnings: tuple[str, ...] = field(default=(), compare=False)

    @property
    def control_planes(self) -> tuple[Host, ...]:
        return tuple(host for host in self.hosts if host.is_control_plane)

    @property
    def workers(self) -> tuple[Host, ...]:
        return tuple(host for host in self.hosts if host.is_worker and not host.is_control_plane)

    @property
    def first_control_plane(self) -> Host:
        return self.control_planes[0]

    @property
    def kubernetes_nodes(self) -> tuple[Host, ...]:
        return tuple(host for host in self.hosts if host.is_kubernetes_node)

    @property
    def lb_hosts(self) -> tuple[Host, ...]:
        """Who holds the VIP: the ``lb`` hosts, or else the control planes (when a VIP is set)."""
        explicit = tuple(host for host in self.hosts if host.is_lb)
        if explicit:
            return explicit
        return self.control_planes if self.cluster.vip else ()

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise InputError(f"{self.source}: no host named {name!r}")


# -- loading ---------------------------------------------------------------------------------


class _Reader:
    """Reads one mapping, naming the full key path in every error."""

    def __init__(self, data: Any, where: str, source: str) -> None:
        if not isinstance(data, dict):
            raise InputError(f"{source}: {where or 'the file'} must be a mapping")
        self.data, self.where, self.source = data, where, source
        self.used: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def fail(self, name: str, message: str) -> InputError:
        return InputError(f"{self.source}: {self.key(name)}: {message}")

    def get(self, name: str, kind: type | tuple[type, ...], default: Any = None,
            required: bool = False, secret: bool = False) -> Any:
        """The value of ``name``; a ``secret`` value is never shown in an error."""
        self.used.add(name)
        if name not in self.data or self.data[name] is None:
            if required:
                raise self.fail(name, "is required")
            return default
        value = self.data[name]
        if kind is int and isinstance(value, bool) or not isinstance(value, kind):
            expected = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            shown = f"a {type(value).__name__} (value not shown)" if secret else repr(value)
            raise self.fail(name, f"must be a {expected}, not {shown}")
        return value

    def child(self, name: str) -> _Reader | None:
        value = self.get(name, dict)
        return None if value is None else _Reader(value, self.key(name), self.source)

    def finish(self) -> None:
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            raise self.fail(unknown[0], "unknown key (see 'kubeferry inventory example')")


def _secret(reader: _Reader, plaintext_key: str = "password") -> SecretRef | None:
    source = reader.get("passwordFrom", str, secret=True)
    plaintext = reader.get(plaintext_key, (str, int), secret=True)
    allowed = reader.get("allowPlaintextPassword", bool, False)
    if plaintext is not None:
        if not allowed:
            raise reader.fail(plaintext_key, "a password in clear in the inventory; use passwordFrom:"
                              " env:NAME, file:/path or stdin (or set allowPlaintextPassword: true)")
        return SecretRef("inventory", plaintext=str(plaintext))
    if source is None:
        return None
    if not (source.startswith(("env:", "file:")) and len(source) > 5 or source == "stdin"):
        # never echo it: a password pasted here by mistake must not reach a terminal or a log
        raise reader.fail("passwordFrom", "is not env:NAME, file:/path or stdin (the value is not"
                          " shown: it may be the password itself)")
    return SecretRef(source, key=reader.key("passwordFrom"))


def _ssh(reader: _Reader | None, base: SSHSettings) -> SSHSettings:
    if reader is None:
        return base
    bastion = base.bastion
    bastion_reader = reader.child("bastion")
    if bastion_reader is not None:
        bastion = Bastion(host=bastion_reader.get("host", str, required=True),
                          port=_port(bastion_reader, "port", 22),
                          user=bastion_reader.get("user", str, "root"),
                          key_file=bastion_reader.get("keyFile", str))
        bastion_reader.finish()
    settings = replace(
        base,
        user=reader.get("user", str, base.user),
        port=_port(reader, "port", base.port),
        key_file=reader.get("keyFile", str, base.key_file),
        password=_secret(reader) or base.password,
        known_hosts=reader.get("knownHosts", str, base.known_hosts),
        sudo=reader.get("sudo", bool, base.sudo),
        timeout=_timeout(reader, base.timeout),
        bastion=bastion,
    )
    reader.finish()
    return settings


def _timeout(reader: _Reader, default: float) -> float:
    """``ssh.timeout``: seconds for the SSH connect, banner, login and each channel."""
    value = float(reader.get("timeout", (int, float), default))
    if not 0 < value <= 3600:
        raise reader.fail("timeout", f"{value:g} is not a number of seconds in (0, 3600]")
    return value


def _port(reader: _Reader, name: str, default: int) -> int:
    port = reader.get(name, int, default)
    if not 0 < port < 65536:
        raise reader.fail(name, f"{port} is not a TCP port")
    return port


def _network(reader: _Reader, name: str, default: str) -> str:
    value = reader.get(name, str, default)
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except ValueError as error:
        raise reader.fail(name, f"{value!r} is not a network in CIDR form ({error})") from None


def _address(reader: _Reader, name: str, required: bool = False) -> str | None:
    value = reader.get(name, str, required=required)
    if value is None:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise reader.fail(name, f"{value!r} is not an IP address") from None


def _dns_domain(reader: _Reader) -> str:
    value = reader.get("dnsDomain", str, "cluster.local")
    if not _DNS_DOMAIN.match(value) or len(value) > 253:
        raise reader.fail("dnsDomain", f"{value!r} is not a DNS domain (lower case labels joined"
                          " by dots, e.g. cluster.local)")
    return value


def _cluster(reader: _Reader) -> ClusterSettings:
    endpoint = reader.get("controlPlaneEndpoint", str, required=True)
    host, sep, port = endpoint.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise reader.fail("controlPlaneEndpoint", f"{endpoint!r}: expected HOST:PORT, e.g. 10.0.0.100:6443")
    mode = reader.get("proxyMode", str, "ipvs")
    if mode not in PROXY_MODES:
        raise reader.fail("proxyMode", f"{mode!r}: choose {' or '.join(PROXY_MODES)}")
    cluster = ClusterSettings(
        control_plane_endpoint=endpoint,
        pod_subnet=_network(reader, "podSubnet", "10.244.0.0/16"),
        service_subnet=_network(reader, "serviceSubnet", "10.96.0.0/12"),
        proxy_mode=mode,
        dns_domain=_dns_domain(reader),
        vip=_address(reader, "vip"),
    )
    reader.finish()
    return cluster


def _node_os(reader: _Reader | None) -> NodeOSSettings:
    if reader is None:
        return NodeOSSettings()
    firewalld = reader.get("firewalld", str, "stopped")
    if firewalld not in FIREWALLD_MODES:
        raise reader.fail("firewalld", f"{firewalld!r}: choose stopped (stopped and disabled) or open"
                          " (running, with the ports of each node's roles opened)")
    timeout = reader.get("rebootTimeout", (int, float))
    if timeout is not None and not 0 < timeout <= 3600:
        raise reader.fail("rebootTimeout", f"{timeout:g} is not a number of seconds in (0, 3600]")
    reader.finish()
    return NodeOSSettings(firewalld=firewalld,
                          reboot_timeout=float(timeout) if timeout is not None else None)


def _registry(data: Any, source: str) -> RegistrySettings | None:
    if data == "none":
        return None
    reader = _Reader(data, "registry", source)
    url = reader.get("url", str, required=True).rstrip("/")
    problem = registry_url_problem(url)
    if problem:
        raise reader.fail("url", f"{url!r}: {problem}")
    project = reader.get("project", str, "google_containers")
    if not PROJECT_NAME.match(project):
        raise reader.fail("project", f"{project!r} is not a valid Harbor project name"
                          " (lower case letters, digits, and . _ - between them)")
    registry = RegistrySettings(url=url, project=project,
                                username=reader.get("username", str, "admin"),
                                password=_secret(reader), ca_file=reader.get("caFile", str),
                                address=_address(reader, "address"))
    plain_http = reader.get("allowPasswordOverPlainHttp", bool, False)
    if url.startswith("http://") and registry.password is not None and not plain_http:
        raise reader.fail("url", f"{url!r}: plain HTTP would send the Harbor password in clear;"
                          " use https:// (with caFile) or set allowPasswordOverPlainHttp: true")
    reader.finish()
    return registry


def _hosts(items: Any, ssh: SSHSettings, source: str) -> tuple[Host, ...]:
    if not isinstance(items, list) or not items:
        raise InputError(f"{source}: hosts: list at least one host")
    hosts = []
    for index, item in enumerate(items):
        reader = _Reader(item, f"hosts[{index}]", source)
        name = reader.get("name", str, required=True)
        if not _NAME.match(name):
            raise reader.fail("name", f"{name!r} is not a valid node name (lower case DNS label)")
        roles = reader.get("roles", list, required=True)
        bad = [role for role in roles if role not in ROLES]
        if bad or not roles:
            raise reader.fail("roles", f"{bad or roles!r}: roles are {', '.join(ROLES)}")
        hosts.append(Host(name=name, address=_address(reader, "address", required=True),
                          roles=tuple(roles), ssh=_ssh(reader.child("ssh"), ssh)))
        reader.finish()
    return tuple(hosts)


def parse(data: Any, source: str = "inventory") -> Inventory:
    """An Inventory from parsed YAML; InputError (one line) at the first problem."""
    top = _Reader(data, "", source)
    cluster_reader = top.child("cluster")
    if cluster_reader is None:
        raise top.fail("cluster", "is required")
    cluster = _cluster(cluster_reader)
    top.used.add("registry")
    if "registry" not in top.data:
        raise top.fail("registry", "is required (a Harbor, or `registry: none`)")
    registry = _registry(top.data["registry"], source)
    ssh = _ssh(top.child("ssh"), SSHSettings())
    top.used.add("hosts")
    hosts = _hosts(top.data.get("hosts"), ssh, source)
    node_os = _node_os(top.child("os"))
    top.finish()
    inventory = Inventory(cluster=cluster, registry=registry, hosts=hosts, os=node_os, source=source)
    return replace(inventory, warnings=tuple(check(inventory)))


def load(path: Path) -> Inventory:
    """Read and check the inventory file at ``path``."""
    return parse(read_yaml(Path(path), "--inventory"), str(path))


def check(inventory: Inventory) -> list[str]:
    """The cross-field checks; raises InputError for errors, returns warnings."""
    source, warnings = inventory.source, []
    seen_names: set[str] = set()
    seen_addresses: set[str] = set()
    for host in inventory.hosts:
        if host.name in seen_names:
            raise InputError(f"{source}: hosts: the name {host.name} is used twice")
        if host.address in seen_addresses:
            raise InputError(f"{source}: hosts: the address {host.address} is used twice")
        seen_names.add(host.name)
        seen_addresses.add(host.address)
    control_planes = inventory.control_planes
    if not control_planes:
        raise InputError(f"{source}: hosts: give at least one host the role control-plane")
    if len(control_planes) % 2 == 0:
        warnings.append(f"{len(control_planes)} control-plane nodes: etcd needs an odd number"
                        " to keep quorum through a failure (3 or 5)")
    cluster = inventory.cluster
    pods = ipaddress.ip_network(cluster.pod_subnet)
    services = ipaddress.ip_network(cluster.service_subnet)
    if pods.overlaps(services):
        raise InputError(f"{source}: cluster.podSubnet {pods} overlaps cluster.serviceSubnet {services}")
    for host in inventory.hosts:
        address = ipaddress.ip_address(host.address)
        for name, network in (("podSubnet", pods), ("serviceSubnet", services)):
            if address in network:
                raise InputError(f"{source}: cluster.{name} {network} contains the address of"
                                 f" {host.name} ({address}); choose a subnet the nodes do not use")
    if cluster.vip:
        if cluster.vip in seen_addresses:
            raise InputError(f"{source}: cluster.vip {cluster.vip} is a node's address;"
                             " the VIP must be a free address on the nodes' network")
        vip = ipaddress.ip_address(cluster.vip)
        if vip in pods or vip in services:
            raise InputError(f"{source}: cluster.vip {vip} is inside a cluster subnet")
        if (vip.is_loopback or vip.is_multicast or vip.is_unspecified or vip.is_link_local
                or vip.is_reserved):
            raise InputError(f"{source}: cluster.vip {vip} is not a unicast address a host can hold")
        holders = inventory.lb_hosts
        if holders and not any(_same_network(vip, ipaddress.ip_address(h.address)) for h in holders):
            raise InputError(f"{source}: cluster.vip {vip} is on no network of the hosts that hold it"
                             f" ({', '.join(h.name for h in holders)}); choose a free address in"
                             " their subnet")
        _check_endpoint_on_vip(inventory)
    elif any(host.is_lb for host in inventory.hosts):
        raise InputError(f"{source}: hosts with the role lb need cluster.vip, the address keepalived"
                         " holds for them")
    elif len(control_planes) > 1:
        warnings.append("several control planes but no cluster.vip and no lb host: the"
                        " controlPlaneEndpoint must be a load balancer you run yourself")
    return warnings


def _same_network(vip: ipaddress.IPv4Address | ipaddress.IPv6Address,
                  host: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether ``vip`` can be on ``host``'s subnet. The inventory holds no prefix lengths, so
    this takes the widest subnet sites use for a node network (/16, /64); the preflight
    phase checks the real interface."""
    if vip.version != host.version:
        return False
    prefix = 16 if vip.version == 4 else 64
    return vip in ipaddress.ip_network(f"{host}/{prefix}", strict=False)


def _check_endpoint_on_vip(inventory: Inventory) -> None:
    """With a VIP, kubelets reach the API through haproxy: the endpoint must be that haproxy.

    haproxy listens on the endpoint's port on every lb host. Where the lb hosts are the
    control planes, kube-apiserver already holds 6443 there, so the endpoint needs another
    port (8443 is customary); kubeadm's controlPlaneEndpoint then names that port.
    """
    source, cluster = inventory.source, inventory.cluster
    endpoint = cluster.control_plane_endpoint
    try:
        address = ipaddress.ip_address(cluster.endpoint_host.strip("[]"))
    except ValueError:
        address = None  # a DNS name: it must resolve to the VIP (the os phase writes /etc/hosts)
    if address is not None and str(address) != cluster.vip:
        raise InputError(f"{source}: cluster.controlPlaneEndpoint {endpoint} is not on cluster.vip"
                         f" {cluster.vip}; use {cluster.vip}:{cluster.endpoint_port} or a name for the VIP")
    colocated = [host.name for host in inventory.lb_hosts if host.is_control_plane]
    if colocated and cluster.endpoint_port == APISERVER_PORT:
        raise InputError(f"{source}: cluster.controlPlaneEndpoint {endpoint}: haproxy runs on the control"
                         f" planes ({', '.join(colocated)}) next to kube-apiserver, which holds port"
                         f" {APISERVER_PORT}; use another port, e.g. {cluster.endpoint_host}:8443")


def check_secrets(inventory: Inventory) -> None:
    """Every secret and SSH key the install needs is readable: InputError (exit 2) naming the
    key and the file now, rather than the same failure per host at preflight."""
    source = inventory.source
    refs: list[SecretRef] = []
    key_files: list[tuple[str, str]] = []
    for host in inventory.hosts:
        if host.ssh.password is not None:
            refs.append(host.ssh.password)
        if host.ssh.key_file:
            key_files.append((f"ssh.keyFile of host {host.name}", host.ssh.key_file))
        if host.ssh.bastion is not None and host.ssh.bastion.key_file:
            key_files.append((f"ssh.bastion.keyFile of host {host.name}", host.ssh.bastion.key_file))
    if inventory.registry is not None and inventory.registry.password is not None:
        refs.append(inventory.registry.password)
    for ref in dict.fromkeys(refs):
        problem = ref.problem()
        if problem:
            raise InputError(f"{source}: {ref.key or 'passwordFrom'} {ref.source}: {problem}")
    for key, path in dict.fromkeys(key_files):
        try:
            with open(Path(path).expanduser(), "rb") as handle:
                handle.read(1)
        except OSError as error:
            raise InputError(f"{source}: {key}: cannot read {path} ({error.strerror})") from None
    if inventory.registry is not None and inventory.registry.ca_file:
        ca_file = inventory.registry.ca_file
        if not Path(ca_file).expanduser().is_file():
            raise InputError(f"{source}: registry.caFile: {ca_file} is not a readable file")


def registry_url_problem(url: str) -> str | None:
    """Why ``url`` cannot be the site registry's URL (``https://HOST[:PORT]``), or None.

    HOST must be able to start an image name: docker and containerd read a first component
    without a '.' or ':' (``harbor/google_containers/pause``) as a Docker Hub name.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("https", "http") or not rest or "/" in rest:
        return "expected https://HOST[:PORT] (no path)"
    host, colon, port = rest.rpartition(":") if not rest.endswith("]") else (rest, "", "")
    if not colon:
        host, port = rest, ""
    if colon and not (port.isdigit() and 0 < int(port) < 65536):
        return f"port {port!r} is not a TCP port"
    if not _REGISTRY_HOST.match(host):
        return f"{host!r} is not a host name or IP address"
    if "." not in host and not colon and host != "localhost" and not host.startswith("["):
        return (f"host {host!r} cannot start an image name: use its full DNS name"
                " (harbor.example.local), an IP address, or add the port")
    return None


def example() -> str:
    """The commented example inventory (``kubeferry inventory example``)."""
    from importlib import resources

    return resources.files("kubeferry.manifests").joinpath("inventory-example.yaml").read_text()

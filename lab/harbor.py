"""The Harbor stand-in: a real distribution registry with token auth behind Harbor's API.

What runs: Debian's ``docker-registry`` on loopback, configured for token auth (as Harbor
deploys it), and one HTTPS server (``harbor_front``) on the public address serving
``/api/v2.0`` (systeminfo, health, ping, projects: exists / get / list / create),
``/service/token`` (service ``harbor-registry``) and ``/v2/`` (streamed to the registry).
Certificates come from a lab CA kept in the working directory; the admin password is
generated once and kept there (mode 0600), so a restarted stand-in is the same Harbor.

In a test, on loopback::

    with HarborStandIn(tmp_path / "harbor") as harbor:     # https://127.0.0.1:<port>
        harbor.url, harbor.host, harbor.ca_file, harbor.admin_username, harbor.admin_password

On a lab site, in the service host's own network namespace (address ``.2``, port 443)::

    host = site.add_host("harbor", HARBOR_HOST)
    harbor = HarborStandIn(workdir, addr=host.address, port=443,
                           hostnames=("harbor.lab",)).start_on(host)
    ...
    harbor.stop()                                            # or site.down()

which runs ``python -m kubeferry.lab.harbor serve --config <workdir>/harbor.json`` there.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import requests

from kubeferry.lab.harbor_front import Backend, Exchange, HarborServer
from kubeferry.lab.harbor_projects import ADMIN, HarborModel, User
from kubeferry.lab.pki import CertificateAuthority, ServerCertificate, make_ca, make_certificate
from kubeferry.lab.registry import Registry, free_port
from kubeferry.lab.serving import ServerThread
from kubeferry.lab.token_service import TokenService

if TYPE_CHECKING:
    from kubeferry.lab.service_host import ServiceHost

SERVICE = "harbor-registry"
ISSUER = "harbor-token-issuer"
READY_TIMEOUT = 60.0
_PROBE_TIMEOUT = 3.0


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` readable by the owner only (it holds passwords)."""
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(temp, path)


class HarborStandIn:
    """One Harbor: in this process (``start``) or on a lab service host (``start_on``)."""

    def __init__(
        self,
        workdir: Path,
        *,
        addr: str = "127.0.0.1",
        port: int = 0,
        hostnames: tuple[str, ...] | list[str] = ("localhost",),
        admin_password: str | None = None,
        users: dict[str, str] | None = None,
        project_creation: str = "everyone",
        keep_exchanges: bool = True,
        public_port: int | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self.keep_exchanges = keep_exchanges  # off in ``serve``: requests.log is enough there
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.addr = addr
        self.port = port or free_port(addr)
        # where clients reach it, when that differs from where it listens: a benchmark's
        # delaying proxy in front (token realm and upload locations must name the proxy)
        self.public_port = public_port or self.port
        self.hostnames = tuple(hostnames)
        self.project_creation = project_creation
        self.certificate = self._certificate()
        self._users = self._load_users(admin_password, users or {})
        self.model = HarborModel(self.workdir / "projects.json", self._users, project_creation)
        self.exchanges: list[Exchange] = []
        self._exchanges_lock = threading.Lock()
        self.registry: Registry | None = None
        self.tokens: TokenService | None = None
        self._serving: ServerThread | None = None
        self._host: ServiceHost | None = None
        self._process: subprocess.Popen[bytes] | None = None

    # -- what clients need ------------------------------------------------------------------

    @property
    def host(self) -> str:
        """``10.88.0.2`` on port 443, else ``127.0.0.1:<port>``: as image names use it."""
        return self.addr if self.public_port == 443 else f"{self.addr}:{self.public_port}"

    @property
    def url(self) -> str:
        return f"https://{self.host}"

    @property
    def ca_file(self) -> str:
        return str(self.certificate.ca_file)

    @property
    def admin_username(self) -> str:
        return ADMIN

    @property
    def admin_password(self) -> str:
        return self.model.users[ADMIN].password

    @property
    def log_file(self) -> Path:
        return self.workdir / "harbor.log"

    @property
    def requests_file(self) -> Path:
        """One line per request answered (``METHOD path status``), in either mode."""
        return self.workdir / "requests.log"

    def requests(self, method: str | None = None, contains: str = "") -> list[Exchange]:
        """Requests answered by an in-process stand-in (``start``), optionally filtered.

        After ``start_on`` the stand-in lives in another process: read ``requests_file``
        and ask the API instead (``model`` is this process's copy, not the live one).
        """
        with self._exchanges_lock:
            return [e for e in self.exchanges
                    if (method is None or e.method == method) and contains in e.path]

    def clear(self) -> None:
        with self._exchanges_lock:
            self.exchanges.clear()

    # -- setup ---------------------------------------------------------------------------------

    def _certificate(self) -> ServerCertificate:
        """A server certificate for the address and names, from the lab CA kept in workdir."""
        directory = self.workdir / "pki"
        ca = CertificateAuthority(directory / "ca.pem", directory / "ca-key.pem")
        if not (ca.cert_file.exists() and ca.key_file.exists()):
            ca = make_ca(directory, "kubeferry lab Harbor CA")
        ips = [self.addr] if _is_ip(self.addr) else []
        names = [n for n in self.hostnames if not _is_ip(n)]
        ips += [n for n in self.hostnames if _is_ip(n) and n not in ips]
        if not _is_ip(self.addr) and self.addr not in names:
            names.append(self.addr)
        return make_certificate(ca, directory, "harbor", names, ips)

    def _load_users(self, admin_password: str | None, extra: dict[str, str]) -> list[User]:
        """Users from ``users.json`` (made on first use: admin with a generated password)."""
        path = self.workdir / "users.json"
        stored: dict[str, dict] = json.loads(path.read_text()) if path.exists() else {}
        if ADMIN not in stored or admin_password is not None:
            stored[ADMIN] = {"password": admin_password or secrets.token_urlsafe(12), "admin": True}
        for name, password in extra.items():
            stored[name] = {"password": password, "admin": False}
        _write_private(path, json.dumps(stored, indent=1))
        ordered = [ADMIN] + sorted(name for name in stored if name != ADMIN)
        return [User(index + 1, name, stored[name]["password"], stored[name]["admin"])
                for index, name in enumerate(ordered)]

    def write_config(self) -> Path:
        """The file ``serve --config`` reads (no secrets: those stay in users.json)."""
        path = self.workdir / "harbor.json"
        path.write_text(json.dumps({
            "workdir": str(self.workdir), "addr": self.addr, "port": self.port,
            "public_port": self.public_port, "hostnames": list(self.hostnames),
            "project_creation": self.project_creation,
        }, indent=1))
        return path

    # -- in this process ---------------------------------------------------------------------------

    def start(self) -> HarborStandIn:
        """Start the registry and the HTTPS front here; returns when both answer."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.certificate.cert_file), str(self.certificate.key_file))
        context.set_alpn_protocols(["http/1.1"])
        server = HarborServer((self.addr, self.port), context)
        try:
            self.tokens = TokenService(
                self.workdir / "token", users={u.name: u.password for u in self._users},
                authorize=self.model.grant, service=SERVICE, issuer=ISSUER,
                realm=f"{self.url}/service/token",
            )
            self.registry = Registry(self.workdir / "registry", addr="127.0.0.1", token=self.tokens)
            self.registry.start()
            server.backend = Backend(
                model=self.model, tokens=self.tokens, registry_port=self.registry.port,
                record=self._record, finished=self._log, registry_healthy=self._registry_problem,
                repo_count=self._repo_count, public_url=self.url,
            )
        except BaseException:
            server.server_close()
            if self.registry is not None:
                self.registry.stop()
            raise
        self._serving = ServerThread(server, "harbor-standin")
        return self

    def _record(self, exchange: Exchange) -> None:
        if self.keep_exchanges:
            with self._exchanges_lock:
                self.exchanges.append(exchange)

    def _log(self, exchange: Exchange) -> None:
        with self._exchanges_lock, open(self.requests_file, "a") as log:
            log.write(f"{exchange.method} {exchange.path} {exchange.status}\n")

    def _registry_problem(self) -> str | None:
        assert self.registry is not None
        try:
            with socket.create_connection(("127.0.0.1", self.registry.port), _PROBE_TIMEOUT):
                return None
        except OSError as error:
            return f"registry does not answer: {error.strerror or error}"

    def _repo_count(self, project: str) -> int:
        assert self.registry is not None
        root = self.registry.storage / "docker/registry/v2/repositories" / project
        if not root.is_dir():
            return 0
        return sum(1 for tags in root.rglob("_manifests") if (tags / "tags").is_dir())

    # -- on a lab service host ----------------------------------------------------------------------

    def start_on(self, host: ServiceHost, ready_timeout: float = READY_TIMEOUT) -> HarborStandIn:
        """Run ``serve`` on a lab service host (its own netns); returns once the API answers."""
        config = self.write_config()
        argv = [sys.executable, "-m", "kubeferry.lab.harbor", "serve", "--config", str(config)]
        self._process = host.start(argv, log=self.log_file, ready=self._answers,
                                   ready_timeout=ready_timeout)
        self._host = host
        return self

    def _answers(self) -> bool:
        with requests.Session() as session:
            session.trust_env = False  # a proxy from the environment must not answer for us
            try:
                response = session.get(f"{self.url}/api/v2.0/ping", verify=self.ca_file,
                                       timeout=_PROBE_TIMEOUT)
            except requests.RequestException:
                return False
        return response.status_code == 200

    # -- stopping ------------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop everything this object started; open connections are cut (Harbor is down)."""
        if self._process is not None and self._host is not None:
            self._host.stop(self._process)
            self._process = None
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()
            serving.server.drop_connections()
        if self.registry is not None:
            self.registry.stop()
            self.registry = None

    def __enter__(self) -> HarborStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def serve(config_file: Path) -> int:
    """Run a stand-in from a config file until SIGTERM or SIGINT (the service host's process)."""
    config = json.loads(Path(config_file).read_text())
    harbor = HarborStandIn(
        Path(config["workdir"]), addr=config["addr"], port=config["port"],
        hostnames=tuple(config.get("hostnames", ())),
        project_creation=config.get("project_creation", "everyone"), keep_exchanges=False,
        public_port=config.get("public_port"),
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    harbor.start()
    print(f"harbor stand-in listening on {harbor.url} (registry on 127.0.0.1:"
          f"{harbor.registry.port if harbor.registry else '?'})", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        harbor.stop()
        print(f"harbor stand-in stopped at {time.strftime('%H:%M:%S')}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kubeferry.lab.harbor",
                                     description="The lab's Harbor stand-in.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run a stand-in described by a config file")
    serve_parser.add_argument("--config", required=True, type=Path)
    args = parser.parse_args(argv)
    return serve(args.config)


if __name__ == "__main__":
    sys.exit(main())

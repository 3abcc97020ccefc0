"""Debian's real ``docker-registry`` (distribution 2.8) with a generated config.

Modes: plain HTTP, HTTPS (a lab CA made on the spot), htpasswd Basic auth (bcrypt, via
``htpasswd -B -i`` so the password goes through stdin, never argv), and token auth
against a :class:`~kubeferry.lab.token_service.TokenService`. The process is started
directly (or under ``ip netns exec NAME``), stopped by its pid, and every wait is bounded.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from kubeferry.lab.pki import ServerCertificate, make_server_pki
from kubeferry.lab.token_service import TokenService

REGISTRY_BINARY = "docker-registry"
READY_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def free_port(addr: str = "127.0.0.1") -> int:
    """A TCP port free on ``addr`` right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((addr, 0))
        return probe.getsockname()[1]


def write_htpasswd(path: Path, users: dict[str, str]) -> None:
    """An htpasswd file with bcrypt hashes (distribution only accepts bcrypt)."""
    path.unlink(missing_ok=True)
    for index, (username, password) in enumerate(users.items()):
        flags = "-B" + ("c" if index == 0 else "") + "i"
        subprocess.run(
            ["htpasswd", flags, str(path), username],
            input=password.encode(),
            capture_output=True,
            check=True,
            timeout=30,
        )


def write_docker_config(path: Path, host: str, username: str, password: str) -> Path:
    """A docker config file (mode 0600) with one login, as ``--registry-auth FILE`` takes it."""
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"auths": {host: {"auth": token}}}, handle)
    return path


class Registry:
    """A running distribution registry; use as a context manager or start()/stop()."""

    def __init__(
        self,
        workdir: Path | None = None,
        *,
        addr: str = "127.0.0.1",
        port: int | None = None,
        tls: bool | ServerCertificate = False,
        htpasswd: dict[str, str] | None = None,
        token: TokenService | None = None,
        netns: str | None = None,
        storage: Path | None = None,
    ) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="kubeferry-registry-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.addr = addr
        if port is None:
            port = 5000 if netns else free_port(addr)
        self.port = port
        self.netns = netns
        self.storage = Path(storage or self.workdir / "storage")
        self.htpasswd = htpasswd
        self.token = token
        self.certificate: ServerCertificate | None = None
        if tls is True:
            self.certificate = make_server_pki(
                self.workdir / "pki", dns_names=("localhost",), ip_addresses=(addr,)
            )
        elif isinstance(tls, ServerCertificate):
            self.certificate = tls
        self.config_file = self.workdir / "config.yml"
        self.log_file = self.workdir / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"{self.addr}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.certificate else 'http'}://{self.host}"

    @property
    def ca_file(self) -> str | None:
        return str(self.certificate.ca_file) if self.certificate else None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes (for tests that serve or break it)."""
        hex_digest = digest.split(":", 1)[1]
        blobs = self.storage / "docker/registry/v2/blobs/sha256"
        return blobs / hex_digest[:2] / hex_digest / "data"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""

    # -- config ---------------------------------------------------------------------------

    def _config(self) -> dict:
        http: dict = {"addr": self.host, "secret": secrets.token_hex(16)}
        if self.certificate:
            http["tls"] = {
                "certificate": str(self.certificate.cert_file),
                "key": str(self.certificate.key_file),
            }
        config: dict = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage)},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
            },
            "http": http,
            "health": {"storagedriver": {"enabled": False}},
        }
        if self.htpasswd is not None:
            path = self.workdir / "htpasswd"
            write_htpasswd(path, self.htpasswd)
            config["auth"] = {"htpasswd": {"realm": "kubeferry-lab", "path": str(path)}}
        elif self.token is not None:
            config["auth"] = {
                "token": {
                    "realm": self.token.realm,
                    "service": self.token.service,
                    "issuer": self.token.issuer,
                    "rootcertbundle": str(self.token.cert_file),
                }
            }
        return config

    # -- lifecycle --------------------------------------------------------------------------

    def prepare(self) -> list[str]:
        """Write the config and return the command line that serves it (for a caller that
        runs the process itself, e.g. recorded in a lab site's journal)."""
        if shutil.which(REGISTRY_BINARY) is None:
            raise RuntimeError(f"{REGISTRY_BINARY} is not installed (Debian: docker-registry)")
        self.storage.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(yaml.safe_dump(self._config()))
        return [REGISTRY_BINARY, "serve", str(self.config_file)]

    def start(self) -> Registry:
        command = self.prepare()
        if self.netns:
            command = ["ip", "netns", "exec", self.netns, *command]
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        """Wait (bounded) for distribution's "listening on" line; works inside a netns too."""
        deadline = time.monotonic() + READY_TIMEOUT
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.log()
                self.process = None
                raise RuntimeError(f"docker-registry exited at start:\n{log[-2000:]}")
            if "listening on" in self.log():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"docker-registry not ready after {READY_TIMEOUT}s:\n{self.log()[-2000:]}"
        )

    def stop(self) -> None:
        """Stop the registry by its pid: SIGTERM, bounded wait, then SIGKILL."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGKILL)
                process.wait(timeout=STOP_TIMEOUT)

    def cleanup(self) -> None:
        """Stop, and remove the working directory if this object made it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Registry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

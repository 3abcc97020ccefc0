"""SSH to the nodes (paramiko): commands, streamed uploads, host keys verified by default.

Nodes need only POSIX sh and coreutils: commands are sh command lines built with
``shlex.quote``; uploads are ``cat >>`` over an exec channel (no sftp-server needed).
Secrets travel on stdin, never on a command line, and stdin is never logged.
"""

from __future__ import annotations

import logging
import shlex
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Iterator

import paramiko

from kubeferry import timeouts
from kubeferry.errors import InputError, OperationError
from kubeferry.installer.inventory import Host, SSHSettings

# paramiko logs its transport thread's failures with tracebacks; with no handler Python's
# last-resort handler would print them on stderr. The errors reach the operator as one line.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

CHUNK = 1 << 18
EOF_GRACE = 5.0  # seconds to wait for the output's end once the exit status is in


@dataclass(frozen=True)
class CommandResult:
    command: str
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0


class CommandFailed(OperationError):
    """A command exited non-zero: the host, the command, its last error line, never a secret."""

    def __init__(self, host: str, result: CommandResult, secrets: tuple[str, ...] = (),
                 what: str = "") -> None:
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        last = next((line.strip() for line in reversed(lines) if "stack trace" not in line),
                    "no output")
        what = what or f"`{_short(result.command)}` exited {result.rc}"
        super().__init__(redact(f"{host}: {what}: {last}", secrets))
        self.result = result


REDACTED = "<redacted>"


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret replaced by <redacted>."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def _short(command: str, limit: int = 80) -> str:
    line = " ".join(command.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


class _LearnNewHostKeys(paramiko.MissingHostKeyPolicy):
    """Trust on first use: record an unknown host's key. A changed key is still refused."""

    def __init__(self, known_hosts: Path, lock: threading.Lock) -> None:
        self.known_hosts = known_hosts
        self.lock = lock

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        with self.lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
            with open(self.known_hosts, "a") as handle:
                handle.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        client.get_host_keys().add(hostname, key.get_name(), key)


_known_hosts_lock = threading.Lock()


class Connection:
    """One node over SSH. Thread-safe for sequential use per thread; open one per worker."""

    def __init__(self, host: Host, accept_new_host_keys: bool = False,
                 password: str | None = None, log: Callable[[str], None] | None = None) -> None:
        self.host = host
        self.settings: SSHSettings = host.ssh
        self.accept_new_host_keys = accept_new_host_keys
        self._password = password
        self._log = log or (lambda line: None)
        self._client: paramiko.SSHClient | None = None
        self._jump: paramiko.SSHClient | None = None

    # -- connecting ------------------------------------------------------------------------

    def _new_client(self) -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        known_hosts = Path(self.settings.known_hosts).expanduser()
        if known_hosts.exists():
            try:
                client.load_host_keys(str(known_hosts))
            except (OSError, paramiko.SSHException) as error:
                raise InputError(f"known hosts file {known_hosts}: cannot read it ({error})") from None
        if self.accept_new_host_keys:
            client.set_missing_host_key_policy(_LearnNewHostKeys(known_hosts, _known_hosts_lock))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        return client

    def _connect_kwargs(self, user: str, key_file: str | None) -> dict:
        kwargs = {"username": user, "timeout": self.settings.timeout,
                  "banner_timeout": self.settings.timeout, "auth_timeout": self.settings.timeout,
                  "allow_agent": False, "look_for_keys": False}
        if key_file:
            kwargs["key_filename"] = str(Path(key_file).expanduser())
        if self._password:
            kwargs["password"] = self._password
        return kwargs

    def client(self) -> paramiko.SSHClient:
        if self._client is not None and self._client.get_transport() is not None \
                and self._client.get_transport().is_active():
            return self._client
        self.close()
        where = f"{self.host.name} ({self.settings.user}@{self.host.address}:{self.settings.port})"
        client = self._new_client()
        sock = None
        started = time.monotonic()
        try:
            with timeouts.waiting(f"SSH to {where}", self.settings.timeout, "ssh.timeout"):
                bastion = self.settings.bastion
                if bastion is not None:
                    self._jump = self._new_client()
                    jump_key = bastion.key_file or self.settings.key_file
                    self._jump.connect(bastion.host, port=bastion.port,
                                       **self._connect_kwargs(bastion.user, jump_key))
                    sock = self._jump.get_transport().open_channel(
                        "direct-tcpip", (self.host.address, self.settings.port), ("127.0.0.1", 0))
                client.connect(self.host.address, port=self.settings.port, sock=sock,
                               **self._connect_kwargs(self.settings.user, self.settings.key_file))
        except paramiko.BadHostKeyException:
            raise OperationError(
                f"{where}: host key does not match the known hosts file {self.settings.known_hosts}"
                " — refusing to connect (if the node was reinstalled, remove its old key)") from None
        except paramiko.SSHException as error:
            if "not found in known_hosts" in str(error):
                raise OperationError(
                    f"{where}: host key unknown (not in {self.settings.known_hosts}); add it, or run"
                    " with --accept-new-host-keys to trust it on first use") from None
            silent = time.monotonic() - started >= self.settings.timeout * 0.9
            if "protocol banner" in str(error) or silent:  # connected, but nothing answered in time
                raise OperationError(
                    f"{where}: SSH timed out after {self.settings.timeout:.0f} s waiting for the SSH"
                    " banner (is it sshd on that port? ssh.timeout to change)") from None
            raise OperationError(f"{where}: SSH failed: {error}") from None
        except (socket.timeout, TimeoutError, EOFError):
            raise OperationError(f"{where}: SSH timed out after {self.settings.timeout:.0f} s") from None
        except OSError as error:
            raise OperationError(f"{where}: cannot connect: {error.strerror or error}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
            transport.window_size = 16 << 20
        self._client = client
        return client

    def close(self) -> None:
        for attribute in ("_client", "_jump"):
            client = getattr(self, attribute)
            if client is not None:
                client.close()
                setattr(self, attribute, None)

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- commands -----------------------------------------------------------------------------

    def _wrap(self, command: str) -> str:
        if self.settings.sudo and self.settings.user != "root":
            return "sudo -n sh -c " + shlex.quote(command)
        return command

    def _exec(self, command: str, feed: Callable[[paramiko.Channel], None], timeout: float,
              what: str) -> CommandResult:
        """Run ``command`` on a fresh channel, ``feed`` writing its stdin; collect the output."""
        try:
            channel = self.client().get_transport().open_session(timeout=self.settings.timeout)
            channel.settimeout(timeout)
            channel.exec_command(self._wrap(command))
            feed(channel)
            channel.shutdown_write()
            stdout, stderr = _drain(channel, timeout)
            rc = channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError, socket.timeout) as error:
            self.close()
            raise OperationError(f"{self.host.name}: {what} lost the SSH session:"
                                 f" {error or type(error).__name__}") from None
        result = CommandResult(command, rc, stdout.decode(errors="replace"),
                               stderr.decode(errors="replace"))
        tail = result.stderr.strip()[-500:]
        self._log(f"  -> exit {rc}" + (f"; stderr: {tail}" if tail else ""))
        return result

    def run(self, command: str, *, stdin: bytes | None = None, timeout: float = 600,
            check: bool = True) -> CommandResult:
        """Run an sh command line; ``stdin`` bytes are fed to it (and never logged)."""
        self._log(f"$ {command}")
        result = self._exec(command, lambda channel: stdin is not None and channel.sendall(stdin),
                            timeout, f"`{_short(command)}`")
        if check and not result.ok:
            raise CommandFailed(self.host.name, result)
        return result

    def upload(self, source: IO[bytes], remote_path: str, size: int,
               progress: Callable[[int], None] | None = None, timeout: float = 3600) -> None:
        """Append ``size`` bytes read from ``source`` to ``remote_path`` (resume by offset)."""
        command = "cat >> " + shlex.quote(remote_path)
        chunks = blocks(source, size, f"{self.host.name}: the source of {remote_path}")
        result = self.feed(command, chunks, progress=progress, timeout=timeout,
                           what=f"upload of {remote_path}", note=f"{size} bytes")
        if not result.ok:
            raise CommandFailed(self.host.name, result)

    def feed(self, command: str, blocks: Iterable[bytes], *, progress: Callable[[int], None] | None = None,
             timeout: float = 3600, what: str = "", note: str = "streamed") -> CommandResult:
        """Run ``command`` with ``blocks`` streamed to its stdin; the result, not checked."""
        self._log(f"$ {command}  # {note}")

        def send(channel: paramiko.Channel) -> None:
            for block in blocks:
                channel.sendall(block)
                if progress:
                    progress(len(block))

        return self._exec(command, send, timeout, what or f"`{_short(command)}`")


def blocks(source: IO[bytes], size: int, what: str) -> Iterator[bytes]:
    """Exactly ``size`` bytes of ``source`` in CHUNK-sized blocks; OperationError naming
    ``what`` if it ends early."""
    remaining = size
    while remaining > 0:
        block = source.read(min(CHUNK, remaining))
        if not block:
            raise OperationError(f"{what} ended early")
        remaining -= len(block)
        yield block


def _drain(channel: paramiko.Channel, timeout: float) -> tuple[bytes, bytes]:
    """Read stdout and stderr to the end without either filling up (bounded by ``timeout``)."""
    stdout, stderr = bytearray(), bytearray()
    deadline = time.monotonic() + timeout
    exited_at: float | None = None
    while True:
        progressed = False
        while channel.recv_ready():
            stdout += channel.recv(CHUNK)
            progressed = True
        while channel.recv_stderr_ready():
            stderr += channel.recv_stderr(CHUNK)
            progressed = True
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            # sshd may send the exit status before the last output (it reports the child's
            # exit as soon as it reaps it): the end is the channel's EOF. A command that left
            # a process holding its output gets EOF_GRACE seconds, not a hang.
            exited_at = exited_at or time.monotonic()
            if channel.eof_received or time.monotonic() - exited_at > EOF_GRACE:
                break
        if time.monotonic() > deadline:
            channel.close()
            raise socket.timeout(f"no end after {timeout:.0f} s")
        if not progressed:
            time.sleep(0.005)
    return bytes(stdout), bytes(stderr)

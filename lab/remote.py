"""SSH from the admin host to a lab node, host key checked against the lab's known_hosts.

A thin paramiko wrapper for the lab's own use and for tests; kubeferry's installer has its
own connection code and only needs ``Site.known_hosts_file`` and ``Site.ssh_key``.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

import paramiko

from kubeferry.errors import OperationError

CONNECT_TIMEOUT = 10.0
COMMAND_TIMEOUT = 120.0


@dataclass(frozen=True)
class Result:
    """What a remote command did."""

    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


class CommandError(OperationError):
    """A remote command exited non-zero; ``result`` says how."""

    def __init__(self, host: str, result: Result):
        detail = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        super().__init__(f"{host}: '{result.command}' exited {result.exit_status}: {detail}")
        self.result = result


class Connection:
    """One SSH session to one address; reconnects when the transport has dropped."""

    def __init__(
        self, address: str, key_file: Path, known_hosts: Path, user: str = "root", port: int = 22
    ):
        self.address = address
        self.key_file = key_file
        self.known_hosts = known_hosts
        self.user = user
        self.port = port
        self._client: paramiko.SSHClient | None = None

    def client(self) -> paramiko.SSHClient:
        """A connected client, checking the host key against ``known_hosts`` (never TOFU)."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return self._client
            self._client.close()
        client = paramiko.SSHClient()
        client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                self.address,
                port=self.port,
                username=self.user,
                key_filename=str(self.key_file),
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
                allow_agent=False,
                look_for_keys=False,
            )
        except (paramiko.SSHException, OSError) as error:
            client.close()
            raise OperationError(f"ssh {self.user}@{self.address}: {error}") from error
        self._client = client
        return client

    def run(
        self, command: str, *, check: bool = True, timeout: float = COMMAND_TIMEOUT,
        stdin: bytes | None = None,
    ) -> Result:
        """Run ``command`` (a shell string: quote its arguments) and wait at most ``timeout``."""
        client = self.client()
        try:
            channel_in, channel_out, channel_err = client.exec_command(command, timeout=timeout)
            if stdin is not None:
                channel_in.write(stdin)
            channel_in.channel.shutdown_write()
            out = channel_out.read().decode(errors="replace")
            err = channel_err.read().decode(errors="replace")
            status = channel_out.channel.recv_exit_status()
        except (socket.timeout, TimeoutError) as error:
            raise OperationError(
                f"{self.address}: '{command}' did not finish in {timeout:.0f}s"
            ) from error
        except (paramiko.SSHException, OSError) as error:
            raise OperationError(f"{self.address}: '{command}': {error}") from error
        result = Result(command, status, out, err)
        if check and not result.ok:
            raise CommandError(self.address, result)
        return result

    def put(self, local: Path, remote: str) -> None:
        """Copy a file to the node over SFTP."""
        client = self.client()
        sftp = client.open_sftp()
        try:
            sftp.get_channel().settimeout(COMMAND_TIMEOUT)
            sftp.put(str(local), remote)
        except (paramiko.SSHException, OSError) as error:
            raise OperationError(f"{self.address}: copying {local} to {remote}: {error}") from error
        finally:
            sftp.close()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

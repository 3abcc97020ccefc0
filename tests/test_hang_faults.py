"""A server that accepts connections and never answers: every command fails within its
stated timeouts, says what it waits for, and ends with one error line (issue 15)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest
from bad_input_helpers import SECRET, small_bundle

from kubeferry.timeouts import TIMEOUT_RETRIES

KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]
CONNECT, READ = 1.0, 2.0
# the stated bound: (retries + 1) x (connect + read) per request, plus backoff and start-up
BOUND = (TIMEOUT_RETRIES + 1) * (CONNECT + READ) + 10


class HangServer:
    """Accepts TCP connections on loopback and never sends a byte."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            self.held.append(conn)

    def __enter__(self) -> HangServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for conn in self.held:
            conn.close()
        self.listener.close()


@pytest.fixture
def hang() -> Iterator[HangServer]:
    with HangServer() as server:
        yield server


def run(*args: str, stdin: str = "") -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ}
    env.pop("KUBEFERRY_DEBUG", None)
    started = time.monotonic()
    result = subprocess.run([*KUBEFERRY, *args, "--connect-timeout", str(CONNECT),
                             "--read-timeout", str(READ)], input=stdin, capture_output=True,
                            text=True, timeout=BOUND * 4, env=env)
    return result, time.monotonic() - started


def assert_bounded_failure(result: subprocess.CompletedProcess, seconds: float, where: str) -> None:
    assert result.returncode == 1, result.stderr
    assert seconds < BOUND, f"took {seconds:.1f} s: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    waiting = [line for line in lines if "waiting for" in line]
    errors = [line for line in lines if "waiting for" not in line]
    assert waiting and where in waiting[0] and "timeout 2 s; --read-timeout" in waiting[0], result.stderr
    assert len(errors) == 1 and where in errors[0] and "timeout" in errors[0], result.stderr
    assert "Traceback" not in result.stderr and SECRET not in result.stdout + result.stderr


def test_build_against_a_hanging_registry(hang: HangServer, tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{hang.port}"
    result, seconds = run("bundle", "build", "--k8s", "1.25.0", "--include", "images",
                          "--mirror", f"registry.k8s.io={url}", "--mirror", f"docker.io={url}",
                          "--cache-dir", str(tmp_path / "c"), "--output", str(tmp_path / "o"))
    assert_bounded_failure(result, seconds, f"127.0.0.1:{hang.port}")


def test_build_against_a_hanging_file_server(hang: HangServer, tmp_path: Path) -> None:
    sources = tmp_path / "s.yaml"
    sources.write_text(f"files: {{calico.yaml: 'http://127.0.0.1:{hang.port}/calico.yaml'}}\n")
    result, seconds = run("bundle", "build", "--k8s", "1.25.0", "--include", "files",
                          "--sources", str(sources),
                          "--cache-dir", str(tmp_path / "c"), "--output", str(tmp_path / "o"))
    assert_bounded_failure(result, seconds, f"127.0.0.1:{hang.port}")


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_seed_into_a_hanging_harbor(hang: HangServer, tmp_path: Path, scheme: str) -> None:
    bundle = small_bundle(tmp_path / "b")
    extra = ["--send-password-over-plain-http"] if scheme == "http" else []
    result, seconds = run("harbor", "seed", "--bundle", str(bundle), "--harbor",
                          f"{scheme}://127.0.0.1:{hang.port}", "--password-stdin", *extra,
                          stdin=SECRET + "\n")
    assert_bounded_failure(result, seconds, f"127.0.0.1:{hang.port}")


def test_install_against_a_hanging_ssh_server(hang: HangServer, tmp_path: Path) -> None:
    """An sshd that accepts and never sends its banner: ssh.timeout bounds it, and it says so."""
    from bad_input_helpers import inventory_yaml

    key = tmp_path / "id_ed25519"
    key.write_text("not really a key\n")
    inventory = tmp_path / "cluster.yaml"
    inventory.write_text(inventory_yaml(key, **{
        "cluster.controlPlaneEndpoint": "127.0.0.1:6443", "ssh.port": hang.port, "ssh.timeout": READ,
        "hosts": [{"name": "master1", "address": "127.0.0.1", "roles": ["control-plane"]}]}))
    bundle = small_bundle(tmp_path / "b")
    started = time.monotonic()
    result = subprocess.run([*KUBEFERRY, "install", "--bundle", str(bundle), "--inventory", str(inventory),
                             "--plan", "--only", "preflight", "--run-dir", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=BOUND * 4)
    seconds = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    assert seconds < BOUND, f"took {seconds:.1f} s: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert any("waiting for SSH to master1" in line and "ssh.timeout" in line for line in lines), lines
    assert "master1" in lines[-1] and "Traceback" not in result.stderr
    assert "SSH timed out after 2 s" in (tmp_path / "runs" / "master1.log").read_text()

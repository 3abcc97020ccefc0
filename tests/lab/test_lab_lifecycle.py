"""Bringing sites up and down: repeatable, crash-proof, and leaving nothing behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from kubeferry.errors import OperationError
from kubeferry.lab import leftovers, node, paths, proc
from kubeferry.lab.site import Site

pytestmark = [pytest.mark.real, pytest.mark.lab]


def _kubeferry_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kubeferry.lab", *args],
        capture_output=True, text=True, timeout=300, check=False,
    )


def test_up_twice_is_a_no_op_and_down_twice_is_safe(lab_site_factory) -> None:
    forward = Path("/proc/sys/net/ipv4/ip_forward").read_text()
    site = lab_site_factory(nodes=1)
    pid = site.init_pid(site.nodes[0])
    again = Site.up(nodes=1, name=site.name)
    assert again.init_pid(again.nodes[0]) == pid  # the same node, not a new one
    with pytest.raises(Exception, match="is up with 1 nodes on .*, not 2"):
        Site.up(nodes=2, name=site.name)
    with pytest.raises(Exception, match=r"\(debian12, registry .*\), not 1 on .* \(el8, "):
        Site.up(nodes=1, name=site.name, os_name="el8")  # another node OS: down first
    site.down()
    assert leftovers.find(site.name) == []
    site.down()  # a second down from the same object: nothing to do
    assert Site.down_named(site.name) is False
    assert leftovers.find(site.name) == []
    assert Path("/proc/sys/net/ipv4/ip_forward").read_text() == forward  # never touched


def test_down_cleans_up_after_a_crashed_node(lab_site_factory) -> None:
    site = lab_site_factory(nodes=2)
    victim = site.nodes[0]
    os.kill(site.init_pid(victim), signal.SIGKILL)  # the node's systemd, and with it the node
    assert proc.wait_until(lambda: not site.healthy(), 10)
    assert [r["state"] for r in site.status()] == ["down", "ssh"]
    assert Site.down_named(site.name) is True
    assert leftovers.find(site.name) == []


def test_up_rebuilds_a_site_whose_node_crashed(lab_site_factory) -> None:
    site = lab_site_factory(nodes=1)
    old = site.init_pid(site.nodes[0])
    os.kill(old, signal.SIGKILL)
    assert proc.wait_until(lambda: not site.healthy(), 10)
    again = Site.up(nodes=1, name=site.name)
    assert again.init_pid(again.nodes[0]) != old
    assert again.nodes[0].ssh("systemctl is-system-running --wait", check=False).stdout.strip() in (
        "running", "degraded")
    again.down()
    assert leftovers.find(site.name) == []


def test_an_up_that_fails_half_way_is_cleaned_by_down(monkeypatch) -> None:
    name = f"x{os.getpid() % 100000}"

    def broken(*_args, **_kwargs):
        raise OperationError("simulated: node did not come up")

    monkeypatch.setattr(node, "wait_ready", broken)
    try:
        with pytest.raises(OperationError, match="simulated"):
            Site.up(nodes=2, name=name)
        # The nodes were booted before the failure: their processes, namespaces and links
        # are there, and recorded.
        assert any(thing.startswith("process ") for thing in leftovers.find(name))
        assert (paths.run_dir() / name / "state.json").exists()
    finally:
        Site.down_named(name)
    assert leftovers.find(name) == []


def test_the_command_line_up_status_ssh_down(tmp_path) -> None:
    name = f"c{os.getpid() % 100000}"
    try:
        up = _kubeferry_lab("up", "--nodes", "1", "--name", name)
        assert up.returncode == 0, up.stderr
        assert "node1" in up.stdout and "ssh" in up.stdout
        status = _kubeferry_lab("status", "--name", name)
        assert status.returncode == 0 and "node1" in status.stdout
        ssh = _kubeferry_lab("ssh", "--name", name, "node1", "cat", "/etc/hostname")
        assert (ssh.returncode, ssh.stdout.strip()) == (0, "node1"), ssh.stderr
        missing = _kubeferry_lab("ssh", "--name", name, "node9")
        assert missing.returncode == 2 and "no node 'node9'" in missing.stderr
    finally:
        down = _kubeferry_lab("down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert leftovers.find(name) == []
    again = _kubeferry_lab("down", "--name", name)
    assert again.returncode == 0 and "was not up" in again.stderr
    gone = _kubeferry_lab("status", "--name", name)
    assert gone.returncode == 1 and "not up" in gone.stderr


def test_a_site_whose_owner_died_is_found_abandoned() -> None:
    name = f"o{os.getpid() % 100000}"
    owner = subprocess.Popen(["sleep", "300"])
    try:
        Site.up(nodes=1, name=name, owner=owner.pid)
        assert name not in Site.abandoned()
        owner.kill()
        owner.wait(timeout=10)
        assert name in Site.abandoned()  # what the fixtures clean before a new session
    finally:
        owner.kill()
        owner.wait(timeout=10)
        Site.down_named(name)
    assert leftovers.find(name) == []


def test_down_cleans_up_after_up_itself_was_killed() -> None:
    """SIGKILL the `up` command as soon as its first node is booting: `down` still finishes."""
    name = f"k{os.getpid() % 100000}"
    state = paths.run_dir() / name / "state.json"
    up = subprocess.Popen([sys.executable, "-m", "kubeferry.lab", "up", "--nodes", "3",
                           "--name", name], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def booting() -> bool:
        try:
            resources = json.loads(state.read_text())["resources"]
        except (OSError, ValueError, KeyError):
            return False
        return any(r.get("role") == "init" and r.get("pid") for r in resources)

    try:
        assert proc.wait_until(booting, 120, interval=0.02)
        up.kill()
        up.wait(timeout=10)
        assert leftovers.find(name)  # a half-made site is there...
    finally:
        up.kill()
        up.wait(timeout=10)
        assert Site.down_named(name) is True
    assert leftovers.find(name) == []  # ...and down removed all of it

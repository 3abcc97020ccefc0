"""The lab's pieces that need no root: recipe hashing, the journal, names, rules, input checks."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubeferry import manifests
from kubeferry.errors import InputError, OperationError
from kubeferry.lab import leftovers, network, node, rootfs
from kubeferry.lab.journal import Journal
from kubeferry.lab.site import Site
from kubeferry.lab.upstream_packages import BUNDLED_REFERENCE
from kubeferry.versions import calico_release


def test_recipe_hash_follows_packages_and_setup_steps() -> None:
    recipe = rootfs.Recipe.default()
    assert recipe.suite == "bookworm"
    for needed in ("systemd", "systemd-sysv", "openssh-server", "containerd", "runc",
                   "iproute2", "iptables", "kmod", "ca-certificates"):
        assert needed in recipe.packages
    assert recipe.digest() == rootfs.Recipe.default().digest()
    more = dataclasses.replace(recipe, packages=(*recipe.packages, "chrony"))
    script = dataclasses.replace(recipe, setup_script=recipe.setup_script + "\ntrue\n")
    digests = {recipe.digest(), more.digest(), script.digest()}
    assert len(digests) == 3
    assert rootfs.base_path(recipe, Path("/c")) == Path(f"/c/base-bookworm-{recipe.digest()}")


def test_recipe_carries_the_doubles_python_and_their_recipe_id() -> None:
    from kubeferry.lab.doubles_recipe import BASE_PACKAGES, RECIPE_ID

    recipe = rootfs.Recipe.default()
    assert set(BASE_PACKAGES) <= set(recipe.packages)
    assert len(recipe.packages) == len(set(recipe.packages))
    assert recipe.doubles == RECIPE_ID
    assert dataclasses.replace(recipe, doubles=RECIPE_ID + "+1").digest() != recipe.digest()


def test_journal_records_before_and_forgets_after(tmp_path: Path) -> None:
    path = tmp_path / "site" / "state.json"
    journal = Journal.create(path, {"name": "x"})
    first = journal.add("link", name="kf-x")
    second = journal.add("process", node="node1")
    journal.update(second, pid=42)
    on_disk = Journal.load(path)
    assert on_disk is not None
    assert on_disk.site == {"name": "x"}
    assert on_disk.resources == [{"kind": "link", "name": "kf-x"},
                                 {"kind": "process", "node": "node1", "pid": 42}]
    journal.discard(first)
    assert [r["kind"] for r in Journal.load(path).resources] == ["process"]  # type: ignore[union-attr]
    assert not list(path.parent.glob(".*.tmp"))
    assert Journal.load(tmp_path / "none.json") is None
    path.write_text("{half")
    with pytest.raises(OperationError, match="not valid JSON"):
        Journal.load(path)
    path.write_text(json.dumps({"format": 99}))
    with pytest.raises(OperationError, match="unknown format"):
        Journal.load(path)


def test_interface_names_fit_the_kernel_limit_and_never_collide() -> None:
    longest = "abcdefgh"
    for name in (leftovers.bridge_name(longest), leftovers.link_name(longest, "n", 50),
                 leftovers.link_name(longest, "h", 10)):
        assert len(name) <= 15, name
    # Site names have no '-': one site's prefix never matches another site's names.
    assert not leftovers.link_name("lab1", "n", 1).startswith("kf-lab-")
    assert leftovers.bridge_name("lab") != leftovers.bridge_name("lab1")


def test_firewall_keeps_lab_traffic_inside_and_nodes_off_the_admin_host() -> None:
    rules = network.firewall_rules("kf-lab", "kubeferry-lab:lab")
    chains = [(rule[0], rule[-1]) for rule in rules]
    assert chains == [("FORWARD", "kubeferry-lab:lab")] * 3 + [("INPUT", "kubeferry-lab:lab")]
    # Inserted at the top one by one: the bridge-to-bridge ACCEPT ends above both REJECTs.
    assert rules[2][1:5] == ["-i", "kf-lab", "-o", "kf-lab"] and "ACCEPT" in rules[2]
    assert "ESTABLISHED,RELATED" in rules[3] and "REJECT" in rules[3]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "Bad-Name"}, "lab name"),
        ({"name": "toolongname"}, "lab name"),
        ({"nodes": 0}, "--nodes"),
        ({"nodes": 51}, "--nodes"),
        ({"subnet": "10.88.0.0/28"}, "too small"),
        ({"subnet": "banana"}, "not an IPv4 network"),
    ],
)
def test_bad_input_is_refused_before_anything_is_made(kwargs, message) -> None:
    with pytest.raises(InputError, match=message):
        Site.up(**kwargs)


def test_shaping_validates_its_arguments() -> None:
    with pytest.raises(InputError, match="tc rate"):
        network.shape("kf-x-n1", "kf-x-node1", rate="fast", delay=None)
    with pytest.raises(InputError, match="tc time"):
        network.shape("kf-x-n1", "kf-x-node1", rate=None, delay="soon")


def test_command_line_input_errors_are_one_line_exit_2() -> None:
    for args in (["up", "--name", "NO!"], ["up", "--nodes", "0"], ["up", "--subnet", "x"],
                 ["bogus"]):
        result = subprocess.run([sys.executable, "-m", "kubeferry.lab", *args],
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 2, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr


def test_builtin_module_index_lists_only_what_the_kernel_builds_in() -> None:
    lines = node.builtin_modules()
    if lines is None:  # a kernel with loadable modules: nodes get the host's /lib/modules
        assert Path("/lib/modules", os.uname().release).is_dir()
        return
    table = manifests.load("lab-base")["builtin_modules"]
    assert set(lines) <= {entry["path"] for entry in table.values()}


def test_the_bundled_reference_copies_are_the_pinned_files() -> None:
    """lab/reference stands in for ../shared/reference in a bare clone: same bytes."""
    def sha256(name: str) -> str:
        return hashlib.sha256((BUNDLED_REFERENCE / name).read_bytes()).hexdigest()

    assert sha256("calico-v3.24.5.yaml") == calico_release("v3.24.5").manifest_sha256
    assert sha256("harbor-v2.6.0-swagger.yaml") == (
        "b5cac93db920c1e33b85ce558644cbc3c672ca823664c699e4466031ada6d9c4")  # Harbor v2.6.0


def test_airgap_rules_and_the_demo_line() -> None:
    import ipaddress

    from kubeferry.lab import airgap

    rules = airgap.rules(ipaddress.IPv4Network("10.88.5.0/24"), "10.88.5.1")
    assert rules[0] == ["OUTPUT", "-o", "lo", "-j", "RETURN"]  # loopback first, never counted
    assert ["OUTPUT", "-d", "224.0.0.0/24", "-j", "RETURN"] in rules  # VRRP stays on the link
    assert ["OUTPUT", "!", "-d", "10.88.5.0/24", "-j", airgap.CHAIN] in rules
    to_internet_side = [r for r in rules if "10.88.5.1/32" in r]
    assert ["OUTPUT", "-d", "10.88.5.1/32", "-p", "tcp", "--syn", "-j", airgap.CHAIN] in to_internet_side
    assert "ESTABLISHED,RELATED" in to_internet_side[1]  # SSH replies (and late FINs) to .1 pass
    assert airgap.summary({"node1": 0, "admin": 0}) == "air gap held: 0 packets tried to leave the site"
    assert airgap.summary({"node1": 1}) == "air gap held: 1 packet tried to leave the site (node1 1)"
    assert airgap.summary({"node1": 2, "harbor": 0, "admin": 3}) == (
        "air gap held: 5 packets tried to leave the site (node1 2, admin 3)")

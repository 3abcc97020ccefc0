"""The doubles' side of the lab's nodes: Python for the doubles but never on a node's PATH,
their configuration, and one cluster state directory shared by every node of a site."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml

from kubeferry.lab.double_state import ClusterRecord
from kubeferry.lab.doubles_recipe import DOUBLE_CONF, INTERPRETER, STATE_DIR
from kubeferry.lab.remote import Connection
from kubeferry.lab.site import Site
from kubeferry.lab.standin_packages import build_debs

pytestmark = [pytest.mark.real, pytest.mark.lab]

NO_PYTHON = "command -v python3 python3.11 python pydoc3 py3compile"


def test_python_is_off_every_nodes_path_but_the_doubles_have_it(lab_site: Site) -> None:
    for node in lab_site.nodes:
        found = node.ssh(NO_PYTHON, check=False)
        assert found.exit_status != 0 and found.stdout == "", f"{node.name}: {found.stdout}"
        # the interpreter the doubles' shebang names, with the YAML module they read
        private = node.ssh(f"{INTERPRETER} -c 'import yaml, ssl; print(yaml.__name__)'")
        assert private.stdout.strip() == "yaml"
        assert node.ssh("command -v openssl").stdout.strip() == "/usr/bin/openssl"
    user = Connection(lab_site.nodes[0].address, lab_site.ssh_key, lab_site.known_hosts_file,
                      user=lab_site.sudo_user)
    try:  # a login shell of the sudo user, and sudo's secure_path, see no python either
        assert user.run(f"bash -lc {shlex.quote(NO_PYTHON)}", check=False).exit_status != 0
        assert user.run(f"sudo -n sh -c {shlex.quote(NO_PYTHON)}", check=False).exit_status != 0
    finally:
        user.close()


def test_every_node_has_the_doubles_configuration(lab_site: Site) -> None:
    assert lab_site.registry_name == "harbor.lab"
    assert lab_site.registry_address == str(lab_site.subnet.network_address + 2)
    for node in lab_site.nodes:
        conf = yaml.safe_load(node.ssh(f"cat {DOUBLE_CONF}").stdout)
        assert conf["state_dir"] == STATE_DIR
        assert conf["run_control_plane"] is True


def test_the_cluster_state_is_one_directory_for_all_nodes(lab_site: Site) -> None:
    state = lab_site.cluster_state
    assert state.is_dir() and state.parent == lab_site.data_directory
    marker = state / "shared-by-test"
    try:
        for node in lab_site.nodes:
            node.ssh(f"echo {node.name} >> {STATE_DIR}/shared-by-test")
        assert marker.read_text().split() == [n.name for n in lab_site.nodes]
        for node in lab_site.nodes:
            seen = node.ssh(f"cat {STATE_DIR}/shared-by-test").stdout.split()
            assert seen == [n.name for n in lab_site.nodes]
    finally:
        marker.unlink(missing_ok=True)


def test_standin_packages_install_on_a_node(lab_site_factory, tmp_path: Path) -> None:
    """dpkg -i of the stand-in debs (their Debian dependencies are not on a bare node:
    --force-depends; the bundle tests install the real closure with apt)."""
    site = lab_site_factory(nodes=2)
    debs = build_debs("1.25.0", tmp_path / "debs")
    node1, node2 = site.nodes
    node1.ssh("mkdir -p /tmp/standin")
    for deb in debs:
        node1.put(deb, f"/tmp/standin/{deb.name}")
    node1.ssh("dpkg --force-depends -i /tmp/standin/*.deb", timeout=300)

    assert node1.ssh("kubeadm version -o short").stdout.strip() == "v1.25.0"
    assert node1.ssh("systemctl cat kubelet.service").exit_status == 0
    assert "10-kubeadm.conf" in node1.ssh("systemctl cat kubelet.service").stdout
    assert node1.ssh(NO_PYTHON, check=False).exit_status != 0, "packages brought python back"

    # the invocation is in the state every node (and the admin host) shares
    record = ClusterRecord(site.cluster_state)
    calls = record.invocations(program="kubeadm")
    assert [(c["node"], c["argv"], c["exit_code"]) for c in calls] == [
        ("node1", ["kubeadm", "version", "-o", "short"], 0)]
    on_node2 = node2.ssh(f"cat {STATE_DIR}/invocations.jsonl").stdout
    assert '"program": "kubeadm"' in on_node2 and '"node": "node1"' in on_node2
    assert node2.ssh("command -v kubeadm", check=False).exit_status != 0

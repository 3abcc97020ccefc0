"""The stand-in on the lab's service host (.2:443), seeded from the admin host, pulled from by
a node's containerd through certs.d/<harbor>/hosts.toml and the lab CA: the site's registry
path end to end, inside the air gap."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Callable

import pytest
from harbor_helpers import settings_for

from kubeferry.bundle.reader import Bundle
from kubeferry.installer.harbor_names import harbor_name
from kubeferry.installer.harbor_seed import seed
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.node import Node
from kubeferry.lab.site import HARBOR_HOST, Site

pytestmark = [pytest.mark.real, pytest.mark.lab]
NAME = "harbor.kubeferry.lab"
CERTS = "/etc/containerd/certs.d"


def trust(node: Node, host: str, ca_file: str) -> None:
    """What the containerd phase writes: hosts.toml for ``host`` with the Harbor CA."""
    directory = f"{CERTS}/{host}"
    node.ssh(f"mkdir -p {shlex.quote(directory)}")
    node.put(Path(ca_file), f"{directory}/ca.crt")
    hosts_toml = (f'server = "https://{host}"\n\n[host."https://{host}"]\n'
                  f'  capabilities = ["pull", "resolve"]\n  ca = "{directory}/ca.crt"\n'
                  "  skip_verify = false\n")
    node.ssh(f"cat > {shlex.quote(directory)}/hosts.toml", stdin=hosts_toml.encode())


def pull(node: Node, name: str, hosts_dir: str = CERTS) -> str:
    command = (f"ctr -n k8s.io images pull --hosts-dir {shlex.quote(hosts_dir)} {shlex.quote(name)}"
               " 2>&1")
    return node.ssh(command, check=False, timeout=120).stdout


def errors(out: str) -> list[str]:
    """The error lines of a ctr pull, less its progress display's own: once the pull is
    done, ctr's status poller can log `active check failed ... context canceled`."""
    return [line for line in out.lower().splitlines() if "error" in line
            and not ('msg="active check failed"' in line and 'error="context canceled"' in line)]


def test_a_node_pulls_from_the_stand_in_on_its_service_host(
        lab_site_factory: Callable[..., Site], bundle: Bundle, tmp_path: Path) -> None:
    site = lab_site_factory(nodes=1)
    host = site.add_host("harbor", HARBOR_HOST)
    harbor = HarborStandIn(tmp_path / "harbor", addr=host.address, port=443,
                           hostnames=(NAME,)).start_on(host)
    assert harbor.url == f"https://{host.address}"
    settings = settings_for(harbor)
    result = seed(bundle, settings, harbor.admin_password)  # from the admin host, over the bridge
    assert result.manifests_pushed == 12  # 11 images + the coredns alias

    node = site.nodes[0]
    trust(node, host.address, harbor.ca_file)
    pause = harbor_name("registry.k8s.io/pause:3.8", settings)
    out = pull(node, pause)
    assert "done" in out and not errors(out), out
    # by the DNS name the os phase writes to /etc/hosts; the token realm follows that name
    node.ssh(f"echo {shlex.quote(f'{host.address} {NAME}')} >> /etc/hosts")
    trust(node, NAME, harbor.ca_file)
    coredns = f"{NAME}/google_containers/coredns:v1.9.3"  # kubeadm's flat coredns path
    out = pull(node, coredns)
    assert "done" in out and not errors(out), out
    listed = node.ssh("ctr -n k8s.io images ls").stdout
    digests = {image["name"]: image["digest"] for image in bundle.images}
    for name, upstream in ((pause, "registry.k8s.io/pause:3.8"),
                           (coredns, "registry.k8s.io/coredns/coredns:v1.9.3")):
        line = next(line for line in listed.splitlines() if line.startswith(name + " "))
        assert digests[upstream] in line, line
    # the CA is what makes it work: without it containerd refuses the certificate
    node.ssh("mkdir -p /tmp/no-ca/" + shlex.quote(NAME) + " && printf '%s\\n' "
             + shlex.quote(f'server = "https://{NAME}"') + " > /tmp/no-ca/" + shlex.quote(NAME)
             + "/hosts.toml")
    refused = pull(node, f"{NAME}/google_containers/etcd:3.5.4-0", hosts_dir="/tmp/no-ca")
    assert "certificate" in refused and "done" not in refused, refused

    served = harbor.requests_file.read_text().splitlines()  # written by the service host's process
    assert "HEAD /v2/google_containers/pause/manifests/3.8 200" in served  # after the token dance
    assert any(line.startswith("GET /v2/google_containers/pause/blobs/sha256:") for line in served)
    harbor.stop()
    assert "harbor stand-in stopped" in harbor.log_file.read_text()  # SIGTERM: a clean stop

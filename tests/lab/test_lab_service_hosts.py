"""Service hosts (where the Harbor stand-in will run): an address on the bridge, processes."""

from __future__ import annotations

import socket
import sys

import pytest

from kubeferry.errors import InputError, OperationError
from kubeferry.lab import leftovers
from kubeferry.lab.site import HARBOR_HOST, Site

pytestmark = [pytest.mark.real, pytest.mark.lab]

SERVE = "import http.server as s; s.test(s.SimpleHTTPRequestHandler, port=8080, bind='{}')"


def test_a_service_host_serves_nodes_and_down_stops_it(lab_site_factory, tmp_path) -> None:
    site = lab_site_factory(nodes=1)
    host = site.add_host("harbor", HARBOR_HOST)
    assert host.address == str(site.subnet.network_address + 2)
    assert site.add_host("harbor") is host  # asking again gives the same host
    with pytest.raises(InputError, match="already taken"):
        site.add_host("other", HARBOR_HOST)
    with pytest.raises(InputError, match="use 2-10"):
        site.add_host("vip", 100)

    (tmp_path / "hello.txt").write_text("hello from the site\n")
    def listening() -> bool:
        try:
            with socket.create_connection((host.address, 8080), timeout=1):
                return True
        except OSError:
            return False

    server = host.start([sys.executable, "-c", SERVE.format(host.address)],
                        log=tmp_path / "server.log", cwd=tmp_path, ready=listening)
    node = site.nodes[0]
    out = node.ssh(f"timeout 10 bash -c 'exec 3<>/dev/tcp/{host.address}/8080; "
                   "printf \"GET /hello.txt HTTP/1.0\\r\\n\\r\\n\" >&3; cat <&3'").stdout
    assert out.endswith("hello from the site\n"), out

    reloaded = Site.load(site.name)
    assert reloaded is not None and reloaded.hosts["harbor"].address == host.address
    assert ("harbor", "up") in [(r["name"], r["state"]) for r in reloaded.status()]

    site.down()  # stops the server by its recorded pid, removes the host's namespace
    assert server.wait(timeout=10) is not None
    assert leftovers.find(site.name) == []


def test_a_service_process_can_be_stopped_before_down(lab_site_factory, tmp_path) -> None:
    site = lab_site_factory(nodes=1)
    host = site.add_host("svc", 3)
    sleeper = host.start(["sleep", "300"], log=tmp_path / "sleep.log")
    host.stop(sleeper)
    with pytest.raises(OperationError, match="boom"):
        host.start(["sh", "-c", "echo boom; exit 3"], log=tmp_path / "boom.log",
                   ready=lambda: False, ready_timeout=10)
    assert sleeper.returncode is not None
    assert not any(r["kind"] == "process" and r.get("pid") == sleeper.pid
                   for r in site.journal.resources)
    site.down()
    assert leftovers.find(site.name) == []

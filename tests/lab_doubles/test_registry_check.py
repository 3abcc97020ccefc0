"""The doubles' registry check reads containerd's hosts.toml (CA, server) and does Harbor's token dance."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from kubeferry.lab.registry import Registry
from kubeferry.lab.standin_images import push_image
from kubeferry.lab.token_service import TokenService

DOUBLES = Path(__file__).resolve().parents[2] / "lab" / "doubles"


@pytest.fixture
def doublelib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.syspath_prepend(str(DOUBLES))
    monkeypatch.setenv("KUBEFERRY_DOUBLE_ROOT", str(tmp_path / "node"))
    monkeypatch.setenv("KUBEFERRY_DOUBLE_STATE", str(tmp_path / "state"))
    import doublelib

    yield doublelib
    sys.modules.pop("doublelib", None)


def test_head_through_hosts_toml_with_lab_ca_and_anonymous_token(doublelib, tmp_path: Path) -> None:
    with (
        TokenService(tmp_path / "token", users={"admin": "s3cret"}, anonymous_pull=True) as service,
        Registry(tmp_path / "registry", tls=True, token=service) as registry,
    ):
        push_image(
            registry.url,
            "google_containers/pause",
            "3.8",
            [b"pause"],
            shape="oci-manifest",
            ca_file=registry.ca_file,
            auth=("admin", "s3cret"),
        )
        certs = tmp_path / f"node/etc/containerd/certs.d/{registry.host}"
        certs.mkdir(parents=True)
        shutil.copy2(registry.ca_file, certs / "ca.crt")
        hosts = (
            f'server = "https://{registry.host}"\n\n[host."https://{registry.host}"]\n'
            '  capabilities = ["pull", "resolve"]\n'
            f'  ca = "/etc/containerd/certs.d/{registry.host}/ca.crt"\n'
        )
        (certs / "hosts.toml").write_text(hosts)
        env = doublelib.Env()
        hosts_dir = str(tmp_path / "node/etc/containerd/certs.d")
        assert doublelib.manifest_exists(env, hosts_dir, f"{registry.host}/google_containers/pause:3.8") == ""
        assert any(r.username is None for r in service.requests), "anonymous pull token"
        missing = doublelib.manifest_exists(env, hosts_dir, f"{registry.host}/google_containers/pause:9.9")
        assert missing.endswith("/v2/google_containers/pause/manifests/9.9: 404")
        (certs / "hosts.toml").write_text(
            hosts.replace(f'  ca = "/etc/containerd/certs.d/{registry.host}/ca.crt"\n', "")
        )
        untrusted = doublelib.manifest_exists(env, hosts_dir, f"{registry.host}/google_containers/pause:3.8")
        assert "CERTIFICATE_VERIFY_FAILED" in untrusted


def test_image_names_split_like_containerd(doublelib) -> None:
    assert doublelib.split_image("harbor.lab/google_containers/coredns:v1.9.3") == (
        "harbor.lab",
        "google_containers/coredns",
        "v1.9.3",
    )
    assert doublelib.split_image("127.0.0.1:5000/calico/node:v3.24.5") == (
        "127.0.0.1:5000",
        "calico/node",
        "v3.24.5",
    )
    assert doublelib.split_image("busybox:1.28") == ("docker.io", "library/busybox", "1.28")
    assert doublelib.split_image("calico/cni:v3.24.5") == ("docker.io", "calico/cni", "v3.24.5")

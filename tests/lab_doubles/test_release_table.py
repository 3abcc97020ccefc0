"""The doubles' own table of what each kubeadm release needs: a wrong row in kubeferry's
manifests/kubernetes.yaml (here: a wrong etcd tag) is not copied into the lab, so the
lab fails as a real site would, at kubeadm's ImagePull preflight."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from doubles_configs import dump, init_docs
from doubles_harness import PUSH_SCRIPT, REGISTRY, Lab

from kubeferry import manifests
from kubeferry.lab.standin_packages import release_row
from kubeferry.versions import image_set, supported_versions


@pytest.fixture
def wrong_etcd_row(monkeypatch: pytest.MonkeyPatch) -> str:
    """kubeferry's table as if its 1.25.0 row named etcd 3.5.5-0 (kubeadm 1.25.0 uses 3.5.4-0)."""
    load = manifests.load
    real = load("kubernetes")
    table = dict(real, releases={**real["releases"], "1.25.0": {**real["releases"]["1.25.0"], "etcd": "3.5.5-0"}})
    monkeypatch.setattr(manifests, "load", lambda name: table if name == "kubernetes" else load(name))
    return "3.5.5-0"


def test_the_doubles_table_agrees_with_kubeferrys_but_is_not_read_from_it(wrong_etcd_row: str) -> None:
    assert image_set("1.25.0").etcd == wrong_etcd_row, "kubeferry now believes the wrong row"
    assert release_row("1.25.0")["etcd"] == "3.5.4-0", "the doubles do not"
    for version in supported_versions():
        if version == "1.25.0":
            continue
        images, row = image_set(version), release_row(version)
        assert (row["repository"], row["pause"], row["etcd"], row["coredns"]) == \
            (images.kubeadm_repository, images.pause, images.etcd, images.coredns), version


def test_a_wrong_etcd_tag_in_the_manifests_fails_kubeadm_init(lab: Lab, wrong_etcd_row: str) -> None:
    """The site registry holds what a bundle built from the wrong row would hold."""
    images = image_set("1.25.0")
    names = [f"wrongrow/{name.split('/', 1)[1]}" for name in images.kubeadm_images
             if name.startswith("registry.k8s.io/") and "/coredns/" not in name]
    names.append(f"wrongrow/coredns:{images.coredns}")
    assert f"wrongrow/etcd:{wrong_etcd_row}" in names
    subprocess.run(["ip", "netns", "exec", lab.netns, sys.executable, "-c", PUSH_SCRIPT, f"http://{REGISTRY}",
                    json.dumps(names)], check=True, timeout=120, capture_output=True)
    cp1 = lab.node("cp1")
    cp1.start_kubelet()
    docs = init_docs(repository=f"{REGISTRY}/wrongrow")
    init = cp1.run("kubeadm", "init", "--config", cp1.config("init.yaml", dump(docs)))
    assert init.returncode == 1
    assert f"[ERROR ImagePull]: failed to pull image {REGISTRY}/wrongrow/etcd:3.5.4-0" in init.stderr, init.stderr
    assert lab.record.init_config() is None

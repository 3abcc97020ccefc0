"""calico.yaml rewrite against the real upstream manifest (v3.24.5, unmodified)."""

from __future__ import annotations

import difflib
import hashlib

import pytest
import yaml

from kubeferry import manifests
from kubeferry.errors import OperationError
from kubeferry.installer import calico
from kubeferry.installer.image_names import site_image
from kubeferry.installer.inventory import RegistrySettings
from kubeferry.lab.upstream_packages import reference_dir

UPSTREAM = reference_dir() / "calico-v3.24.5.yaml"
HARBOR = RegistrySettings(url="https://harbor.example.local:8443", project="google_containers")
SITE = "harbor.example.local:8443/google_containers"


def upstream() -> str:
    return UPSTREAM.read_text()


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    pairs = []
    matcher = difflib.SequenceMatcher(a=before.splitlines(), b=after.splitlines(), autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        if tag != "equal":
            assert tag == "replace" and a1 - a0 == b1 - b0, (tag, before.splitlines()[a0:a1])
            pairs += list(zip(before.splitlines()[a0:a1], after.splitlines()[b0:b1]))
    return pairs


def test_the_test_manifest_is_the_pinned_upstream_file() -> None:
    pinned = manifests.load("calico")["releases"]["v3.24.5"]["manifest"]["sha256"]
    assert hashlib.sha256(UPSTREAM.read_bytes()).hexdigest() == pinned


def test_harbor_rewrite_changes_only_images_and_the_pool() -> None:
    before = upstream()
    after = calico.rewrite(before, "10.244.0.0/16", lambda name: site_image(name, HARBOR))
    changes = changed_lines(before, after)
    assert [(a.strip(), b.strip()) for a, b in changes] == [
        (f"image: docker.io/calico/{name}:v3.24.5", f"image: {SITE}/calico/{name}:v3.24.5")
        for name in ("cni", "cni", "node", "node")
    ] + [
        ("# - name: CALICO_IPV4POOL_CIDR", "- name: CALICO_IPV4POOL_CIDR"),
        ('#   value: "192.168.0.0/16"', 'value: "10.244.0.0/16"'),
        ("image: docker.io/calico/kube-controllers:v3.24.5",
         f"image: {SITE}/calico/kube-controllers:v3.24.5"),
    ]
    for old, new in changes:  # indentation kept
        if "image:" in old:
            assert len(old) - len(old.lstrip()) == len(new) - len(new.lstrip())
    name_line, value_line = (new for old, new in changes if "#" in old)
    assert value_line.index("value") == name_line.index("- name") + 2
    assert len(after.splitlines()) == len(before.splitlines())
    node = next(doc for doc in yaml.safe_load_all(after)
                if doc and doc["kind"] == "DaemonSet" and doc["metadata"]["name"] == "calico-node")
    env = {e["name"]: e.get("value") for e in node["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"
    assert env["CALICO_DISABLE_FILE_LOGGING"] == "true"  # the neighbour entry is intact


def test_registry_none_keeps_upstream_names() -> None:
    before = upstream()
    after = calico.rewrite(before, "172.20.0.0/16", lambda name: site_image(name, None))
    assert len(changed_lines(before, after)) == 2
    assert set(calico.images(after)) == {"docker.io/calico/cni:v3.24.5", "docker.io/calico/node:v3.24.5",
                                         "docker.io/calico/kube-controllers:v3.24.5"}


def test_an_uncommented_pool_is_set_and_crlf_is_kept() -> None:
    once = calico.rewrite(upstream(), "10.244.0.0/16", lambda name: name)
    again = calico.rewrite(once.replace("\n", "\r\n"), "10.50.0.0/16", lambda name: name)
    assert '              value: "10.50.0.0/16"\r\n' in again
    assert "\n" not in again.replace("\r\n", "")


def test_a_manifest_without_the_pool_is_refused() -> None:
    text = upstream().replace("CALICO_IPV4POOL_CIDR", "SOMETHING_ELSE")
    with pytest.raises(OperationError, match="expected one CALICO_IPV4POOL_CIDR"):
        calico.rewrite(text, "10.244.0.0/16", lambda name: name)


def test_an_image_the_line_transform_misses_is_caught() -> None:
    folded = "image: >-\n            docker.io/calico/node:v3.24.5"
    text = upstream().replace("image: docker.io/calico/node:v3.24.5", folded, 1)
    with pytest.raises(OperationError, match="was not rewritten"):
        calico.rewrite(text, "10.244.0.0/16", lambda name: site_image(name, HARBOR))

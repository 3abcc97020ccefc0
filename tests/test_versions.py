"""The version data in manifests/ is complete, consistent and matches the upstream facts."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml

from kubeferry import manifests, versions
from kubeferry.errors import InputError

# Last patch release of each supported minor (all of them are out of support upstream).
LAST_PATCH = {24: 17, 25: 16, 26: 15, 27: 16, 28: 15, 29: 15, 30: 14, 31: 14}


def _row(version: str) -> dict:
    return manifests.load("kubernetes")["releases"][version]


def test_every_patch_release_of_every_minor_is_present_and_nothing_else():
    expected = [f"1.{minor}.{patch}" for minor, last in LAST_PATCH.items()
                for patch in range(last + 1)]
    assert versions.supported_versions() == expected
    assert versions.supported_range() == "1.24.0-1.31.14"


def test_rows_are_written_in_version_order_one_per_line():
    text = resources.files("kubeferry.manifests").joinpath("kubernetes.yaml").read_text()
    keys = re.findall(r"^  (\d+\.\d+\.\d+):\s+\{", text, flags=re.MULTILINE)
    assert keys == versions.supported_versions()


def test_every_value_is_a_string_of_the_expected_shape():
    # Unquoted, YAML reads pause 3.10 as 3.1: every value must arrive as a string.
    text = resources.files("kubeferry.manifests").joinpath("kubernetes.yaml").read_text()
    for version, row in yaml.safe_load(text)["releases"].items():
        assert isinstance(version, str)
        assert set(row) == {"repository", "pause", "etcd", "coredns"}, version
        assert all(isinstance(value, str) for value in row.values()), version
        assert row["repository"] in ("k8s.gcr.io", "registry.k8s.io"), version
        assert re.fullmatch(r"3\.\d+", row["pause"]), version
        assert re.fullmatch(r"3\.5\.\d+-0", row["etcd"]), version
        assert re.fullmatch(r"v1\.\d+\.\d+", row["coredns"]), version


@pytest.mark.parametrize(
    ("version", "pause", "etcd", "coredns"),
    [  # FACTS.md, "kubeadm image set per Kubernetes version"
        ("1.24.0", "3.7", "3.5.3-0", "v1.8.6"),
        ("1.25.0", "3.8", "3.5.4-0", "v1.9.3"),
        ("1.26.0", "3.9", "3.5.6-0", "v1.9.3"),
        ("1.27.0", "3.9", "3.5.7-0", "v1.10.1"),
        ("1.28.0", "3.9", "3.5.9-0", "v1.10.1"),
        ("1.29.0", "3.9", "3.5.10-0", "v1.11.1"),
        ("1.30.0", "3.9", "3.5.12-0", "v1.11.1"),
        ("1.31.0", "3.10", "3.5.15-0", "v1.11.1"),
        ("1.31.1", "3.10", "3.5.15-0", "v1.11.3"),
    ],
)
def test_first_releases_of_each_minor_match_facts(version, pause, etcd, coredns):
    images = versions.image_set(version)
    assert (images.pause, images.etcd, images.coredns) == (pause, etcd, coredns)


def test_etcd_changes_within_1_25_at_the_known_patches():
    expected = {**{p: "3.5.4-0" for p in range(0, 4)}, 4: "3.5.5-0",
                **{p: "3.5.6-0" for p in range(5, 15)}, 15: "3.5.9-0", 16: "3.5.9-0"}
    assert {p: versions.image_set(f"1.25.{p}").etcd for p in range(17)} == expected


def test_later_patch_changes_upstream_made():
    assert versions.image_set("1.24.8").etcd == "3.5.5-0"
    assert versions.image_set("1.24.9").etcd == "3.5.6-0"
    assert versions.image_set("1.30.4").coredns == "v1.11.1"
    assert versions.image_set("1.30.5").coredns == "v1.11.3"
    assert versions.image_set("1.31.13").etcd == "3.5.15-0"
    assert versions.image_set("1.31.14").etcd == "3.5.24-0"
    assert {versions.image_set(f"1.31.{p}").coredns for p in range(1, 15)} == {"v1.11.3"}


def test_kubeadm_default_repository_switches_at_1_24_9():
    for version in versions.supported_versions():
        expected = "k8s.gcr.io" if versions.release_key(version) < (1, 24, 9) else "registry.k8s.io"
        assert _row(version)["repository"] == expected, version


def test_every_minor_has_a_calico_release_tested_with_it_and_its_images():
    calico = manifests.load("calico")
    assert sorted(calico["kubernetes"]) == [f"1.{minor}" for minor in LAST_PATCH]
    for minor, name in calico["kubernetes"].items():
        release = versions.calico_release(name)
        assert minor in release.tested, (minor, name)
        assert release.images == (
            f"docker.io/calico/cni:{name}",
            f"docker.io/calico/node:{name}",
            f"docker.io/calico/kube-controllers:{name}",
        )
        assert release.manifest_url == (
            f"https://raw.githubusercontent.com/projectcalico/calico/{name}/manifests/calico.yaml"
        )
        assert release.manifest_sha256 is None or re.fullmatch(
            r"[0-9a-f]{64}", release.manifest_sha256)


def test_every_listed_calico_release_is_used():
    calico = manifests.load("calico")
    assert set(calico["releases"]) == set(calico["kubernetes"].values())


def test_calico_v3_24_5_matches_the_reference_manifest():
    release = versions.calico_release("v3.24.5")
    # sha256sum shared/reference/calico-v3.24.5.yaml (projectcalico/calico v3.24.5)
    assert release.manifest_sha256 == (
        "1e8825b3bc56bd1b2a7565783630a97a09a4fd9f92767d013e4201cf8f88812c")
    for version in ("1.24.0", "1.25.0", "1.25.16"):
        assert versions.image_set(version).calico == "v3.24.5"


def test_image_set_for_1_25_0_is_exactly_the_ten_upstream_names_and_the_dns_check():
    assert versions.image_set("1.25.0").images == (
        "registry.k8s.io/kube-apiserver:v1.25.0",
        "registry.k8s.io/kube-controller-manager:v1.25.0",
        "registry.k8s.io/kube-scheduler:v1.25.0",
        "registry.k8s.io/kube-proxy:v1.25.0",
        "registry.k8s.io/pause:3.8",
        "registry.k8s.io/etcd:3.5.4-0",
        "registry.k8s.io/coredns/coredns:v1.9.3",
        "docker.io/calico/cni:v3.24.5",
        "docker.io/calico/node:v3.24.5",
        "docker.io/calico/kube-controllers:v3.24.5",
        "docker.io/library/busybox:1.28",
    )


def test_image_set_carries_the_calico_manifest_and_accepts_a_v_prefix():
    images = versions.image_set("v1.31.14")
    assert images.kubernetes == "1.31.14"
    assert images.minor == "1.31"
    assert images.calico == "v3.30.7"
    assert images.calico_manifest_url.endswith("/v3.30.7/manifests/calico.yaml")
    assert images.calico_manifest_sha256 == (
        "ed105288f27c7ba4cae143bcaa3f6425f02d84fa94a4786cc8e3d371412c1a36")


@pytest.mark.parametrize("version", ["1.23.17", "1.32.0", "abc", "1.25", "", "1.31.15"])
def test_unsupported_versions_fail_with_one_line_naming_the_range(version):
    with pytest.raises(InputError) as caught:
        versions.image_set(version)
    message = str(caught.value)
    assert "1.24.0-1.31.14" in message
    assert repr(version) in message
    assert "\n" not in message
    assert caught.value.exit_code == 2


def test_unknown_calico_release_is_an_input_error():
    with pytest.raises(InputError, match="v3.24.5"):
        versions.calico_release("v9.9.9")


@pytest.mark.parametrize("value, expected", [
    ("1.25.0", "1.25.0"), ("v1.25.0", "1.25.0"), (" 1.25.0\n", "1.25.0"), ("0.0.0", "0.0.0"),
])
def test_one_release_parser_normalises(value: str, expected: str) -> None:
    assert versions.parse_release(value) == expected


@pytest.mark.parametrize("value", ["1.25.00", "01.25.0", "1.25", "vv1.25.0", "1.25.0-rc.1", "", None, 1.25])
def test_one_release_parser_says_malformed(value: object) -> None:
    with pytest.raises(InputError, match="malformed"):
        versions.parse_release(value, "--k8s")


def test_release_in_node_output() -> None:
    assert versions.release_in("Kubernetes v1.25.0\n") == "1.25.0"
    assert versions.release_in("Kubernetes v1.25.00") is None
    assert versions.release_in("no version here") is None

"""The lab's real kubectl: the official binary of each pinned minor, verified by sha256."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kubeferry.errors import InputError, OperationError
from kubeferry.lab import kubectl_release
from kubeferry.lab.kubectl_release import kubectl_binary, release, releases, sha256_file


@pytest.mark.parametrize("minor", sorted(releases()))
def test_the_real_kubectl_of_each_minor_runs_and_says_its_release(minor: str) -> None:
    binary = kubectl_binary(minor)
    assert sha256_file(binary) == release(minor).kubectl_sha256
    printed = subprocess.run([str(binary), "version", "--client", "-o", "json"],
                             capture_output=True, text=True, timeout=60, check=True)
    client = json.loads(printed.stdout)["clientVersion"]
    assert client["gitVersion"] == release(minor).git_version
    assert client["platform"] == "linux/amd64"
    assert f"{client['major']}.{client['minor']}" == minor


def test_a_changed_cached_kubectl_is_fetched_again(tmp_path: Path) -> None:
    pinned = release("1.25.0")
    cached = tmp_path / "kubectl" / pinned.git_version / "kubectl"
    cached.parent.mkdir(parents=True)
    shutil.copy(kubectl_binary("1.25"), cached)
    with cached.open("r+b") as handle:
        handle.seek(4096)
        handle.write(b"tampered")
    assert kubectl_binary("1.25", cache=tmp_path) == cached
    assert sha256_file(cached) == pinned.kubectl_sha256


def test_a_minor_without_a_pinned_kubectl_is_one_line() -> None:
    with pytest.raises(InputError, match=r"no kubectl pinned for Kubernetes 1\.19 .*kubectl_releases\.yaml"):
        release("1.19.4")


def test_a_binary_that_is_not_the_release_s_is_refused(tmp_path: Path, monkeypatch) -> None:
    spec = yaml.safe_load(kubectl_release.SPEC.read_text())
    spec["releases"]["1.25"]["kubectl_sha256"] = "0" * 64
    wrong = tmp_path / "kubectl_releases.yaml"
    wrong.write_text(yaml.safe_dump(spec))
    monkeypatch.setattr(kubectl_release, "SPEC", wrong)
    kubectl_release.releases.cache_clear()
    try:
        refused = r"kubectl v1\.25\.0 .* has sha256 e23cc709\w+, not the release's 0{64}"
        with pytest.raises(OperationError, match=refused):
            kubectl_binary("1.25", cache=tmp_path)
        assert not (tmp_path / "kubectl" / "v1.25.0" / "kubectl").exists()
    finally:
        monkeypatch.undo()
        kubectl_release.releases.cache_clear()

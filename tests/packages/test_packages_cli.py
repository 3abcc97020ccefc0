"""``kubeferry bundle build --include packages`` through the CLI, against the stand-in yum repos."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.real


def kubeferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubeferry.cli", *args], capture_output=True,
                          text=True, timeout=600, stdin=subprocess.DEVNULL)


def one_error_line(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def build_args(el8_standin, tmp_path: Path) -> list[str]:
    sources = tmp_path / "sources.yaml"
    sources.write_text(el8_standin.sources().to_yaml())
    return ["bundle", "build", "--k8s", "1.25.0", "--os", "el8", "--include", "packages",
            "--sources", str(sources), "--cache-dir", str(tmp_path / "cache"),
            "--output", str(tmp_path / "out")]


def test_packages_bundle_through_the_cli(build_args: list[str], tmp_path: Path) -> None:
    result = kubeferry(*build_args)
    assert result.returncode == 0, result.stderr
    bundle = next((tmp_path / "out").glob("*.tar"))
    assert kubeferry("bundle", "verify", str(bundle)).returncode == 0
    inspect = kubeferry("bundle", "inspect", str(bundle)).stdout
    assert "kubeadm" in inspect and "1.25.0" in inspect
    metadata = json.loads(kubeferry("bundle", "inspect", str(bundle), "--json").stdout)
    assert metadata["include"] == ["packages"] and metadata["packages"]
    assert any(m["path"].startswith("packages/el8/") for m in metadata["members"])


def test_bad_package_input_through_the_cli(build_args: list[str], el8_standin, tmp_path: Path) -> None:
    one_error_line(kubeferry(*build_args, "--packages-extra", "no-such-tool"), 2, "no-such-tool")
    one_error_line(kubeferry(*build_args, "--packages-extra", "broken-tool"), 1,
                   "cannot satisfy broken-tool -> broken-lib")
    sources = tmp_path / "down.yaml"
    data = el8_standin.sources()
    data.repositories["kubernetes"] = "http://127.0.0.1:9/kubernetes"
    sources.write_text(data.to_yaml())
    args = [*build_args]
    args[args.index("--sources") + 1] = str(sources)
    one_error_line(kubeferry(*args), 1, "kubernetes", "127.0.0.1:9")

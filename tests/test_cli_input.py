"""Bad input: one line naming the thing and what to do, the right exit code, no traceback."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*KUBEFERRY, *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd, stdin=subprocess.DEVNULL)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *words: str) -> None:
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("args, words", [
    (["bundle", "build", "--k8s", "1.19.0"], ["1.19.0", "1.24.0-1.31.14"]),
    (["bundle", "build", "--k8s", "banana"], ["banana", "1.24.0-1.31.14"]),
    (["bundle", "build", "--k8s", "1.25.0", "--os", "el6"], ["--os", "el6", "el7"]),
    (["bundle", "build", "--k8s", "1.25.0", "--arch", "s390x"], ["--arch", "s390x", "amd64"]),
    (["bundle", "build", "--k8s", "1.25.0", "--include", "images,charts"], ["--include", "charts"]),
    (["bundle", "build", "--k8s", "1.25.0", "--mirror", "registry.k8s.io"], ["--mirror", "HOST=URL"]),
    (["bundle", "build", "--k8s", "1.25.0", "--mirror", "registry.k8s.io=ftp://x"], ["--mirror", "http"]),
    (["bundle", "build", "--k8s", "1.25.0", "--include", "kernel"], ["--include kernel", "packages"]),
    (["bundle", "build", "--k8s", "1.25.0", "--os", "debian12", "--include", "packages,kernel"],
     ["el7 only"]),
    (["bundle", "build"], ["--k8s"]),
    (["bundle", "build", "--k8s", "1.25.0", "--bogus"], ["--bogus"]),
    (["bundle", "sources", "--k8s", "1.32.0"], ["1.24.0-1.31.14"]),
    (["bundle", "frobnicate"], ["frobnicate"]),
])
def test_usage_and_input_errors_exit_2(args: list[str], words: list[str], tmp_path: Path) -> None:
    assert_one_line(run(*args, "--cache-dir", str(tmp_path)) if args[:2] == ["bundle", "build"]
                    and len(args) > 2 else run(*args), 2, *words)


def test_sources_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "sources.yaml"
    bad.write_text("registries: [1, 2]\n")
    assert_one_line(run("bundle", "sources", "--k8s", "1.25.0", "--sources", str(bad)), 2,
                    str(bad), "registries")
    bad.write_text("nonsense: {}\n")
    assert_one_line(run("bundle", "sources", "--k8s", "1.25.0", "--sources", str(bad)), 2,
                    "expected only the sections")
    bad.write_text("registries: {registry.k8s.io: 'not a url'}\n")
    assert_one_line(run("bundle", "sources", "--k8s", "1.25.0", "--sources", str(bad)), 2,
                    "registry.k8s.io")
    missing = tmp_path / "missing.yaml"
    assert_one_line(run("bundle", "sources", "--k8s", "1.25.0", "--sources", str(missing)), 2,
                    "missing.yaml")


def test_sources_round_trip(tmp_path: Path) -> None:
    result = run("bundle", "sources", "--k8s", "1.25.0", "--mirror", "docker.io=http://127.0.0.1:1")
    assert result.returncode == 0, result.stderr
    assert "registry.k8s.io: https://registry.k8s.io" in result.stdout
    assert "docker.io: http://127.0.0.1:1" in result.stdout
    assert "registry.k8s.io/kube-apiserver:v1.25.0" in result.stdout
    saved = tmp_path / "sources.yaml"
    saved.write_text(result.stdout)
    again = run("bundle", "sources", "--k8s", "1.25.0", "--sources", str(saved))
    assert again.stdout == result.stdout


def test_unreadable_and_foreign_files_exit_2(tmp_path: Path) -> None:
    assert_one_line(run("bundle", "verify", str(tmp_path / "nope.tar")), 2, "nope.tar")
    text = tmp_path / "notes.txt"
    text.write_text("not a tar\n")
    assert_one_line(run("bundle", "verify", str(text)), 2, "notes.txt", "not a")
    assert_one_line(run("bundle", "inspect", str(text)), 2, "notes.txt")
    assert_one_line(run("bundle", "images", str(text), "--output", str(tmp_path / "o.tar")), 2)
    assert_one_line(run("bundle", "verify", str(tmp_path)), 2)


def _hostile_bundle(path: Path, member: str) -> Path:
    """A bundle whose metadata is consistent but whose member escapes the target."""
    import hashlib

    from kubeferry.bundle.format import members_digest

    data = b"owned\n"
    listed = [{"path": member, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}]
    meta = json.dumps({"format": "kubeferry-bundle", "formatVersion": 1, "kubernetes": "1.25.0",
                       "os": "el7", "arch": "amd64", "images": [], "members": listed,
                       "membersDigest": members_digest(listed)}).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, payload in (("kubeferry-bundle.json", meta), (member, data)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return path


def test_tar_slip_and_corrupt_bundles_exit_1(tmp_path: Path) -> None:
    slip = _hostile_bundle(tmp_path / "slip.tar", "../../etc/cron.d/evil")
    assert_one_line(run("bundle", "verify", str(slip)), 1, "../../etc/cron.d/evil")
    assert_one_line(run("bundle", "images", str(slip), "-o", str(tmp_path / "x.tar")), 2)
    absolute = _hostile_bundle(tmp_path / "abs.tar", "/etc/passwd")
    assert_one_line(run("bundle", "verify", str(absolute)), 1, "/etc/passwd")
    good = _hostile_bundle(tmp_path / "good.tar", "files/ok")
    assert run("bundle", "verify", str(good)).returncode == 0
    raw = bytearray(good.read_bytes())
    at = raw.index(b"owned\n")
    raw[at] = ord("O")
    corrupt = tmp_path / "corrupt.tar"
    corrupt.write_bytes(bytes(raw))
    assert_one_line(run("bundle", "verify", str(corrupt)), 1, "files/ok", "sha256")

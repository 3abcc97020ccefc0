"""Delta bundles: ``build --delta-from OLD`` carries only what OLD lacks; ``bundle patch``
rebuilds the new bundle byte for byte, and refuses a wrong OLD in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors

pytestmark = pytest.mark.real
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def kubeferry(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1764806400"}  # builds of one release are the same bytes
    return subprocess.run([*KUBEFERRY, *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL, env=env)


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture(scope="module")
def builds(upstream: Registry, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """1.25.0, then 1.25.1 with --delta-from the 1.25.0 bundle, and again from its metadata."""
    work = tmp_path_factory.mktemp("delta")
    flags = [flag for mirror in mirrors(upstream.url) for flag in ("--mirror", mirror)]

    def build(version: str, output: str, *extra: str) -> list[Path]:
        result = kubeferry("bundle", "build", "--k8s", version, "--include", "images", *flags,
                           "--cache-dir", str(work / "cache"), "--output", str(work / output),
                           "--quiet", *extra)
        assert result.returncode == 0, result.stderr
        return [Path(line) for line in result.stdout.split()]

    (old,) = build("1.25.0", "old")
    new, delta = build("1.25.1", "new", "--delta-from", str(old))
    metadata = work / "old.json"
    metadata.write_text(kubeferry("bundle", "inspect", str(old), "--json").stdout)
    again, from_metadata = build("1.25.1", "again", "--delta-from", str(metadata))
    return {"old": old, "new": new, "delta": delta, "again": again, "from_metadata": from_metadata,
            "work": work}


def test_the_delta_carries_only_what_old_lacks(builds: dict[str, Path]) -> None:
    old, new, delta = Bundle.open(builds["old"]), Bundle.open(builds["new"]), builds["delta"]
    assert delta.name.startswith("kubeferry-k8s-1.25.1-el7-amd64.from-") and delta.name.endswith(".delta.tar")
    with tarfile.open(delta) as tar:
        names = tar.getnames()
        header = tar.extractfile(names[0]).read()  # type: ignore[union-attr]
        carried_metadata = tar.extractfile(names[1]).read()  # type: ignore[union-attr]
    assert names[:2] == ["kubeferry-delta.json", "kubeferry-bundle.json"]
    assert carried_metadata == new.raw_metadata  # the full new metadata, byte for byte
    assert old.bundle_digest.encode() in header and new.bundle_digest.encode() in header
    old_sha256s = {m["sha256"] for m in old.members}
    lacking = [m["path"] for m in new.members if m["sha256"] not in old_sha256s]
    assert names[2:] == lacking and 0 < len(lacking) < len(new.members)
    assert delta.stat().st_size < builds["new"].stat().st_size
    # from the old bundle's metadata alone, the same delta
    assert builds["again"].read_bytes() == builds["new"].read_bytes()
    assert builds["from_metadata"].read_bytes() == delta.read_bytes()


def test_patch_rebuilds_the_bundle_byte_for_byte(builds: dict[str, Path], tmp_path: Path) -> None:
    result = kubeferry("bundle", "patch", str(builds["old"]), str(builds["delta"]), "--output", str(tmp_path))
    assert result.returncode == 0, result.stderr
    rebuilt = tmp_path / builds["new"].name
    assert rebuilt.read_bytes() == builds["new"].read_bytes()
    assert Bundle.open(rebuilt).bundle_digest in result.stdout
    assert kubeferry("bundle", "verify", str(rebuilt)).returncode == 0
    # OLD carried as parts is read in place
    parts = tmp_path / "parts"
    assert kubeferry("bundle", "split", str(builds["old"]), "--size", "300007",
                     "--output", str(parts)).returncode == 0
    again = tmp_path / "again"
    result = kubeferry("bundle", "patch", str(parts / f"{builds['old'].name}.001"), str(builds["delta"]),
                       "--output", str(again))
    assert result.returncode == 0, result.stderr
    assert (again / builds["new"].name).read_bytes() == builds["new"].read_bytes()


def test_a_wrong_old_or_a_damaged_delta_is_refused(builds: dict[str, Path], tmp_path: Path) -> None:
    wrong = kubeferry("bundle", "patch", str(builds["new"]), str(builds["delta"]), "--output", str(tmp_path))
    assert wrong.returncode == 2
    line = one_line(wrong)
    assert "give that bundle as OLD" in line and builds["old"].name in line
    assert not list(tmp_path.iterdir())
    not_a_delta = kubeferry("bundle", "patch", str(builds["old"]), str(builds["new"]), "--output",
                            str(tmp_path))
    assert not_a_delta.returncode == 2 and "not a kubeferry delta" in one_line(not_a_delta)
    # one byte of a carried member flipped: refused, nothing written
    damaged = tmp_path / "damaged.delta.tar"
    data = bytearray(builds["delta"].read_bytes())
    with tarfile.open(builds["delta"]) as tar:
        largest = max(tar.getmembers()[2:], key=lambda info: info.size)
    data[largest.offset_data + largest.size // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    out = tmp_path / "out"
    result = kubeferry("bundle", "patch", str(builds["old"]), str(damaged), "--output", str(out))
    assert result.returncode == 1
    assert largest.name in one_line(result) and "sha256" in one_line(result)
    assert not [p for p in out.iterdir() if not p.name.startswith(".")] and not list(out.iterdir())
    # a build refuses an OLD that is not a bundle before it builds anything
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"format": "something else"}')
    result = kubeferry("bundle", "build", "--k8s", "1.25.1", "--include", "images", "--delta-from",
                       str(bogus), "--output", str(tmp_path / "b"))
    assert result.returncode == 2 and "bogus.json" in one_line(result)

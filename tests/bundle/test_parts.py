"""``bundle split``: parts for removable media, read in place by every command that takes a
bundle; a missing, reordered or damaged part is named in one line."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from kubeferry.bundle.parts import DEFAULT_PART_SIZE, base_name, parse_size
from kubeferry.bundle.reader import Bundle
from kubeferry.errors import InputError
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors

pytestmark = pytest.mark.real
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def kubeferry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*KUBEFERRY, *args], capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def bundle_path(upstream: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle: the images of 1.25.0 and calico.yaml... images only, from the stand-in."""
    work = tmp_path_factory.mktemp("parts")
    flags = [flag for mirror in mirrors(upstream.url) for flag in ("--mirror", mirror)]
    result = kubeferry("bundle", "build", "--k8s", "1.25.0", "--include", "images", *flags,
                       "--cache-dir", str(work / "cache"), "--output", str(work / "out"), "--quiet")
    assert result.returncode == 0, result.stderr
    return next((work / "out").glob("*.tar"))


def odd_size(bundle: Path) -> int:
    """An odd part size whose first cut falls inside the metadata member."""
    with tarfile.open(bundle) as tar:
        metadata = tar.getmembers()[0]
    return (metadata.offset_data + metadata.size // 2) | 1


def split(bundle: Path, folder: Path, size: int) -> list[Path]:
    result = kubeferry("bundle", "split", str(bundle), "--size", str(size), "--output", str(folder))
    assert result.returncode == 0, result.stderr
    name = base_name(bundle)
    parts = sorted(folder.glob(name + ".*"))
    assert [p.name for p in parts] == [f"{name}.{n:03d}" for n in range(1, len(parts) + 1)]
    return parts


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_sizes() -> None:
    assert parse_size("700M") == 700 << 20
    assert parse_size("3.9G") == int(3.9 * (1 << 30))
    assert parse_size("4095MiB") == DEFAULT_PART_SIZE < 4 << 30  # FAT32: under 4 GiB
    assert parse_size("12345") == 12345
    for bad in ("", "0", "-5M", "1X", "M"):
        with pytest.raises(InputError, match="--size"):
            parse_size(bad)


def test_parts_are_the_bundle_and_every_reader_reads_them_in_place(bundle_path: Path,
                                                                     tmp_path: Path) -> None:
    size = odd_size(bundle_path)
    parts = split(bundle_path, tmp_path, size)
    whole = bundle_path.read_bytes()
    assert b"".join(part.read_bytes() for part in parts) == whole  # cat of the parts
    assert all(part.stat().st_size == size for part in parts[:-1])
    assert not list(tmp_path.glob(".*partial*"))
    with tarfile.open(bundle_path) as tar:
        spans = [(info.offset_data, info.offset_data + info.size) for info in tar.getmembers()]
    cuts = range(size, len(whole), size)
    assert spans[0][0] < size < spans[0][1]  # the first cut is inside the metadata
    assert any(start < cut < end for cut in cuts for start, end in spans[1:])  # and members are cut

    first = parts[0]
    verified = kubeferry("bundle", "verify", str(first))
    assert verified.returncode == 0, verified.stderr
    digest = Bundle.open(bundle_path).bundle_digest
    assert digest in verified.stdout
    assert kubeferry("bundle", "verify", str(first), "--digest", digest).returncode == 0
    assert kubeferry("bundle", "inspect", str(first), "--json").stdout == \
        kubeferry("bundle", "inspect", str(bundle_path), "--json").stdout
    from_parts, from_file = tmp_path / "parts-images.tar", tmp_path / "file-images.tar"
    assert kubeferry("bundle", "images", str(first), "-o", str(from_parts)).returncode == 0
    assert kubeferry("bundle", "images", str(bundle_path), "-o", str(from_file)).returncode == 0
    assert from_parts.read_bytes() == from_file.read_bytes()
    # every member read at its offset across the parts is the file's
    split_bundle, single = Bundle.open(first), Bundle.open(bundle_path)
    for member in single.members:
        assert split_bundle.read_member(member["path"], max_size=1 << 30) == \
            single.read_member(member["path"], max_size=1 << 30)


def test_a_split_of_the_parts_and_the_default_size(bundle_path: Path, tmp_path: Path) -> None:
    parts = split(bundle_path, tmp_path / "small", odd_size(bundle_path))
    again = split(parts[0], tmp_path / "one", DEFAULT_PART_SIZE)  # the parts, read as one
    assert len(again) == 1 and again[0].read_bytes() == bundle_path.read_bytes()
    assert kubeferry("bundle", "verify", str(again[0])).returncode == 0


def test_a_missing_reordered_or_damaged_part_is_named(bundle_path: Path, tmp_path: Path) -> None:
    size = odd_size(bundle_path)
    parts = split(bundle_path, tmp_path / "p", size)
    assert len(parts) >= 5
    name = bundle_path.name

    def refused(*args: str) -> str:
        result = kubeferry("bundle", "verify", str(parts[0]), *args)
        assert result.returncode == 1, (result.stdout, result.stderr)
        return one_line(result)

    # a part in the middle missing
    hidden = parts[2].rename(tmp_path / "aside")
    assert f"{name}.003: part 3 of the split bundle is missing" in refused()
    hidden.rename(parts[2])
    # the last part missing: the parts end with a full one
    hidden = parts[-1].rename(tmp_path / "aside")
    assert f"part {parts[-1].name} is missing" in refused()
    hidden.rename(parts[-1])
    # the last part put in the middle: only the last may be shorter
    swapped = tmp_path / "swap"
    parts[1].rename(swapped)
    parts[-1].rename(parts[1])
    swapped.rename(parts[-1])
    assert f"{name}.002: part 2 has" in refused()
    parts[1].rename(swapped)
    parts[-1].rename(parts[1])
    swapped.rename(parts[-1])
    # two full parts swapped: found by the tar headers or the sha256 of what they cut
    parts[2].rename(swapped)
    parts[3].rename(parts[2])
    swapped.rename(parts[3])
    assert f"{name}.003" in refused() or f"{name}.004" in refused()
    parts[2].rename(swapped)
    parts[3].rename(parts[2])
    swapped.rename(parts[3])
    assert kubeferry("bundle", "verify", str(parts[0])).returncode == 0
    # one byte of a part damaged: the sha256 of the member it holds names the part
    with tarfile.open(bundle_path) as tar:
        largest = max((info for info in tar.getmembers()[1:]
                       if info.offset_data // size == (info.offset_data + info.size - 1) // size),
                      key=lambda info: info.size)  # a member wholly inside one part
    at = largest.offset_data + largest.size // 2
    damaged = parts[at // size]
    data = bytearray(damaged.read_bytes())
    data[at % size] ^= 0xFF
    damaged.write_bytes(bytes(data))
    line = refused()
    assert damaged.name in line and largest.name in line and "sha256" in line
    # a reader that seeks (images) names it too
    out = kubeferry("bundle", "images", str(parts[0]), "-o", str(tmp_path / "i.tar"))
    assert out.returncode == 1 and damaged.name in one_line(out)


def test_a_later_part_or_a_whole_file_name_points_at_the_first_part(bundle_path: Path,
                                                                   tmp_path: Path) -> None:
    parts = split(bundle_path, tmp_path, odd_size(bundle_path))
    result = kubeferry("bundle", "inspect", str(parts[1]))
    assert result.returncode == 2 and f"give the first part, {parts[0]}" in one_line(result)
    result = kubeferry("bundle", "verify", str(tmp_path / bundle_path.name))
    assert result.returncode == 2 and f"give its first part, {parts[0].name}" in one_line(result)
    stray = tmp_path / f"{bundle_path.name}.{len(parts) + 1:03d}"  # from another split
    stray.write_bytes(bytes(parts[-1].stat().st_size))
    result = kubeferry("bundle", "verify", str(parts[0]))
    assert result.returncode == 1 and f"a stray {stray.name} from another split" in one_line(result)


def test_bad_sizes_are_refused_in_one_line(bundle_path: Path, tmp_path: Path) -> None:
    for size, says in (("1X", "is not a size"), ("10", "at most 999")):
        result = kubeferry("bundle", "split", str(bundle_path), "--size", size, "--output", str(tmp_path))
        assert result.returncode == 2 and says in one_line(result)
    assert not list(tmp_path.iterdir())


def test_a_signature_covers_the_parts(bundle_path: Path, tmp_path: Path) -> None:
    """NAME.sig beside the parts is the bundle's signature: verify --key takes the first part."""
    key = tmp_path / "builder"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "builder", "-f", str(key)],
                   check=True, timeout=60)
    parts = split(bundle_path, tmp_path / "parts", odd_size(bundle_path))
    signed = kubeferry("bundle", "sign", str(parts[0]), "--key", str(key))
    assert signed.returncode == 0, signed.stderr
    assert (tmp_path / "parts" / f"{bundle_path.name}.sig").is_file()
    checked = kubeferry("bundle", "verify", str(parts[0]), "--key", f"{key}.pub")
    assert checked.returncode == 0 and "signed by" in checked.stdout, checked.stderr


def test_a_last_part_of_only_the_tar_trailer_is_the_bundles(bundle_path: Path, tmp_path: Path) -> None:
    """The end marker and the record's zero padding are the bundle's too: a last part holding
    nothing else is not a stray."""
    total = bundle_path.stat().st_size
    with tarfile.open(bundle_path) as tar:
        tar.getmembers()
        end = tar.offset  # where the end marker starts
    size = next(s for s in range(total // 900, total) if (total - 1) // s * s >= end and total % s)
    parts = split(bundle_path, tmp_path, size)
    assert any(number * size >= end for number in range(len(parts)))  # parts of zeros only
    result = kubeferry("bundle", "verify", str(parts[0]))
    assert result.returncode == 0, result.stderr

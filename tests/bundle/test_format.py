"""The bundle file format: round trip, and every way a damaged or hostile bundle is refused."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from kubeferry.bundle.errors import CorruptBundle, NotABundle
from kubeferry.bundle.format import METADATA_NAME, members_digest
from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.content import Member, sha256_file
from kubeferry.bundler.writer import write_bundle

BASE = {"kubernetes": "1.25.0", "os": "el7", "arch": "amd64", "images": []}


def _members(tmp_path: Path, files: dict[str, bytes]) -> list[Member]:
    members = []
    for i, (path, data) in enumerate(files.items()):
        source = tmp_path / f"src{i}"
        source.write_bytes(data)
        members.append(Member.from_file(path, source))
    return members


def _raw_bundle(path: Path, listed: list[dict], actual: list[tuple[tarfile.TarInfo, bytes]],
                digest: str | None = None) -> Path:
    """A bundle written by hand, so a test can make exactly one thing wrong."""
    metadata = {"format": "kubeferry-bundle", "formatVersion": 1, **BASE, "members": listed,
                "membersDigest": digest or members_digest(listed)}
    raw = json.dumps(metadata).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(METADATA_NAME)
        info.size = len(raw)
        tar.addfile(info, io.BytesIO(raw))
        for info, data in actual:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def _entry(name: str, data: bytes) -> tuple[dict, tuple[tarfile.TarInfo, bytes]]:
    import hashlib

    info = tarfile.TarInfo(name)
    info.size = len(data)
    return ({"path": name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()},
            (info, data))


def test_round_trip(tmp_path: Path) -> None:
    files = {"files/a.txt": b"alpha\n", "files/b.bin": bytes(range(256)) * 9000}
    target = tmp_path / "b.tar"
    metadata = write_bundle(target, dict(BASE), _members(tmp_path, files))
    bundle = Bundle.open(target)
    assert bundle.kubernetes == "1.25.0"
    assert bundle.digest == metadata["membersDigest"]
    result = bundle.verify()
    assert result.members == 2 and result.bytes == sum(len(v) for v in files.values())
    got = {entry["path"]: b"".join(chunks) for entry, chunks in bundle.stream(lambda p: True)}
    assert got == files
    assert bundle.read_member("files/a.txt") == b"alpha\n"
    assert not list(tmp_path.glob(".b.tar.partial-*"))


def test_writer_refuses_a_damaged_cache_file(tmp_path: Path) -> None:
    members = _members(tmp_path, {"files/a": b"good"})
    members[0].source.write_bytes(b"evil")
    with pytest.raises(Exception, match="does not match its sha256"):
        write_bundle(tmp_path / "b.tar", dict(BASE), members)
    assert not (tmp_path / "b.tar").exists()


@pytest.mark.parametrize("name, reason", [
    ("/etc/passwd", "absolute"),
    ("../escape", "'..'"),
    ("files/../../escape", "'..'"),
    ("files//x", "canonical"),
])
def test_unsafe_member_paths_are_refused(tmp_path: Path, name: str, reason: str) -> None:
    listed, actual = _entry(name, b"x")
    bundle = Bundle.open(_raw_bundle(tmp_path / "b.tar", [listed], [actual]))
    with pytest.raises(CorruptBundle, match=reason) as error:
        bundle.verify()
    assert repr(name) in str(error.value)


def test_links_are_refused(tmp_path: Path) -> None:
    link = tarfile.TarInfo("files/link")
    link.type = tarfile.SYMTYPE
    link.linkname = "/etc/shadow"
    listed = {"path": "files/link", "size": 0, "sha256": hashlib.sha256(b"").hexdigest()}
    bundle = Bundle.open(_raw_bundle(tmp_path / "b.tar", [listed], [(link, b"")]))
    with pytest.raises(CorruptBundle, match="files/link: it is a link"):
        bundle.verify()


def test_duplicates_unlisted_and_tampered_members_are_refused(tmp_path: Path) -> None:
    listed, actual = _entry("files/a", b"one")
    dup = Bundle.open(_raw_bundle(tmp_path / "d.tar", [listed], [actual, actual]))
    with pytest.raises(CorruptBundle, match="files/a"):
        dup.verify()
    _, extra = _entry("files/extra", b"two")
    unlisted = Bundle.open(_raw_bundle(tmp_path / "u.tar", [listed], [actual, extra]))
    with pytest.raises(CorruptBundle, match="files/extra: it is not in the metadata"):
        unlisted.verify()
    info, _ = actual
    tampered = Bundle.open(_raw_bundle(tmp_path / "t.tar", [listed], [(info, b"ONE")]))
    with pytest.raises(CorruptBundle, match="files/a does not match its sha256"):
        tampered.verify()
    with pytest.raises(CorruptBundle, match="does not match its digest"):
        Bundle.open(_raw_bundle(tmp_path / "m.tar", [listed], [actual], digest="sha256:00"))


def test_truncation_is_refused(tmp_path: Path) -> None:
    files = {"files/a": b"a" * 5000, "files/b": b"b" * 5000}
    target = tmp_path / "b.tar"
    write_bundle(target, dict(BASE), _members(tmp_path, files))
    whole = target.read_bytes()
    with tarfile.open(target) as tar:
        last = tar.getmembers()[-1]
    # inside the last member's data, and just before its header
    for cut in (last.offset_data + 100, last.offset):
        short = tmp_path / f"short{cut}.tar"
        short.write_bytes(whole[:cut])
        with pytest.raises(CorruptBundle, match="truncated|missing"):
            Bundle.open(short).verify()


def test_not_a_bundle(tmp_path: Path) -> None:
    (tmp_path / "plain.txt").write_text("hello")
    with pytest.raises(NotABundle, match="not a tar file|not a kubeferry bundle"):
        Bundle.open(tmp_path / "plain.txt")
    with pytest.raises(NotABundle, match="cannot read it"):
        Bundle.open(tmp_path / "missing.tar")
    other = tmp_path / "other.tar"
    with tarfile.open(other, "w") as tar:
        tar.add(tmp_path / "plain.txt", arcname="plain.txt")
    with pytest.raises(NotABundle, match="no kubeferry-bundle.json first"):
        Bundle.open(other)


def test_member_hash_helper(tmp_path: Path) -> None:
    (tmp_path / "x").write_bytes(b"abc")
    assert sha256_file(tmp_path / "x").startswith("ba7816bf")


def test_random_access_reads_members_at_their_offsets(tmp_path: Path) -> None:
    files = {"files/a": b"A" * 3000, "images/blobs/sha256/x": bytes(range(256)) * 40}
    target = tmp_path / "b.tar"
    write_bundle(target, dict(BASE), _members(tmp_path, files))
    bundle = Bundle.open(target)
    for path, data in files.items():
        with bundle.open_member(path) as handle:
            assert handle.read(len(data)) == data
        with bundle.open_member(path, start=100) as handle:
            assert handle.read(len(data) - 100) == data[100:]


def test_random_access_refuses_hostile_members(tmp_path: Path) -> None:
    listed, actual = _entry("../escape", b"x")
    bundle = Bundle.open(_raw_bundle(tmp_path / "b.tar", [listed], [actual]))
    with pytest.raises(CorruptBundle, match="'..'"):
        bundle.offsets()

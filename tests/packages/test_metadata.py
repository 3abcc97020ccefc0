"""rpm-md and apt metadata parsing: rich deps, modules, Release, Packages, corrupt input."""

from __future__ import annotations

import gzip
import lzma
from pathlib import Path

import pytest

from kubeferry.bundler.aptmeta import (
    dearmor,
    parse_depends,
    parse_packages,
    parse_release,
    strip_clearsign,
)
from kubeferry.bundler.pkgmodel import And, Cap, If, Or, Package, Unless
from kubeferry.bundler.rpmmd import (
    MetadataError,
    parse_modules,
    parse_primary,
    parse_repomd,
    parse_rich,
)


def test_rich_dependencies_parse() -> None:
    assert parse_rich("(containerd or cri-o)") == Or((Cap("containerd"), Cap("cri-o")))
    assert parse_rich("(a >= 1.2 and (b or c < 3))") == And(
        (Cap("a", ">=", "1.2"), Or((Cap("b"), Cap("c", "<", "3")))))
    assert parse_rich("(selinux-policy-targeted if selinux-policy-targeted)") == If(
        Cap("selinux-policy-targeted"), Cap("selinux-policy-targeted"))
    assert parse_rich("(a if b else c)") == If(Cap("a"), Cap("b"), Cap("c"))
    assert parse_rich("(a unless b)") == Unless(Cap("a"), Cap("b"))
    assert parse_rich("(a with b)") == And((Cap("a"), Cap("b")))
    assert parse_rich("(a without b)") == Cap("a")
    with pytest.raises(ValueError):
        parse_rich("(a or b and c)")


PRIMARY = """<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common"
 xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="3">
<package type="rpm"><name>kubelet</name><arch>x86_64</arch>
 <version epoch="0" ver="1.25.0" rel="0"/>
 <checksum type="sha256" pkgid="YES">ABCD</checksum><size package="123" installed="1" archive="1"/>
 <location href="Packages/kubelet-1.25.0-0.x86_64.rpm"/>
 <format><rpm:provides><rpm:entry name="kubelet" flags="EQ" epoch="0" ver="1.25.0" rel="0"/>
 </rpm:provides><rpm:requires>
 <rpm:entry name="rpmlib(CompressedFileNames)" flags="LE" epoch="0" ver="3.0.4" rel="1"/>
 <rpm:entry name="conntrack"/><rpm:entry name="iptables" flags="GE" epoch="0" ver="1.4.21"/>
 <rpm:entry name="(containerd.io or cri-o)"/>
 </rpm:requires><file>/usr/bin/kubelet</file></format></package>
<package type="rpm"><name>kubelet</name><arch>i686</arch><version epoch="0" ver="1" rel="0"/>
 <checksum type="sha" pkgid="YES">ef</checksum><location href="x.rpm"/></package>
<package type="rpm"><name>container-selinux</name><arch>noarch</arch>
 <version epoch="2" ver="2.74" rel="1.el8"/><checksum type="sha" pkgid="YES">EF01</checksum>
 <location href="c.rpm" xml:base="http://mirror.example/el8"/></package>
</metadata>
"""


def test_primary_parses_deps_arch_and_epochs(tmp_path: Path) -> None:
    path = tmp_path / "primary.xml.gz"
    path.write_bytes(gzip.compress(PRIMARY.encode()))
    packages = parse_primary(path, "kubernetes", ("x86_64", "noarch"), "test")
    assert [p.name for p in packages] == ["kubelet", "container-selinux"]  # i686 ignored
    kubelet, selinux = packages
    assert kubelet.checksum == ("sha256", "abcd") and kubelet.size == 123
    assert kubelet.requires == [Cap("conntrack"), Cap("iptables", ">=", "1.4.21"),
                                Or((Cap("containerd.io"), Cap("cri-o")))]
    assert kubelet.files == ["/usr/bin/kubelet"]
    assert selinux.version == "2:2.74-1.el8" and selinux.checksum == ("sha1", "ef01")
    assert selinux.location == "http://mirror.example/el8/c.rpm"
    assert selinux.provides == [Cap("container-selinux", "=", "2:2.74-1.el8")]


def test_corrupt_metadata_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "primary.xml.gz"
    path.write_bytes(gzip.compress(PRIMARY.encode())[:200])
    with pytest.raises(MetadataError, match="repo x: corrupt metadata"):
        parse_primary(path, "x", ("x86_64",), "repo x")
    with pytest.raises(MetadataError, match="not valid XML"):
        parse_repomd(b"<repomd", "repo x")
    with pytest.raises(MetadataError, match="no primary"):
        parse_repomd(b'<repomd xmlns="http://linux.duke.edu/metadata/repo"/>', "repo x")


MODULES = """---
document: modulemd
version: 2
data:
  name: container-tools
  stream: rhel8
  artifacts:
    rpms:
    - runc-1:1.1.4-1.module+el8.7.0+1+2.x86_64
    - runc-1:1.1.4-1.module+el8.7.0+1+2.src
---
document: modulemd
version: 2
data:
  name: container-tools
  stream: "4.0"
  artifacts:
    rpms:
    - runc-1:1.2.0-1.module+el8.8.0+3+4.x86_64
---
document: modulemd-defaults
version: 1
data:
  module: container-tools
  stream: rhel8
...
"""


def test_modules_hide_non_default_streams_and_shadowed_packages(tmp_path: Path) -> None:
    path = tmp_path / "modules.yaml.xz"
    path.write_bytes(lzma.compress(MODULES.encode()))
    modules = parse_modules(path, "appstream")

    def runc(version: str) -> Package:
        return Package(family="rpm", name="runc", arch="x86_64", version=version, repo="a",
                       location="r.rpm", checksum=("sha256", "0"), size=1)

    assert modules.visible(runc("1:1.1.4-1.module+el8.7.0+1+2"))  # default stream
    assert not modules.visible(runc("1:1.2.0-1.module+el8.8.0+3+4"))  # other stream
    assert not modules.visible(runc("1:1.0.0-70.el8"))  # ursine package of a modular name


INRELEASE = """-----BEGIN PGP SIGNED MESSAGE-----
Hash: SHA256

Origin: Debian
Suite: stable
Codename: bookworm
SHA256:
 0123abcd 1234 main/binary-amd64/Packages
 4567ef01 345 main/binary-amd64/Packages.xz
- -dash-escaped: not a field
-----BEGIN PGP SIGNATURE-----

iQ==
-----END PGP SIGNATURE-----
"""


def test_release_from_inrelease() -> None:
    text = strip_clearsign(INRELEASE)
    assert "BEGIN PGP" not in text and "-dash-escaped" in text
    release = parse_release(INRELEASE, "debian")
    assert release.fields["Codename"] == "bookworm"
    assert release.packages_index("main/binary-amd64/") == (
        "main/binary-amd64/Packages.xz", "4567ef01", 345)
    assert release.packages_index("contrib/binary-amd64/") is None
    with pytest.raises(MetadataError, match="no SHA256"):
        parse_release("Origin: x\n", "debian")


def test_depends_alternatives_versions_and_arch_qualifiers() -> None:
    assert parse_depends("libc6 (>= 2.34), iptables (>= 1.4.21) | nftables, python3:any,"
                         " foo (<< 2~), bar (>> 1:2)") == [
        Cap("libc6", ">=", "2.34"),
        Or((Cap("iptables", ">=", "1.4.21"), Cap("nftables"))),
        Cap("python3"), Cap("foo", "<", "2~"), Cap("bar", ">", "1:2"),
    ]


PACKAGES = """Package: kubelet
Version: 1.25.0-1.1
Architecture: amd64
Depends: iptables (>= 1.4.21), conntrack
Provides: kube-node (= 1.25)
Filename: pool/kubelet_1.25.0-1.1_amd64.deb
Size: 100
SHA256: AA
Description: node agent
 continued line

Package: kubelet
Version: 1.25.0-1.1
Architecture: arm64
Filename: pool/kubelet_1.25.0-1.1_arm64.deb
Size: 100
SHA256: BB

Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Priority: required
Filename: pool/tzdata.deb
Size: 5
SHA256: CC
"""


def test_packages_index(tmp_path: Path) -> None:
    path = tmp_path / "Packages.gz"
    path.write_bytes(gzip.compress(PACKAGES.encode()))
    packages = parse_packages(path, "kubernetes", ("amd64",), "kubernetes")
    assert [(p.name, p.arch) for p in packages] == [("kubelet", "amd64"), ("tzdata", "all")]
    kubelet = packages[0]
    assert kubelet.provides == [Cap("kubelet", "=", "1.25.0-1.1"), Cap("kube-node", "=", "1.25")]
    assert kubelet.checksum == ("sha256", "aa")
    assert kubelet.requirements == [Cap("iptables", ">=", "1.4.21"), Cap("conntrack")]
    assert packages[1].priority == "required"
    path.write_bytes(b"Package: x\nVersion: 1\nArchitecture: amd64\n")
    with pytest.raises(MetadataError, match="corrupt Packages index"):
        parse_packages(path, "kubernetes", ("amd64",), "kubernetes")


def test_dearmor_roundtrip() -> None:
    import base64

    payload = bytes(range(200))
    armored = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: x\n\n"
               + base64.b64encode(payload).decode()
               + "\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n")
    assert dearmor(armored.encode()) == payload
    assert dearmor(payload) == payload

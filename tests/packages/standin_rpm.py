"""Stand-in rpm packages and yum repositories for the package tests, built with the real
``rpmbuild``, ``rpmsign``, ``createrepo_c`` and ``modifyrepo_c``.

Kept small on purpose: when ``lab/standin_packages.py`` (branch ``doubles``) lands, the
Kubernetes packages come from there and this keeps only the base/updates stand-ins.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

SPEC = """\
Name: {name}
{epoch}Version: {version}
Release: {release}
Summary: kubeferry stand-in for {name}
License: Apache-2.0
{buildarch}AutoReqProv: no
{requires}
{provides}

%description
A stand-in package for kubeferry's tests, named and wired like the real {name}.

%install
mkdir -p %{{buildroot}}/usr/share/standin
echo '{name} {version}-{release}' > %{{buildroot}}/usr/share/standin/{name}.{arch}
{install}

%files
/usr/share/standin/{name}.{arch}
{files}
"""


@dataclass
class RpmSpec:
    name: str
    version: str
    release: str = "1.el8"
    arch: str = "x86_64"
    epoch: int | None = None
    requires: list[str] = field(default_factory=list)
    provides: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)  # absolute paths, created as small files

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}-{self.release}.{self.arch}.rpm"


def _spec_text(spec: RpmSpec) -> str:
    install = []
    for path in spec.files:
        install.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
        install.append(f"printf '#!/bin/sh\\necho {spec.name}\\n' > %{{buildroot}}{path}")
        install.append(f"chmod 0755 %{{buildroot}}{path}")
    return SPEC.format(
        name=spec.name, version=spec.version, release=spec.release, arch=spec.arch,
        buildarch="BuildArch: noarch\n" if spec.arch == "noarch" else "",
        epoch=f"Epoch: {spec.epoch}\n" if spec.epoch is not None else "",
        requires="\n".join(f"Requires: {r}" for r in spec.requires),
        provides="\n".join(f"Provides: {p}" for p in spec.provides),
        install="\n".join(install), files="\n".join(spec.files),
    )


def build_rpm(spec: RpmSpec, out_dir: Path, work: Path) -> Path:
    top = work / f"{spec.name}-{spec.version}-{spec.release}.{spec.arch}"
    top.mkdir(parents=True)
    spec_file = top / "package.spec"
    spec_file.write_text(_spec_text(spec))
    subprocess.run(
        ["rpmbuild", "-bb", "--quiet", "--target", f"{spec.arch}-linux",
         "--define", f"_topdir {top}",
         str(spec_file)],
        check=True, capture_output=True, timeout=120,
    )
    built = top / "RPMS" / spec.arch / spec.filename
    target = out_dir / "Packages" / spec.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built, target)
    shutil.rmtree(top)
    return target


def build_rpms(specs: list[RpmSpec], out_dir: Path, work: Path) -> list[Path]:
    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(lambda s: build_rpm(s, out_dir, work), specs))


class SigningKey:
    """A throwaway OpenPGP signing key in its own GNUPGHOME; ``close()`` stops its agent."""

    def __init__(self, home: Path, name: str = "kubeferry test packages", create: bool = True):
        """A new key in ``home``; ``create=False``: the key made there before (to sign more)."""
        self.home = home
        self.name = name
        if create:
            home.mkdir(mode=0o700, parents=True)
            self._gpg("--quick-gen-key", f"{name} <test@kubeferry.invalid>", "rsa2048", "sign",
                      "never")
        self.public = self._gpg("--armor", "--export", name).stdout

    def _gpg(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback",
             "--passphrase", "", *args],
            check=True, capture_output=True, timeout=120,
        )

    def sign_rpms(self, rpms: list[Path]) -> None:
        subprocess.run(
            ["rpmsign", "--addsign", "--define", f"__gpg {shutil.which('gpg')}",
             "--define", f"_gpg_path {self.home}",
             "--define", f"_gpg_name {self.name}", *map(str, rpms)],
            check=True, capture_output=True, timeout=300, stdin=subprocess.DEVNULL,
        )

    def close(self) -> None:
        subprocess.run(["gpgconf", "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True, timeout=30, check=False)


def make_repo(repo_dir: Path, modules_yaml: str | None = None) -> None:
    """rpm-md metadata for the packages under ``repo_dir`` (gzip, as EL7-era createrepo)."""
    subprocess.run(["createrepo_c", "--quiet", "--general-compress-type=gz", str(repo_dir)],
                   check=True, capture_output=True, timeout=120)
    if modules_yaml is not None:
        source = repo_dir / "modules.yaml"
        source.write_text(modules_yaml)
        subprocess.run(["modifyrepo_c", "--mdtype=modules", "--compress-type=gz",
                        str(source), str(repo_dir / "repodata")],
                       check=True, capture_output=True, timeout=120)
        source.unlink()

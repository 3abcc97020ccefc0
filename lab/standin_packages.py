"""Build the lab's stand-in Kubernetes packages (.deb and .rpm) around the doubles.

The packages carry the real names, versions and dependency wiring (``standin_packages.yaml``)
so kubeferry's packages phase installs them like the real ones; their programs are the
lab's doubles from ``lab/doubles/``, with the release's image row baked in
(``release.yaml``, from the lab's own ``kubeadm_releases.yaml``, never from kubeferry's
manifests: a wrong row there must fail the lab), so nothing on a node imports kubeferry.
The kubectl package holds the real kubectl of the release's minor
(``kubectl_release.kubectl_binary``; a minor without a pinned kubectl gets the nearest
pinned one, which kubectl's ±1 minor skew allows).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from kubeferry.errors import InputError, OperationError
from kubeferry.lab.kubectl_release import kubectl_binary, releases
from kubeferry.versions import parse_release

DOUBLES = Path(__file__).resolve().parent / "doubles"
METADATA = Path(__file__).resolve().parent / "standin_packages.yaml"
RELEASES = Path(__file__).resolve().parent / "kubeadm_releases.yaml"
LIB = "/usr/lib/kubeferry-lab"
DEFAULT_INTERPRETER = f"{LIB}/bin/python3"
SHARED_FILES = (
    "doublelib.py", "clustermodel.py", "config-schema.yaml", "README.md",
    "kubeadm_pki.py", "kubeadm_addons.py", "kubeadm_certs.py", "kubeadm_manifests.py", "kubeadm_net.py",
    "aes_gcm.py", "kubeadm_upgrade.py",
    # the kubelet double runs the API server stand-in from the kube-apiserver static pod
    "apiserver_double.py", "apiserver_openapi.py", "apiserver-resources.yaml", "static_pods.py",
    "apiclient.py", "apiserver_streams.py", "apiserver_patch.py", "kubelet_pods.py",
    "apiserver_bootstrap.py", "kubeadm_discovery.py", "kubelet_flags.py",
)
BUILD_TIMEOUT = 300


@cache
def metadata() -> dict[str, Any]:
    return yaml.safe_load(METADATA.read_text())


def _key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def package_versions(version: str) -> dict[str, str]:
    """Upstream version of every stand-in package for a Kubernetes release."""
    data = metadata()
    minor = _minor(version)
    versions = {}
    for name, spec in data["packages"].items():
        if spec.get("companion"):
            table = {str(k): str(v) for k, v in data["companions"][name].items()}
            if minor not in table:
                raise InputError(f"no {name} version known for Kubernetes {minor}: add it to {METADATA.name}")
            versions[name] = table[minor]
        else:
            versions[name] = version
    return versions


def dependencies(name: str, version: str, flavour: str) -> list[str]:
    """Depends (flavour 'deb') or Requires ('rpm') of package ``name`` at Kubernetes ``version``."""
    data = metadata()
    spec = data["packages"][name]
    static = list(spec["deb_depends"] if flavour == "deb" else spec["rpm_requires"])
    for rule in data["ranged"].get(name, []):
        low, high = (str(v) for v in rule["range"])
        if _key(low) <= _key(version) < _key(high):
            for dep, minimum in rule["depends"].items():
                static.append(f"{dep} (>= {minimum})" if flavour == "deb" else f"{dep} >= {minimum}")
            break
    return static


def release_row(version: str) -> dict[str, str]:
    """What the doubles bake in: kubeadm ``version``'s images, from the lab's own table."""
    version = parse_release(version)
    rows = yaml.safe_load(RELEASES.read_text())["releases"]
    row = next((r for r in rows if _key(str(r["from"])) <= _key(version) <= _key(str(r["to"]))), None)
    if row is None:
        raise InputError(f"kubeadm {version} is not in the lab's {RELEASES.name}: add its row and source")
    return {
        "version": version,
        "repository": str(row["repository"]),
        "pause": str(row["pause"]),
        "etcd": str(row["etcd"]),
        "coredns": str(row["coredns"]),
        "cri_tools": package_versions(version)["cri-tools"],
    }


def real_kubectl(version: str) -> Path:
    """The verified official kubectl for ``version``: its minor's, else the nearest pinned minor's."""
    wanted = _key(_minor(version))
    minor = min(releases(), key=lambda m: (abs(_key(m)[1] - wanted[1]), _key(m)))
    return kubectl_binary(minor)


def stage(name: str, version: str, root: Path, interpreter: str = DEFAULT_INTERPRETER) -> list[str]:
    """Lay out package ``name``'s files under ``root``; returns the installed paths it owns."""
    spec = metadata()["packages"][name]
    owned: list[str] = []
    programs = spec.get("programs") or {}
    if programs:
        libdir = root / LIB.lstrip("/") / name
        libdir.mkdir(parents=True)
        for item in SHARED_FILES:
            shutil.copy2(DOUBLES / item, libdir / item)
        (libdir / "release.yaml").write_text(yaml.safe_dump(release_row(version), sort_keys=False))
        for target, program in programs.items():
            shutil.copy2(DOUBLES / f"{program}_double.py", libdir / f"{program}_double.py")
            text = (DOUBLES / program).read_text().split("\n", 1)[1]
            (libdir / program).write_text(f"#!{interpreter}\n{text}")
            (libdir / program).chmod(0o755)
            link = root / target.lstrip("/")
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(libdir / program, link.parent))
            owned.append(target)
        owned.append(f"{LIB}/{name}")
    if spec.get("real_kubectl"):
        path = root / spec["real_kubectl"].lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(real_kubectl(version), path)
        path.chmod(0o755)
        owned.append(spec["real_kubectl"])
    for target, source in (spec.get("files") or {}).items():
        path = root / target.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(DOUBLES / source, path)
        owned.append(target)
    return owned


def _run(command: list[str], what: str) -> None:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    except FileNotFoundError:
        raise OperationError(
            f"{command[0]} not found: install it (scripts/bootstrap) to build {what}"
        ) from None
    if result.returncode != 0:
        raise OperationError(
            f"{command[0]} failed building {what}: {result.stderr.strip().splitlines()[-1:]}"
        )


def build_debs(version: str, out_dir: Path, interpreter: str = DEFAULT_INTERPRETER) -> list[Path]:
    """Build kubelet, kubeadm, kubectl, cri-tools and kubernetes-cni .debs into ``out_dir``."""
    data = metadata()
    versions = package_versions(version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for name, spec in data["packages"].items():
        full = f"{versions[name]}-{data['deb_revision']}"
        target = out_dir / f"{name}_{full}_amd64.deb"
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp) / "root"
            stage(name, version, root, interpreter)
            control = root / "DEBIAN"
            control.mkdir()
            size = (
                sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink()) // 1024
            )
            fields = {
                "Package": name,
                "Version": full,
                "Architecture": "amd64",
                "Maintainer": "kubeferry air-gap lab <lab@kubeferry.invalid>",
                "Installed-Size": str(size),
                "Section": "misc",
                "Priority": "optional",
                "Homepage": "https://kubernetes.io",
            }
            depends = dependencies(name, version, "deb")
            if depends:
                fields["Depends"] = ", ".join(depends)
            fields["Description"] = (
                f"{spec['summary']}\n Stand-in package of the kubeferry air-gap lab: not the real {name}."
            )
            (control / "control").write_text("".join(f"{k}: {v}\n" for k, v in fields.items()))
            if spec.get("conffiles"):
                (control / "conffiles").write_text("".join(f"{c}\n" for c in spec["conffiles"]))
            partial = Path(tmp) / target.name
            # gzip -1: kubectl's 45 MB would take xz (dpkg-deb's default) most of a minute
            _run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(partial)],
                 target.name)
            shutil.move(str(partial), target)
        built.append(target)
    return built


def build_rpms(version: str, out_dir: Path, interpreter: str = DEFAULT_INTERPRETER) -> list[Path]:
    """Build the same five packages as .rpm (``kubeadm-1.25.0-0.x86_64.rpm`` ...) into ``out_dir``."""
    data = metadata()
    versions = package_versions(version)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for name, spec in data["packages"].items():
        release = str(data["rpm_release"])
        target = out_dir / f"{name}-{versions[name]}-{release}.x86_64.rpm"
        with tempfile.TemporaryDirectory() as tmp:
            staging = Path(tmp) / "staging"
            owned = stage(name, version, staging, interpreter)
            conffiles = set(spec.get("conffiles") or [])
            files = "\n".join(f"%config(noreplace) {p}" if p in conffiles else p for p in owned)
            requires = "".join(f"Requires: {r}\n" for r in dependencies(name, version, "rpm"))
            spec_text = (
                "%define __os_install_post %{nil}\n%define _build_id_links none\n"
                "%define debug_package %{nil}\n%define _binary_payload w1.gzdio\n"
                f"Name: {name}\nVersion: {versions[name]}\nRelease: {release}\nSummary: {spec['summary']}\n"
                "License: ASL 2.0\nURL: https://kubernetes.io\nBuildArch: x86_64\nAutoReqProv: no\n"
                f"{requires}\n%description\n"
                f"Stand-in package of the kubeferry air-gap lab: not the real {name}.\n\n"
                f"%install\nmkdir -p %{{buildroot}}\ncp -a {staging}/. %{{buildroot}}/\n\n%files\n{files}\n"
            )
            spec_file = Path(tmp) / f"{name}.spec"
            spec_file.write_text(spec_text)
            rpmdir = Path(tmp) / "rpms"
            _run(
                [
                    "rpmbuild",
                    "-bb",
                    "--define",
                    f"_topdir {tmp}/top",
                    "--define",
                    f"_rpmdir {rpmdir}",
                    "--define",
                    "_build_name_fmt %%{NAME}-%%{VERSION}-%%{RELEASE}.%%{ARCH}.rpm",
                    str(spec_file),
                ],
                target.name,
            )
            shutil.move(str(rpmdir / target.name), target)
        built.append(target)
    return built

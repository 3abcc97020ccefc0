"""The admin kit: ``kubeferry.pyz`` in the bundle, extracted with tar and run on a bare Python
with no network, with a wheel for every supported CPython and platform."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import yaml
from packaging.tags import compatible_tags, cpython_tags
from packaging.utils import parse_wheel_filename

from kubeferry import __version__, manifests
from kubeferry.bundle.format import KIT_MEMBER, METADATA_NAME
from kubeferry.bundler.build import BuildRequest, build
from kubeferry.lab.scenario import BUNDLE_CACHE

pytestmark = pytest.mark.real  # PyPI (through the machine's pip configuration), unshare, pypy3
KUBEFERRY = [sys.executable, "-m", "kubeferry.cli"]


def run(argv: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL, **kwargs)


def cache_dir() -> Path:
    """The lab's bundle cache when it is ours to write (the kit is then built once per tree)."""
    if os.geteuid() == 0:
        BUNDLE_CACHE.mkdir(parents=True, exist_ok=True)
        return BUNDLE_CACHE
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "kubeferry"


@pytest.fixture(scope="module")
def kit_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An el8 bundle holding just the kit, built through the CLI."""
    output = tmp_path_factory.mktemp("kit-bundle")
    result = run([*KUBEFERRY, "bundle", "build", "--k8s", "1.25.0", "--os", "el8", "--include",
                  "kubeferry", "--cache-dir", str(cache_dir()), "--output", str(output), "--quiet"])
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip())


@pytest.fixture(scope="module")
def extracted(kit_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``kubeferry.pyz`` taken out of the bundle with GNU tar, as the README says."""
    folder = tmp_path_factory.mktemp("admin")
    result = run(["tar", "-xf", str(kit_bundle), "--occurrence", KIT_MEMBER], cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / KIT_MEMBER


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Python with the standard library only: a venv without pip, run with -I."""
    folder = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder / "venv")], check=True,
                   timeout=120)
    python = folder / "venv" / "bin" / "python"
    listing = run([str(python), "-I", "-c", "import sys, pkgutil; print(sorted(m.name for m in "
                   "pkgutil.iter_modules() if m.module_finder.path.endswith('site-packages')))"])
    assert listing.stdout.strip() == "[]", listing.stdout  # nothing beyond the standard library
    return python


def kit_env(home: Path) -> dict[str, str]:
    return {"PATH": "/usr/bin:/bin", "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache")}


def no_pip_config() -> dict[str, str]:
    """This environment without any pip setting: only what a test names applies."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull}


def test_the_kit_comes_right_after_the_metadata(kit_bundle: Path) -> None:
    with tarfile.open(kit_bundle) as tar:
        names = [member.name for member in tar.getmembers()[:2]]
        metadata = json.load(tar.extractfile(METADATA_NAME))  # type: ignore[arg-type]
    assert names == [METADATA_NAME, KIT_MEMBER]
    kit = metadata["kubeferry"]
    assert kit["version"] == __version__ and kit["path"] == KIT_MEMBER
    assert kit["pythons"][0] == "3.9" and set(kit["platforms"]) == {
        "manylinux2014_x86_64", "manylinux2014_aarch64"}
    inspect = run([*KUBEFERRY, "bundle", "inspect", str(kit_bundle)])
    assert f"kubeferry   kubeferry.pyz {__version__}" in inspect.stdout


def test_the_kit_runs_on_a_bare_python_with_no_network(
        extracted: Path, kit_bundle: Path, bare_python: Path, tmp_path: Path) -> None:
    """`python3 -I kubeferry.pyz` in a network namespace of its own with no interfaces up."""
    env = kit_env(tmp_path)
    version = run(["unshare", "-n", str(bare_python), "-I", str(extracted), "--version"], env=env)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"kubeferry, version {__version__}"
    verify = run(["unshare", "-n", str(bare_python), "-I", str(extracted), "bundle", "verify",
                  str(kit_bundle)], env=env)
    assert verify.returncode == 0, verify.stderr
    assert ": OK, 1 members" in verify.stdout
    example = run(["unshare", "-n", str(bare_python), "-I", str(extracted), "inventory", "example"],
                  env=env)
    assert example.returncode == 0 and "hosts:" in example.stdout, example.stderr


def test_a_damaged_kit_member_fails_verify(kit_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / kit_bundle.name
    shutil.copyfile(kit_bundle, copy)
    with tarfile.open(copy) as tar:
        offset = tar.getmember(KIT_MEMBER).offset_data
    with open(copy, "r+b") as handle:
        handle.seek(offset + 1000)
        byte = handle.read(1)
        handle.seek(offset + 1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    result = run([*KUBEFERRY, "bundle", "verify", str(copy)])
    assert result.returncode == 1 and KIT_MEMBER in result.stderr, result.stderr


def _inner_distributions(kit: Path) -> list[str]:
    with zipfile.ZipFile(kit) as outer:
        inner = io.BytesIO(outer.read("kubeferry.pex"))
    with zipfile.ZipFile(inner) as pex:
        return sorted(json.loads(pex.read("PEX-INFO"))["distributions"])


def _manylinux2014(machine: str) -> list[str]:
    """Every platform tag a manylinux2014 (glibc 2.17) host accepts, newest first."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, 4, -1)]
    return tags + [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]


def test_every_binary_dependency_has_a_wheel_for_each_python_and_platform(extracted: Path) -> None:
    """Read from the file itself: each supported CPython on x86_64 and aarch64 finds a wheel
    of every project, and every runtime dependency is there."""
    kit = manifests.load("admin-kit")
    wheels = [parse_wheel_filename(name) for name in _inner_distributions(extracted)]
    projects = {name for name, _, _, _ in wheels}
    required = {requirement.split(">")[0].split("=")[0].lower() for requirement in kit["requirements"]}
    assert required <= projects, required - projects
    binary = {name for name, _, _, tags in wheels if any(tag.platform != "any" for tag in tags)}
    assert {"cryptography", "cffi", "bcrypt", "pynacl", "pyyaml"} <= binary
    for python in kit["pythons"]:
        version = tuple(int(part) for part in python.split(".")[:2])
        for machine in ("x86_64", "aarch64"):
            platforms = _manylinux2014(machine)
            accepted = set(cpython_tags(version, platforms=platforms))
            accepted |= set(compatible_tags(version, f"cp{version[0]}{version[1]}", platforms))
            for project in binary:
                assert any(name == project and tags & accepted for name, _, _, tags in wheels), (
                    f"no {project} wheel for CPython {python} on {machine}")


@pytest.mark.skipif(shutil.which("pypy3") is None, reason="needs Debian's pypy3 (scripts/bootstrap)")
def test_an_unsupported_python_gets_one_line(extracted: Path, tmp_path: Path) -> None:
    """PyPy 3.9 is a Python the kit has no wheels for; with no supported python3.X on PATH."""
    only = tmp_path / "bin"
    only.mkdir()
    (only / "pypy3").symlink_to(shutil.which("pypy3"))  # type: ignore[arg-type]
    env = {**kit_env(tmp_path), "PATH": str(only)}
    result = run([str(only / "pypy3"), str(extracted), "--version"], env=env)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "runs on CPython 3.9-3.14" in result.stderr and "PyPy" in result.stderr


def test_a_supported_python3_on_path_is_chosen(extracted: Path, tmp_path: Path) -> None:
    """As on EL8: `python3` cannot run the kit, `python3.X` from another package can."""
    if shutil.which("pypy3") is None:
        pytest.skip("needs Debian's pypy3 (scripts/bootstrap)")
    folder = tmp_path / "bin"
    folder.mkdir()
    minor = f"{sys.version_info[0]}.{sys.version_info[1]}"
    (folder / "pypy3").symlink_to(shutil.which("pypy3"))  # type: ignore[arg-type]
    (folder / f"python{minor}").symlink_to(sys.executable)
    result = run([str(folder / "pypy3"), str(extracted), "--version"],
                 env={**kit_env(tmp_path), "PATH": str(folder)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"kubeferry, version {__version__}"


def test_a_build_from_the_kit_carries_the_kit_itself(extracted: Path, bare_python: Path,
                                                     tmp_path: Path) -> None:
    """No pex, no index needed: the kit is this version's kit."""
    result = run([str(bare_python), "-I", str(extracted), "bundle", "build", "--k8s", "1.25.0", "--os", "el8",
                  "--include", "kubeferry", "--cache-dir", str(tmp_path / "cache"), "--output",
                  str(tmp_path / "out"), "--quiet"], env={**kit_env(tmp_path), "PIP_CONFIG_FILE": os.devnull})
    assert result.returncode == 0, result.stderr
    with tarfile.open(result.stdout.strip()) as tar:
        carried = tar.extractfile(KIT_MEMBER).read()  # type: ignore[union-attr]
    assert carried == extracted.read_bytes()


def test_a_rebuild_downloads_nothing(kit_bundle: Path, tmp_path: Path) -> None:
    request = BuildRequest(kubernetes="1.25.0", os="el8", include=("kubeferry",),
                           cache_dir=cache_dir(), output_dir=tmp_path)
    result = build(request)
    assert result.downloaded == 0
    assert result.sha256 == hashlib.sha256(result.path.read_bytes()).hexdigest()  # sha256sum's
    assert result.path.read_bytes() != b"" and result.metadata["kubeferry"]["sha256"] == json.loads(
        subprocess.run(["tar", "-xOf", str(kit_bundle), METADATA_NAME], capture_output=True,
                       check=True).stdout)["kubeferry"]["sha256"]


def test_the_index_is_a_source_that_sources_remaps(tmp_path: Path) -> None:
    """`bundle sources` lists it; an index that lacks a wheel fails the build naming both."""
    listed = yaml.safe_load(run([*KUBEFERRY, "bundle", "sources", "--k8s", "1.25.0", "--os", "el8"],
                                env={**no_pip_config(),
                                     "PIP_INDEX_URL": "https://pypi.example.internal/simple"}).stdout)
    assert listed["indexes"] == {"pypi": "https://pypi.example.internal/simple"}
    empty = tmp_path / "wheels"
    empty.mkdir()
    sources = tmp_path / "sources.yaml"
    sources.write_text(yaml.safe_dump({"indexes": {"pypi": empty.as_uri()}}))
    result = run([*KUBEFERRY, "bundle", "build", "--k8s", "1.25.0", "--os", "el8", "--include",
                  "kubeferry", "--sources", str(sources), "--cache-dir", str(tmp_path / "cache"),
                  "--output", str(tmp_path / "out")], env=no_pip_config())
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "is on none of the package indexes" in result.stderr
    assert empty.as_uri() in result.stderr

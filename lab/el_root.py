"""The EL layer of the lab's EL nodes: an overlay layer over the shared Debian base root that
makes a node read as Rocky Linux 8 (el8) or CentOS 7.9 (el7) to kubeferry, with real package
management.

``ensure_el_layer("el8", base)`` builds it once into the lab cache (``el-layer.sh`` in a
private mount namespace; the base root is never written): Debian's rpm, dnf and firewalld
installed for real, Debian's containerd and runc purged (a minimal EL has none: docker-ce's
containerd.io brings them), the release files (os-release, redhat-release, system-release,
the vendor key and repositories), ``/etc/selinux/config`` enforcing, and an rpm database at
EL's ``/var/lib/rpm`` holding comps @core and its closure, recorded by dnf from the stand-in
BaseOS (``lab/el_upstream.py``) with ``tsflags=justdb``. el7 adds the boot loader: the grubby
stand-in (``grubby_standin.py``), GRUB's files, and a unit that makes the default entry's kernel
the node's release at each boot (its ``uname``). A node boots from
``lowerdir=<layer>:<base>``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable

from kubeferry.errors import OperationError
from kubeferry.lab import el_upstream, paths, proc
from kubeferry.lab.doubles_recipe import INTERPRETER
from kubeferry.lab.rootfs import locked

SCRIPT = "el-layer.sh"
DONE = ".kubeferry-lab-el-layer"
BUILD_TIMEOUT = 1800.0
PYTHON_NAMES = ("python3", "python3.11", "python")


def _node(os_name: str) -> dict:
    return el_upstream.data()[os_name]["node"]


def layer_debs(os_name: str) -> list[str]:
    """The Debian packages the layer adds: the node's own, and the shared libraries the
    stand-in packages' Debian binaries need (each payload .deb's Depends)."""
    spec = el_upstream.data()[os_name]
    names = list(_node(os_name)["debs"])
    payload = {f["deb"] for repo in spec["repositories"] for p in el_upstream.packages(os_name, repo)
               for f in p.files.values() if "deb" in f}
    for deb in el_upstream.payload_debs(payload).values():
        depends = proc.run(["dpkg-deb", "-f", str(deb), "Depends"]).stdout.decode()
        for clause in depends.split(","):
            name = clause.split("|")[0].split("(")[0].split(":")[0].strip()
            if name.startswith("lib") and name not in names:
                names.append(name)
    return names


def layer_path(os_name: str, base: Path, cache: Path | None = None) -> Path:
    script = resources.files("kubeferry.lab").joinpath(SCRIPT).read_bytes()
    digest = hashlib.sha256(b"\0".join([
        base.name.encode(), script, Path(__file__).read_bytes(),
        *(resources.files("kubeferry.lab").joinpath(program).read_bytes()
          for program in _node(os_name).get("programs", {}).values()),
        el_upstream.recipe_digest(os_name).encode()])).hexdigest()[:16]
    return (cache or paths.cache_dir()) / f"{os_name}-layer-{digest}"


def ensure_el_layer(os_name: str, base: Path, log: Callable[[str], None] = lambda _l: None,
                    cache: Path | None = None) -> Path:
    """The cached EL layer (an overlay upper directory) for ``os_name`` over ``base``."""
    cache = cache or paths.cache_dir()
    target = layer_path(os_name, base, cache)
    if (target / DONE).exists():
        return target
    with locked(cache / "build.lock"):
        if (target / DONE).exists():
            return target
        for stale in cache.glob(f".{os_name}-layer-*.partial-*"):  # interrupted builds
            shutil.rmtree(stale, ignore_errors=True)
        log(f"building the lab's {os_name} layer over the base root (a few minutes, once)")
        repos = el_upstream.cached_el_repos(os_name, cache)
        _build(os_name, base, repos, target)
        in_use = _layers_in_use()
        for old in cache.glob(f"{os_name}-layer-*"):
            if old != target and str(old) not in in_use:
                shutil.rmtree(old, ignore_errors=True)
    return target


def _layers_in_use() -> set[str]:
    used = set()
    for state in paths.run_dir().glob("*/state.json"):
        try:
            used.add(json.loads(state.read_text())["site"].get("layer") or "")
        except (OSError, ValueError, KeyError):
            continue
    return used


def _build(os_name: str, base: Path, repos: Path, target: Path) -> None:
    spec = el_upstream.data()[os_name]
    node = spec["node"]
    baseos = next(name for name, repo in spec["repositories"].items() if repo.get("comps"))
    repo_dir = repos / el_upstream.mirror_path(spec["repositories"][baseos]["url"])
    key_info = spec["keys"][spec["repositories"][baseos]["key"]]
    key = repos / el_upstream.mirror_path(key_info["url"])
    build = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(build, ignore_errors=True)
    for sub in ("upper", "work", "root"):
        (build / sub).mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="kubeferry-lab-el-release-") as tmp:
        release = Path(tmp)
        for relative, text in node["files"].items():
            (release / relative).parent.mkdir(parents=True, exist_ok=True)
            (release / relative).write_text(text)
        for relative, points_to in node["links"].items():
            (release / relative).parent.mkdir(parents=True, exist_ok=True)
            os.symlink(points_to, release / relative)
        (release / node["key_file"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(key, release / node["key_file"])
        for relative, program in node.get("programs", {}).items():  # lab programs (grubby)
            source = resources.files("kubeferry.lab").joinpath(program).read_text()
            (release / relative).parent.mkdir(parents=True, exist_ok=True)
            (release / relative).write_text(f"#!{INTERPRETER}\n" + source.split("\n", 1)[1])
            os.chmod(release / relative, 0o755)
        for relative in node.get("executables", []):
            os.chmod(release / relative, 0o755)
        script = resources.files("kubeferry.lab").joinpath(SCRIPT)
        with resources.as_file(script) as script_path:
            proc.run(["env", f"RELEASEVER={node['releasever']}",
                      f"UNITS={' '.join(node.get('units', []))}",
                      "unshare", "--mount", "--propagation", "private", "sh", str(script_path),
                      str(base), str(build), str(release), str(repo_dir), str(key), INTERPRETER,
                      *layer_debs(os_name)], timeout=BUILD_TIMEOUT)
    shutil.rmtree(build / "work", ignore_errors=True)
    layer = build / "upper"
    for name in PYTHON_NAMES:  # kubeferry must never find Python on a node
        for directory in ("usr/bin", "usr/sbin", "usr/local/bin", "bin"):
            if (layer / directory / name).exists() or (layer / directory / name).is_symlink():
                raise OperationError(f"the {os_name} layer put {name} on PATH ({directory})")
    (layer / DONE).write_text(f"{os_name} over {base.name}\n")
    os.rename(layer, target)
    shutil.rmtree(build, ignore_errors=True)

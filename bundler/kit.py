"""The admin kit: ``kubeferry.pyz``, the whole kubeferry CLI in one file, for every bundle.

The air-gapped admin host has a stock CPython and nothing else: no pip, no index, no
compiler. So each bundle carries kubeferry itself as a PEX file holding this kubeferry's
code and a binary wheel of every dependency for each CPython and platform that
``manifests/admin-kit.yaml`` lists. The wheels are pinned there (file and sha256) and
fetched through the build's cache; pex assembles them offline. The finished kit is cached
under a digest of everything that went in, so a rebuild neither downloads nor assembles.

The kit is a zip application: ``kubeferry/kit_main.py`` as its ``__main__.py``, which picks a
Python the wheels serve (or says in one line which ones it needs), ``kit.json``, and the
PEX itself. A kubeferry that runs from a kit (``python3 kubeferry.pyz bundle build``) puts
that same file into the bundle: it is this version's kit.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from kubeferry import __version__, manifests
from kubeferry.bundle.format import KIT_MEMBER
from kubeferry.bundler.content import Content, Member, sha256_file
from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.pyindex import WheelSource, pip_cert
from kubeferry.bundler.sources import Sources
from kubeferry.errors import OperationError

ENTRY_POINT = "kubeferry.cli:main"
SHEBANG = "/usr/bin/env python3"
KIT_ENV = "KUBEFERRY_KIT"  # set by kit_main: the kit file this process runs from
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # every entry's time: the same inputs give the same bytes
# The code that goes in: kubeferry's installed packages (the lab is not part of the CLI).
PACKAGES = ("kubeferry", "kubeferry.oci", "kubeferry.bundler", "kubeferry.installer",
            "kubeferry.installer.phases", "kubeferry.manifests")
PEX_TIMEOUT = 900.0

Progress = Callable[[int], None]


@dataclass(frozen=True)
class KitSpec:
    """What a kit holds: the Pythons and platforms it serves and the pinned wheels."""

    pythons: tuple[str, ...]
    platforms: tuple[str, ...]
    requirements: tuple[str, ...]
    wheels: tuple[dict[str, str], ...]

    @classmethod
    def load(cls) -> KitSpec:
        data = manifests.load("admin-kit")
        return cls(pythons=tuple(data["pythons"]), platforms=tuple(data["platforms"]),
                   requirements=tuple(data["requirements"]),
                   wheels=tuple(dict(wheel) for wheel in data["wheels"]))

    @property
    def minors(self) -> list[str]:
        """``3.9``, ``3.10``, ...: the Pythons as people name them."""
        return [".".join(python.split(".")[:2]) for python in self.pythons]

    def pex_platforms(self) -> list[str]:
        """pex's ``--platform`` values, with the full version that markers evaluate."""
        return [f"{platform}-cp-{python}-cp{minor.replace('.', '')}"
                for python, minor in zip(self.pythons, self.minors) for platform in self.platforms]


def running_kit() -> Path | None:
    """The kit file this process runs from, if it runs from one."""
    location = os.environ.get(KIT_ENV)
    if location and os.environ.get("PEX") and Path(location).is_file():
        return Path(location)
    return None


def build_kit(sources: Sources, cache_dir: Path, progress: Progress | None = None,
              stats: dict[str, int] | None = None) -> Content:
    """The ``kubeferry`` content: the member ``kubeferry.pyz`` and its metadata."""
    spec = KitSpec.load()
    fetcher = Fetcher(cache_dir, progress=progress, ca_file=pip_cert())
    path = running_kit() or _assemble(spec, sources, fetcher)
    if stats is not None:
        stats["downloaded"] = stats.get("downloaded", 0) + fetcher.downloaded_bytes
        stats["cached"] = stats.get("cached", 0) + fetcher.cached_bytes
    member = Member.from_file(KIT_MEMBER, path)
    metadata = {"kubeferry": {
        "path": KIT_MEMBER, "version": __version__, "size": member.size, "sha256": member.sha256,
        "pythons": spec.minors, "platforms": list(spec.platforms),
    }}
    return Content(kind="kubeferry", members=[member], metadata=metadata)


def _assemble(spec: KitSpec, sources: Sources, fetcher: Fetcher) -> Path:
    """The kit for ``spec`` from the cache, or built with pex and cached."""
    with tempfile.TemporaryDirectory(prefix="kubeferry-kit-") as scratch:
        work = Path(scratch)
        stage = work / "src"
        _stage_sources(stage)
        wheels = _fetch_wheels(spec, sources, fetcher, work / "wheels")
        key = _input_digest(spec, stage, wheels)
        cached = fetcher.store.find(f"kit:{key}")
        if cached is not None:
            return cached
        output = work / KIT_MEMBER
        _run_pex(spec, stage, work / "wheels", work / "kubeferry.pex", work / "pex-root")
        _wrap(spec, work / "kubeferry.pex", output)
        digest = sha256_file(output)
        staged = fetcher.store.partial_dir / f"kit-{digest}-{os.getpid()}"
        shutil.move(str(output), staged)  # into the cache's file system, then renamed
        return fetcher.store.adopt(staged, f"sha256:{digest}", alias=f"kit:{key}")


def _stage_sources(stage: Path) -> None:
    """kubeferry's code and data (the packages the CLI runs) as one ``kubeferry/`` tree."""
    for package in PACKAGES:
        root = resources.files(package)
        relative = Path(*package.split("."))
        _copy_tree(Path(str(root)), stage / relative)


def _copy_tree(source: Path, target: Path) -> None:
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if "__pycache__" in relative.parts or path.suffix == ".pyc" or not path.is_file():
            continue
        destination = target / relative
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, destination)


def _fetch_wheels(spec: KitSpec, sources: Sources, fetcher: Fetcher, folder: Path) -> dict[str, str]:
    """Every pinned wheel in a local PEP 503 index at ``folder``; file -> sha256.

    An index, not a find-links directory: its ``data-requires-python`` lets pip pass over
    a wheel for newer Pythons (click 8.2 on 3.9) without opening it, as it does on PyPI.
    """
    source = WheelSource(list(sources.indexes.values()), fetcher)
    projects: dict[str, list[str]] = {}
    for wheel in spec.wheels:
        requires = html.escape(wheel.get("requires_python", ""), quote=True)
        attribute = f' data-requires-python="{requires}"' if requires else ""
        projects.setdefault(wheel["project"], []).append(
            f'<a href="{wheel["file"]}#sha256={wheel["sha256"]}"{attribute}>{wheel["file"]}</a><br>')

    def one(wheel: dict[str, str]) -> None:
        cached = source.get(wheel["project"], wheel["file"], wheel["sha256"])
        os.symlink(cached, folder / wheel["project"] / wheel["file"])

    for project, anchors in projects.items():
        (folder / project).mkdir(parents=True)
        (folder / project / "index.html").write_text(
            "<!DOCTYPE html><html><body>\n" + "\n".join(anchors) + "\n</body></html>\n")
    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(one, spec.wheels))
    return {wheel["file"]: wheel["sha256"] for wheel in spec.wheels}


def _input_digest(spec: KitSpec, stage: Path, wheels: dict[str, str]) -> str:
    """sha256 over everything that shapes the kit: code, wheels, targets, pex's version."""
    from pex.version import __version__ as pex_version

    digest = hashlib.sha256()
    digest.update(json.dumps({"pex": pex_version, "entry": ENTRY_POINT, "shebang": SHEBANG,
                              "platforms": spec.pex_platforms(), "requirements": spec.requirements,
                              "wheels": sorted(wheels.items())}, sort_keys=True).encode())
    for path in sorted(stage.rglob("*")):
        if path.is_file():
            digest.update(f"{path.relative_to(stage)}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


def _run_pex(spec: KitSpec, stage: Path, index: Path, output: Path, pex_root: Path) -> None:
    """pex, offline: only the pinned wheels of the local ``index`` can go in."""
    argv = [sys.executable, "-m", "pex", *spec.requirements, "--sources-directory", str(stage),
            "--no-pypi", "--index-url", index.as_uri(), "--no-build", "--entry-point", ENTRY_POINT,
            "--python-shebang", SHEBANG, "--pex-root", str(pex_root), "--venv", "prepend",
            "--output-file", str(output)]
    for platform in spec.pex_platforms():
        argv += ["--platform", platform]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # the pinned wheels only, whatever pip.conf says
    try:
        result = subprocess.run(argv, capture_output=True, text=True, env=env,
                                stdin=subprocess.DEVNULL, timeout=PEX_TIMEOUT)
    except FileNotFoundError:
        raise OperationError("cannot run pex to assemble kubeferry.pyz") from None
    except subprocess.TimeoutExpired:
        raise OperationError(f"pex did not finish kubeferry.pyz in {PEX_TIMEOUT:.0f} s") from None
    if result.returncode != 0 or not output.is_file():
        last = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()[-1]
        raise OperationError(f"pex could not assemble kubeferry.pyz: {last}")


def _wrap(spec: KitSpec, pex: Path, output: Path) -> None:
    """The zip application around the PEX: launcher, facts, PEX (stored: it is a zip)."""
    from kubeferry.kit_main import INFO, INNER

    launcher = resources.files("kubeferry").joinpath("kit_main.py").read_bytes()
    info = {"version": __version__, "pythons": spec.minors, "platforms": list(spec.platforms),
            "sha256": sha256_file(pex)}
    entries = [("__main__.py", launcher, zipfile.ZIP_DEFLATED),
               (INFO, json.dumps(info, indent=1).encode() + b"\n", zipfile.ZIP_DEFLATED)]
    with open(output, "wb") as handle:
        handle.write(f"#!{SHEBANG}\n".encode())
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data, compression in entries:
                archive.writestr(_entry(name, compression), data)
            with archive.open(_entry(INNER, zipfile.ZIP_STORED), "w") as target, open(pex, "rb") as source:
                shutil.copyfileobj(source, target, 1 << 20)
    output.chmod(0o755)


def _entry(name: str, compression: int) -> zipfile.ZipInfo:
    entry = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    entry.compress_type = compression
    entry.external_attr = 0o644 << 16
    return entry

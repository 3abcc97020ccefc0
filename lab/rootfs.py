"""The Debian 12 base root every lab node boots from, built once with debootstrap and cached.

The cache key is a hash of the recipe (``manifests/lab-base.yaml``) and of the setup script
``base-setup.sh``: change either and the next ``up`` builds a new base. A build happens in
a temporary directory that is renamed into place only when complete, so an interrupted
build never leaves a root that looks finished. Downloaded .debs are kept between builds.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

from kubeferry import manifests
from kubeferry.errors import OperationError
from kubeferry.lab import doubles_recipe, paths, proc

SETUP_SCRIPT = "base-setup.sh"
RECIPE_FILE = ".kubeferry-lab-recipe.json"
BUILD_TIMEOUT = 1800.0
LOCK_TIMEOUT = BUILD_TIMEOUT + 60.0


@dataclass(frozen=True)
class Recipe:
    """What the base root is made of: the suite, the packages and the setup steps."""

    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    masked_units: tuple[str, ...]
    sudo_user: str
    setup_script: str
    # The doubles' part of the recipe (lab/doubles_recipe.py): their Python, hidden from PATH.
    doubles: str = doubles_recipe.RECIPE_ID

    @classmethod
    def default(cls) -> Recipe:
        data = manifests.load("lab-base")
        script = resources.files("kubeferry.lab").joinpath(SETUP_SCRIPT).read_text()
        packages = tuple(data["packages"])
        packages += tuple(p for p in doubles_recipe.BASE_PACKAGES if p not in packages)
        return cls(
            suite=data["suite"],
            mirror=data["mirror"],
            variant=data["variant"],
            packages=packages,
            masked_units=tuple(data["masked_units"]),
            sudo_user=data["sudo_user"],
            setup_script=script,
        )

    def digest(self) -> str:
        """A short hash of everything that shapes the root."""
        canonical = json.dumps(self.__dict__, sort_keys=True, default=list).encode()
        return hashlib.sha256(canonical).hexdigest()[:16]


def base_path(recipe: Recipe, cache: Path | None = None) -> Path:
    return (cache or paths.cache_dir()) / f"base-{recipe.suite}-{recipe.digest()}"


def ensure_base(
    recipe: Recipe | None = None,
    cache: Path | None = None,
    log: Callable[[str], None] = lambda _line: None,
) -> Path:
    """The cached base root for ``recipe``, built first if it is missing."""
    recipe = recipe or Recipe.default()
    cache = cache or paths.cache_dir()
    target = base_path(recipe, cache)
    if (target / RECIPE_FILE).exists():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    with locked(cache / "build.lock"):
        if (target / RECIPE_FILE).exists():  # another process built it while we waited
            return target
        _remove_stale_builds(cache)
        log(f"building the lab's Debian {recipe.suite} base root (a few minutes, once)")
        started = time.monotonic()
        _build(recipe, cache, target)
        log(f"base root ready in {time.monotonic() - started:.0f}s: {target}")
    return target


class locked:
    """An exclusive flock on ``path``, waited for at most LOCK_TIMEOUT seconds."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> None:
        self.stream = open(self.path, "a")

        def acquired() -> bool:
            try:
                fcntl.flock(self.stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        if not proc.wait_until(acquired, LOCK_TIMEOUT, interval=1.0):
            self.stream.close()
            raise OperationError(f"{self.path} stayed locked by another build for too long")

    def __exit__(self, *_exc: object) -> None:
        fcntl.flock(self.stream, fcntl.LOCK_UN)
        self.stream.close()


def _remove_stale_builds(cache: Path) -> None:
    """Half-built roots of interrupted builds (we hold the lock: nobody is building)."""
    for stale in cache.glob("build-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(recipe: Recipe, cache: Path, target: Path) -> None:
    build = cache / f"build-{recipe.digest()}-{os.getpid()}"
    debs = cache / "debs"
    debs.mkdir(exist_ok=True)
    # debootstrap mounts /proc and /sys inside the target while it works: a private mount
    # namespace makes those mounts vanish with it even if it is killed half-way.
    proc.run(
        [
            "unshare", "--mount", "--propagation", "private",
            "debootstrap", f"--variant={recipe.variant}", f"--cache-dir={debs}",
            f"--include={','.join(recipe.packages)}",
            recipe.suite, str(build), recipe.mirror,
        ],
        timeout=BUILD_TIMEOUT,
    )
    script = build / "tmp" / SETUP_SCRIPT
    script.write_text(recipe.setup_script)
    proc.run(["sh", str(script), str(build), recipe.sudo_user, *recipe.masked_units])
    script.unlink()
    # The doubles' interpreter stays, off PATH: kubeferry must never find Python on a node.
    doubles_recipe.prepare_root(build)
    (build / RECIPE_FILE).write_text(json.dumps(recipe.__dict__, sort_keys=True, default=list))
    os.rename(build, target)
    _remove_old_bases(cache, keep=target)


def _remove_old_bases(cache: Path, keep: Path) -> None:
    """Bases of older recipes, unless a running site still boots from one."""
    in_use = _bases_in_use()
    for old in cache.glob("base-*"):
        if old != keep and str(old) not in in_use:
            shutil.rmtree(old, ignore_errors=True)


def _bases_in_use() -> set[str]:
    used = set()
    for state in paths.run_dir().glob("*/state.json"):
        try:
            used.add(json.loads(state.read_text())["site"]["base"])
        except (OSError, ValueError, KeyError):
            continue
    return used

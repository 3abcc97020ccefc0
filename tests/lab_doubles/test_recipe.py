"""The base-root recipe hides Python from a node's PATH with dpkg-divert, keeping it for the doubles."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kubeferry.errors import OperationError
from kubeferry.lab.doubles_recipe import INTERPRETER, check_root, double_conf, prepare_root


def debian_python_root(root: Path) -> Path:
    """A root holding Debian's real /usr/bin python entry points (copied from this Debian host)."""
    (root / "usr/bin").mkdir(parents=True)
    (root / "var/lib/dpkg/info").mkdir(parents=True)
    (root / "var/lib/dpkg/status").write_text("")
    (root / "bin").symlink_to("usr/bin")  # merged /usr, as in Debian 12
    shutil.copy2("/usr/bin/python3.11", root / "usr/bin/python3.11")
    (root / "usr/bin/python3").symlink_to("python3.11")
    for name in ("py3compile", "pydoc3.11", "ls"):
        if Path("/usr/bin", name).exists():
            shutil.copy2(Path("/usr/bin", name), root / "usr/bin" / name)
    return root


def test_prepare_root_diverts_python_out_of_path(tmp_path: Path) -> None:
    root = debian_python_root(tmp_path)
    with pytest.raises(OperationError):
        check_root(root)
    moved = prepare_root(root)
    assert "python3" in moved and "python3.11" in moved and "ls" not in moved
    assert not (root / "usr/bin/python3").exists() and (root / "usr/bin/ls").exists()
    private = root / INTERPRETER.lstrip("/")
    assert private.is_symlink() and private.resolve() == root / "usr/lib/kubeferry-lab/bin/python3.11"
    diversions = subprocess.run(
        ["dpkg-divert", "--root", str(root), "--list"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "local diversion of /usr/bin/python3.11 to /usr/lib/kubeferry-lab/bin/python3.11" in diversions
    assert prepare_root(root) == [], "idempotent"
    version = subprocess.run(
        [str(root / "usr/lib/kubeferry-lab/bin/python3.11"), "-c", "import sys; print(sys.version_info[:2])"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert version.stdout.strip() == "(3, 11)"


def test_double_conf() -> None:
    conf = yaml.safe_load(double_conf(run_control_plane=True))
    assert conf == {
        "state_dir": "/var/lib/kubeferry-lab/cluster",
        "wait_timeout": 240,
        "heartbeat_interval": 2,
        "run_control_plane": True,
        "etcd_binary": "/usr/lib/kubeferry-lab/etcd/etcd",
    }

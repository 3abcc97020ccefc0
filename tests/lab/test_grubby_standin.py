"""The lab's grubby stand-in (EL7 nodes): entries and the default kept in GRUB's files,
what kernel-ml's %posttrans and kubeferry's kernel phase ask of it, and what it refuses."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import kubeferry.lab

GRUBBY = Path(kubeferry.lab.__file__).with_name("grubby_standin.py")
OLD = "/boot/vmlinuz-3.10.0-1160.el7.x86_64"
NEW = "/boot/vmlinuz-4.19.12-1.el7.elrepo.x86_64"


def _grubby(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"KUBEFERRY_LAB_GRUB_CFG": str(tmp_path / "grub.cfg"),
           "KUBEFERRY_LAB_GRUBENV": str(tmp_path / "grubenv")}
    return subprocess.run([sys.executable, str(GRUBBY), *args], capture_output=True, text=True,
                          env=env, timeout=30, check=False)


def test_add_set_default_and_refusals(tmp_path: Path) -> None:
    assert _grubby(tmp_path, f"--add-kernel={OLD}", "--title=CentOS Linux (3.10.0-1160.el7.x86_64) 7 (Core)",
                   "--args=ro quiet", "--make-default").returncode == 0
    # kernel-ml's %posttrans: a new first entry, the default's arguments, not the default
    added = _grubby(tmp_path, f"--add-kernel={NEW}", "--initrd=/boot/initramfs-4.19.img",
                    "--title=CentOS Linux (4.19.12-1.el7.elrepo.x86_64) 7 (Core)", "--copy-default")
    assert added.returncode == 0, added.stderr
    assert _grubby(tmp_path, "--default-kernel").stdout == f"{OLD}\n"
    assert _grubby(tmp_path, "--default-index").stdout == "1\n"
    assert 'args="ro quiet"' in _grubby(tmp_path, f"--info={NEW}").stdout
    assert "linux16 /vmlinuz-4.19.12-1.el7.elrepo.x86_64 ro quiet" in (tmp_path / "grub.cfg").read_text()
    # the kernel phase: the default by image path
    assert _grubby(tmp_path, "--set-default", NEW).returncode == 0
    assert _grubby(tmp_path, "--default-kernel").stdout == f"{NEW}\n"
    grubenv = (tmp_path / "grubenv").read_text()
    assert "saved_entry=CentOS Linux (4.19.12-1.el7.elrepo.x86_64) 7 (Core)" in grubenv
    # refused: a kernel with no entry, a title-less add, an unknown option; nothing changed
    for args in (["--set-default=/boot/vmlinuz-9.9"], [f"--add-kernel={NEW}"], ["--set-default-index=7"],
                 ["--make-it-so"], []):
        refused = _grubby(tmp_path, *args)
        assert refused.returncode == 1 and refused.stderr.strip(), args
    assert _grubby(tmp_path, "--default-kernel").stdout == f"{NEW}\n"
    assert _grubby(tmp_path, "--info=ALL").stdout.count("index=") == 2

"""Phase ``kernel`` (EL7 only): kernel-ml from the bundle, the default boot entry, a reboot.

EL7's 3.10 kernel lacks what IPVS with nf_conntrack needs and leaks kernel memory under
containers (FACTS.md, runbook 001 4.1.13). The bundle's ``kernel/el7/`` repository holds
ELRepo's kernel-ml; it is installed with only the bundle's repositories enabled, made the
default with ``grubby --set-default`` (the entry of that exact kernel, not menu position 0),
and the node is rebooted; kubeferry waits (bounded) for SSH to answer with a new boot id,
then checks that ``uname -r`` is the kernel-ml. Elsewhere the phase does nothing.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from kubeferry.errors import KubeferryError, OperationError
from kubeferry.installer import facts
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.phases.packages import (
    install_spec,
    rpm_install_command,
    rpm_repo_steps,
    section,
    wanted_version,
)
from kubeferry.installer.platform import data, platform
from kubeferry.installer.workflow import Phase

REBOOT = "nohup sh -c 'sleep 2; systemctl reboot' >/dev/null 2>&1 &"


def _kernel_row(part: dict[str, Any]) -> dict[str, Any]:
    rows = [row for row in part.get("packages", []) if row["name"] == part.get("package", "kernel-ml")]
    if not rows:
        raise OperationError(f"the bundle's kernel section lists no {part.get('package', 'kernel-ml')}")
    return rows[0]


def release(row: dict[str, Any]) -> str:
    """``4.19.12-1.el7.elrepo.x86_64``: what ``uname -r`` says once it runs."""
    return f"{row['ver']}-{row['release']}.{row['arch']}"


def new_enough(running: str, version: str) -> bool:
    """Is the running kernel (``uname -r``) at least kernel-ml ``version`` (``4.19.12``)?"""
    from kubeferry.bundler.versioncmp import rpmvercmp

    return rpmvercmp(running.split("-", 1)[0], version) >= 0


def _applies(ctx: InstallContext, host: Host) -> str:
    """Why the phase has nothing to do on ``host`` ("" when it has work)."""
    if ctx.bundle.os != "el7":
        return f"not el7 ({ctx.bundle.os}): the distribution kernel stays"
    if not ctx.bundle.metadata.get("kernel"):
        return "the bundle carries no kernel-ml (built without --include kernel): kernel unchanged"
    running = facts.KERNEL.read(ctx.conn(host))
    version = _kernel_row(section(ctx, "kernel"))["ver"]
    if new_enough(running, version):
        return f"kernel {running} is already >= {version}"
    return ""


def install_steps(ctx: InstallContext, host: Host) -> tuple[list[Step], str]:
    """Repository, keys, the kernel-ml install and the default entry; and the target release."""
    conn = ctx.conn(host)
    settings = data()["kernel"]
    packages_settings = data()["packages"]
    part = section(ctx, "kernel")
    row = _kernel_row(part)
    target_release = release(row)
    steps = rpm_repo_steps(ctx, conn, settings["repo_id"], settings["repo_file"], part)
    installed = facts.installed_rpms([row["name"]]).read(conn).get(row["name"], [])
    if wanted_version(platform(ctx.bundle.os), row) not in installed:
        command = rpm_install_command(platform(ctx.bundle.os),
                                      [settings["repo_id"], packages_settings["rpm_repo_id"]],
                                      [install_spec(platform(ctx.bundle.os), row)])
        steps.append(Step(command, command))
    image = f"/boot/vmlinuz-{target_release}"
    if facts.GRUB_DEFAULT_KERNEL.read(conn) != image:
        command = f"grubby --set-default {shlex.quote(image)}"
        steps.append(Step(command, command))
    return steps, target_release


def wait_for_reboot(ctx: InstallContext, host: Host, old_boot: str, timeout: float,
                    poll: float) -> str:
    """Wait until the node answers over SSH with another boot id; returns the new one."""
    conn = ctx.conn(host)
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        time.sleep(poll)
        try:
            boot = facts.BOOT_ID.read(conn)
        except KubeferryError as error:
            last = str(error)
            continue
        if boot and boot != old_boot:
            return boot
        last = "still the old boot"
    raise OperationError(f"{host.name}: did not come back within {timeout:.0f} s after the reboot"
                         f" ({last}); check its console, then run the install again")


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """kernel-ml installed and the default entry; then the reboot, the wait and the check."""
    why = _applies(ctx, host)
    if why:
        ctx.log(host)(f"kernel: {why}")
        return []
    install, target_release = install_steps(ctx, host)
    timeout = _reboot_timeout(ctx)
    return [*install, Step(f"reboot ({REBOOT}), wait up to {timeout:g} s for SSH with a new boot id,"
                           f" then check uname -r >= {target_release}",
                           run=lambda: _reboot(ctx, host, target_release))]


def _reboot_timeout(ctx: InstallContext) -> float:
    """The inventory's ``os.rebootTimeout``, else manifests/nodeprep.yaml's."""
    configured = ctx.inventory.os.reboot_timeout
    return configured if configured is not None else float(data()["kernel"]["reboot_timeout"])


def _reboot(ctx: InstallContext, host: Host, target_release: str) -> str:
    conn = ctx.conn(host)
    settings = data()["kernel"]
    old_boot = facts.BOOT_ID.read(conn)
    conn.run(REBOOT)
    conn.close()
    wait_for_reboot(ctx, host, old_boot, _reboot_timeout(ctx), float(settings["reboot_poll"]))
    running = facts.KERNEL.read(conn)
    if not new_enough(running, target_release.split("-", 1)[0]):
        raise OperationError(f"{host.name}: booted {running}, not {target_release}: check the"
                             " boot loader's default entry (grubby --default-kernel)")
    return f"rebooted into {running}"


PHASE = Phase(
    name="kernel",
    short="EL7: kernel-ml from the bundle as the default boot entry, reboot, check uname -r",
    hosts=lambda ctx: ctx.inventory.hosts,
    steps=steps,
)

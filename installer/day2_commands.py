"""Day 2 on an installed site: ``kubeferry remove-node``, ``kubeferry reset``, ``kubeferry certs``.

Thin click wrappers (the work is in remove_node.py, reset.py, certs.py). None of them needs
the bundle. remove-node and reset change the cluster: without ``--yes`` they refuse (exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import click

from kubeferry.errors import InputError, OperationError
from kubeferry.installer import certs as certs_module
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer import remove_node, reset, site
from kubeferry.installer.cli_options import site_options
from kubeferry.installer.commands import report
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Inventory


def _site_options(command: Callable) -> Callable:
    command = click.option("--forks", type=click.IntRange(1, 100), default=10, show_default=True,
                           help="Hosts worked on in parallel (where the order allows it).")(command)
    return site_options(command)


def _inventory(inventory_path: Path) -> Inventory:
    inventory = inventory_module.load(inventory_path)
    inventory_module.check_secrets(inventory)
    return inventory


def _context(inventory: Inventory, forks: int, accept_new_host_keys: bool,
             run_dir: Path | None) -> InstallContext:
    return site.context(inventory, run_dir=run_dir, forks=forks, accept_new_host_keys=accept_new_host_keys,
                        echo=lambda text: click.echo(text, err=True))


@click.command("remove-node")
@click.argument("name")
@_site_options
@click.option("--yes", "-y", is_flag=True, help="Confirm: the node is drained, deleted and reset.")
def remove_node_command(name: str, inventory_path: Path, forks: int, accept_new_host_keys: bool,
                        run_dir: Path | None, yes: bool) -> None:
    """Drain, delete and reset node NAME (still in the inventory); update the other hosts."""
    inventory = _inventory(inventory_path)
    site.without(inventory, name)  # NAME is a host, and not the only control plane
    if not yes:
        raise InputError(f"remove-node drains, deletes and resets {name}: pass --yes to confirm")
    ctx = _context(inventory, forks, accept_new_host_keys, run_dir)
    try:
        results = remove_node.remove(ctx, name, click.echo, report)
    finally:
        ctx.close()
    failed = [r for r in results if r.status == "failed"]
    if failed:
        raise OperationError(f"{name} is out of the cluster, but {failed[0].host} failed in phase"
                             f" {failed[0].phase}: {failed[0].detail}; run the same command again")
    click.echo(f"{name} removed; now delete it from {inventory_path} (the other hosts already follow"
               " the inventory without it)")


@click.command("reset")
@_site_options
@click.option("--yes", "-y", is_flag=True, help="Confirm: the whole cluster is torn down.")
def reset_command(inventory_path: Path, forks: int, accept_new_host_keys: bool, run_dir: Path | None,
                  yes: bool) -> None:
    """Tear the cluster down: every node ready for a fresh install."""
    inventory = _inventory(inventory_path)
    if not yes:
        raise InputError(f"reset tears down the cluster of {inventory_path} ({len(inventory.hosts)}"
                         " hosts): pass --yes to confirm")
    ctx = _context(inventory, forks, accept_new_host_keys, run_dir)
    from kubeferry.installer.phases.init import admin_kubeconfig_path

    try:
        reset.reset(ctx, click.echo)
    finally:
        ctx.close()
    admin = admin_kubeconfig_path(ctx)
    if admin.is_file() and not admin.is_symlink():
        admin.unlink()
        click.echo(f"[reset] admin-host: {admin} removed (it named the cluster that is gone)")
    click.echo(f"{len(ctx.inventory.hosts)} hosts reset: ready for `kubeferry install`")


@click.group("certs")
def certs_group() -> None:
    """The control planes' certificates: check their expiry, renew them."""


@certs_group.command("check")
@_site_options
def certs_check(inventory_path: Path, forks: int, accept_new_host_keys: bool, run_dir: Path | None) -> None:
    """Expiry of every control plane's certificates (kubeadm certs check-expiration); warn
    under 30 days, exit 1 under 7."""
    ctx = _context(_inventory(inventory_path), forks, accept_new_host_keys, run_dir)
    try:
        rows = certs_module.check(ctx)
    finally:
        ctx.close()
    for line in certs_module.table(rows):
        click.echo(line)
    warnings, failures = certs_module.problems(rows)
    for line in warnings + failures[1:]:
        click.echo(f"warning: {line}", err=True)
    if failures:
        more = f" (and {len(failures) - 1} more above)" if len(failures) > 1 else ""
        raise OperationError(failures[0] + more)


@certs_group.command("renew")
@_site_options
def certs_renew(inventory_path: Path, forks: int, accept_new_host_keys: bool, run_dir: Path | None) -> None:
    """kubeadm certs renew all on each control plane in turn, its static pods restarted."""
    ctx = _context(_inventory(inventory_path), forks, accept_new_host_keys, run_dir)
    try:
        certs_module.renew(ctx, click.echo)
        rows = certs_module.check(ctx)
    finally:
        ctx.close()
    for line in certs_module.table(rows):
        click.echo(line)

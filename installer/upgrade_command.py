"""``kubeferry upgrade``: the click wrapper over installer/upgrade.py (as ``install`` is over the
install's phases): the site's release read and checked first, then the phases."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from kubeferry.bundle.reader import Bundle
from kubeferry.console import progress_bars
from kubeferry.errors import InputError
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer import upgrade
from kubeferry.installer.cli_options import site_options
from kubeferry.installer.commands import raise_if_failed, report, summary
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.workflow import run
from kubeferry.outputs import probe_directory
from kubeferry.signing import require_signed, verify_key_option
from kubeferry.timeouts import timeout_options

PARALLEL = 10  # hosts the other phases (distribute, images, ...) work on at once: install's default


@click.command("upgrade")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The bundle of the release to upgrade to.")
@site_options
@click.option("--plan", is_flag=True, help="Print every step per host; change nothing.")
@click.option("--forks", type=click.IntRange(1, 100), default=1, show_default=True,
              help="Workers drained and upgraded at a time (control planes: always one).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@verify_key_option
@timeout_options
def upgrade_command(bundle_path: Path, inventory_path: Path, plan: bool, forks: int,
                    accept_new_host_keys: bool, yes: bool, run_dir: Path | None,
                    verify_key: Path | None) -> None:
    """Upgrade a running cluster to the bundle's release (a patch, or the next minor)."""
    inventory = inventory_module.load(inventory_path)
    inventory_module.check_secrets(inventory)
    bundle = Bundle.open(bundle_path)
    require_signed(bundle_path, bundle.raw_metadata, verify_key)
    bundle.offsets()
    run_dir = run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    probe_directory(run_dir, "--run-dir")
    phases = upgrade.phases()
    # --forks is how many workers are drained at once; the other phases work on hosts in
    # parallel as install does
    options = InstallOptions(plan=plan, forks=max(forks, PARALLEL), drain_batch=forks,
                             accept_new_host_keys=accept_new_host_keys, yes=yes, run_dir=run_dir,
                             phases=tuple(p.name for p in phases))
    with progress_bars(quiet=plan) as bars:
        ctx = InstallContext(inventory=inventory, bundle=bundle, options=options,
                             progress_factory=lambda phase: lambda n: bars(phase, n, 0),
                             echo=click.echo)
        try:
            source = upgrade.check(ctx, upgrade.read_site(ctx))
            click.echo(f"upgrade: the cluster runs {source}, the bundle is {bundle.kubernetes}"
                       + (" (nothing to upgrade: each phase checks its hosts)" if source == bundle.kubernetes
                          else ""))
            if not plan and not yes:
                if not sys.stdin.isatty():
                    raise InputError("upgrade changes the cluster: pass --yes to confirm"
                                     " (or --plan to look first)")
                click.confirm(f"Upgrade {len(inventory.kubernetes_nodes)} nodes from {source} to"
                              f" {bundle.kubernetes}?", abort=True)
            results = run(ctx, phases, report=report)
        finally:
            ctx.close()
    summary(results, run_dir)
    raise_if_failed(results, run_dir)

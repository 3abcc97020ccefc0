"""``kubeferry install``, ``kubeferry harbor seed``, ``kubeferry inventory example``."""

from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import click

from kubeferry.bundle.reader import Bundle
from kubeferry.console import progress_bars
from kubeferry.errors import InputError, OperationError
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer.cli_options import site_options
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.phases import all_phases
from kubeferry.installer.workflow import HostResult, run, select
from kubeferry.outputs import probe_directory
from kubeferry.signing import require_signed, verify_key_option
from kubeferry.timeouts import timeout_options


def _names(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@click.command("install")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The bundle file from 'kubeferry bundle build'.")
@site_options
@click.option("--only", help="Run only these phases (comma-separated).")
@click.option("--skip", help="Skip these phases (comma-separated).")
@click.option("--plan", is_flag=True, help="Print what each phase would change per host; change nothing.")
@click.option("--json", "as_json", is_flag=True,
              help="With --plan: print the plan as one JSON document on stdout (tables go to stderr).")
@click.option("--forks", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Hosts worked on in parallel.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--relay", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="distribute: pass the bytes from node to node, so the admin host's link carries"
                   " each byte once (auto: from 3 nodes on).")
@verify_key_option
@timeout_options
def install_command(bundle_path: Path, inventory_path: Path, only: str | None, skip: str | None,
                    plan: bool, as_json: bool, forks: int, accept_new_host_keys: bool, yes: bool,
                    run_dir: Path | None, relay: str, verify_key: Path | None) -> None:
    """Turn a bundle and an inventory into a running cluster over SSH."""
    if as_json and not plan:
        raise click.UsageError("--json goes with --plan (a run reports on the terminal and in its logs)")
    inventory = inventory_module.load(inventory_path)
    inventory_module.check_secrets(inventory)
    phases = select(all_phases(), _names(only), _names(skip))
    bundle = Bundle.open(bundle_path)
    require_signed(bundle_path, bundle.raw_metadata, verify_key)
    for warning in inventory.warnings:
        click.echo(f"warning: {warning}", err=True)
    if not plan and not yes:
        if not sys.stdin.isatty():
            raise InputError("install changes the nodes: pass --yes to confirm (or --plan to look first)")
        click.confirm(f"Install Kubernetes {bundle.kubernetes} on {len(inventory.hosts)} hosts"
                      f" ({', '.join(p.name for p in phases)})?", abort=True)
    # Every reader checks what it reads (nodes check each file's sha256 on arrival, seeding
    # each blob's digest), so only the structure is checked here: paths, sizes, truncation.
    bundle.offsets()
    run_dir = run_dir or Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    probe_directory(run_dir, "--run-dir")
    options = InstallOptions(plan=plan, forks=forks, accept_new_host_keys=accept_new_host_keys,
                             yes=yes, run_dir=run_dir, phases=tuple(p.name for p in phases),
                             relay=relay)
    with progress_bars(quiet=plan) as bars:
        ctx = InstallContext(inventory=inventory, bundle=bundle, options=options,
                             progress_factory=lambda phase: lambda n: bars(phase, n, 0),
                             echo=lambda text: click.echo(text, err=as_json))
        try:
            results = run(ctx, phases, report=(lambda result: None) if as_json else report)
        finally:
            ctx.close()
    if as_json:
        click.echo(json.dumps(plan_document(bundle, inventory_path, results), indent=2))
    else:
        summary(results, run_dir)
    raise_if_failed(results, run_dir)


def raise_if_failed(results: list[HostResult], run_dir: Path) -> None:
    """OperationError (exit 1) naming the first host that failed, its phase and its log."""
    failed = [r for r in results if r.status == "failed"]
    if failed:
        first = failed[0]
        raise OperationError(
            f"{len(failed)} host(s) failed; first: {first.host} in phase {first.phase}:"
            f" {first.detail} (log: {run_dir / (first.host + '.log')}); fix it and run the"
            " same command again to resume")


def plan_document(bundle: Bundle, inventory_path: Path, results: list[HostResult]) -> dict:
    """``install --plan --json``: per phase and host, its status and the steps it would run."""
    return {
        "bundle": {"path": str(bundle.path), "digest": bundle.digest, "kubernetes": bundle.kubernetes,
                   "os": bundle.os, "arch": bundle.arch},
        "inventory": str(inventory_path),
        "results": [{"phase": r.phase, "host": r.host, "status": r.status, "steps": r.plan,
                     **({"detail": r.detail} if r.detail else {})} for r in results],
    }


def report(result: HostResult) -> None:
    """One line per host and phase as a run goes (what it would do, with --plan)."""
    if result.plan:
        for line in result.plan:
            click.echo(f"[{result.phase}] {result.host}: would {line}")
    elif result.status == "ok" and not result.detail:
        click.echo(f"[{result.phase}] {result.host}: ok")
    else:
        detail = f" ({result.detail})" if result.detail else ""
        click.echo(f"[{result.phase}] {result.host}: {result.status}{detail}")


_WEIGHT = {"done": 1, "ok": 2, "changed": 3, "failed": 4}  # what the table shows of several results


def summary(results: list[HostResult], run_dir: Path) -> None:
    """The table of every host's phases at the end of a run, and where the logs are."""
    table: dict[str, dict[str, str]] = defaultdict(dict)
    phases: list[str] = []
    for result in results:  # the admin host may have two results in a phase (before, after)
        shown = table[result.host].get(result.phase)
        if shown is None or _WEIGHT.get(result.status, 0) > _WEIGHT.get(shown, 0):
            table[result.host][result.phase] = result.status
        if result.phase not in phases:
            phases.append(result.phase)
    if not results:
        return
    width = max(len(host) for host in table) + 2
    click.echo("\n" + "host".ljust(width) + "".join(p[:10].ljust(11) for p in phases))
    for host, row in table.items():
        click.echo(host.ljust(width) + "".join(row.get(p, "-").ljust(11) for p in phases))
    click.echo(f"logs: {run_dir}/")


@click.group("inventory")
def inventory_group() -> None:
    """Inventory helpers."""


@inventory_group.command("example")
def inventory_example() -> None:
    """Print a commented example inventory."""
    click.echo(inventory_module.example(), nl=False)

"""``kubeferry-lab``: bring the air-gap lab up, look at it, log into a node, take it down.

Thin click wrappers over ``kubeferry.lab.site.Site``; expected failures print one line and
exit 2 (usage, input) or 1 (a failed operation), like ``kubeferry`` itself.
"""

from __future__ import annotations

import os
import sys

import click

from kubeferry.errors import InputError, KubeferryError
from kubeferry.lab.site import DEFAULT_NAME, Site

name_option = click.option(
    "--name", default=DEFAULT_NAME, show_default=True,
    help="Site name (1-8 lowercase letters/digits): several labs can run side by side.",
)


def fail(message: str, code: int) -> None:
    """Print one line naming what went wrong, then exit with ``code``."""
    click.echo(f"kubeferry-lab: {message}", err=True)
    sys.exit(code)


def _log(line: str) -> None:
    click.echo(f"kubeferry-lab: {line}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """A real air-gapped site on this machine: Debian 12 nodes with systemd, sshd and
    containerd in network namespaces on a lab bridge, no route out. Needs root."""


@cli.command()
@click.option("--nodes", default=3, show_default=True, type=int, help="How many nodes.")
@click.option("--subnet", default=None,
              help="Lab IPv4 /24 (default 10.88.0.0/24 for 'lab', else the first free one).")
@name_option
def up(nodes: int, subnet: str | None, name: str) -> None:
    """Bring the lab up (a no-op when it is already up with that many nodes)."""
    site = Site.up(nodes=nodes, name=name, subnet=subnet, log=_log)
    _print_status(site)
    click.echo(f"ssh key: {site.ssh_key}\nknown_hosts: {site.known_hosts_file}")


@cli.command()
@name_option
def status(name: str) -> None:
    """Show the lab's nodes and service hosts (exit 1 if it is not up)."""
    site = Site.load(name)
    if site is None:
        fail(f"lab {name} is not up", 1)
        return
    _print_status(site)
    if not site.healthy():
        fail(f"lab {name} is not healthy; 'kubeferry-lab down --name {name}' cleans it", 1)


@cli.command()
@name_option
def down(name: str) -> None:
    """Stop every lab process and remove every namespace, link, rule and file it made."""
    if Site.down_named(name):
        _log(f"lab {name} is down")
    else:
        _log(f"lab {name} was not up")


@cli.command(context_settings={"ignore_unknown_options": True})
@name_option
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh(name: str, node: str, command: tuple[str, ...]) -> None:
    """Log into NODE as root with OpenSSH (host key checked), or run COMMAND there."""
    site = Site.load(name)
    if site is None:
        raise InputError(f"lab {name} is not up; run 'kubeferry-lab up' first")
    member = site.node(node)
    argv = [
        "ssh", "-i", str(site.ssh_key), "-o", "IdentitiesOnly=yes",
        "-o", f"UserKnownHostsFile={site.known_hosts_file}", "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=10", f"root@{member.address}", *command,
    ]
    sys.stdout.flush()
    os.execvp(argv[0], argv)


def _print_status(site: Site) -> None:
    click.echo(f"lab {site.name}: subnet {site.subnet}, bridge {site.bridge}, "
               f"admin {site.admin_address}, vip {site.vip}")
    for row in site.status():
        click.echo(f"  {row['name']:<10} {row['address']:<15} {row['kind']:<8} {row['state']}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``kubeferry-lab``), errors as one line."""
    try:
        cli.main(args=argv, prog_name="kubeferry-lab", standalone_mode=False)
    except click.exceptions.Exit as exit_:
        sys.exit(exit_.exit_code)
    except click.Abort:
        fail("interrupted", 130)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "kubeferry-lab"
        fail(f"{error.format_message()} (see '{command} --help')", 2)
    except KubeferryError as error:
        if os.environ.get("KUBEFERRY_DEBUG"):
            raise
        fail(str(error), error.exit_code)
    except KeyboardInterrupt:
        fail("interrupted; 'kubeferry-lab down' removes whatever was made", 130)
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        if os.environ.get("KUBEFERRY_DEBUG"):
            raise
        fail(f"internal error: {type(error).__name__}: {error} (KUBEFERRY_DEBUG=1 shows more)", 1)


if __name__ == "__main__":
    main()

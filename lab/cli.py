"""``kubeferry-lab``: bring the air-gap lab up, look at it, log into a node, take it down.

Thin click wrappers over ``kubeferry.lab.site.Site``; expected failures print one line and
exit 2 (usage, input) or 1 (a failed operation), like ``kubeferry`` itself.
"""

from __future__ import annotations

import os
import sys

import click

from kubeferry.cli import run_cli
from kubeferry.errors import InputError
from kubeferry.lab import airgap, upstream_service
from kubeferry.lab.site import DEFAULT_NAME, DEFAULT_OS, DEFAULT_REGISTRY_NAME, NODE_OSES, Site
from kubeferry.lab.upstream import PROFILES

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


os_option = click.option("--os", "os_name", default="debian12", show_default=True,
                         help="The OS whose build lab-sources.yaml is written for (and, with "
                              "'up', the nodes' OS: debian12, el8 or el7).")
profile_option = click.option("--profile", type=click.Choice(list(PROFILES)), default="tiny",
                              show_default=True, help="Stand-in image sizes.")


@cli.command()
@click.option("--nodes", default=3, show_default=True, type=int, help="How many nodes.")
@click.option("--subnet", default=None,
              help="Lab IPv4 /24 (default 10.88.0.0/24 for 'lab', else the first free one).")
@click.option("--registry-name", default=DEFAULT_REGISTRY_NAME, show_default=True,
              help="Host name of the site registry (the Harbor stand-in at .2) the doubles admit.")
@click.option("--upstream", "upstream_k8s", metavar="K8S", default=None,
              help="Also start the upstream stand-in for this Kubernetes release "
                   "(see 'kubeferry-lab upstream up').")
@os_option
@profile_option
@name_option
def up(nodes: int, subnet: str | None, registry_name: str, upstream_k8s: str | None,
       os_name: str, profile: str, name: str) -> None:
    """Bring the lab up (a no-op when it is already up with that many nodes)."""
    node_os = os_name if os_name in NODE_OSES else DEFAULT_OS
    if node_os != os_name:
        _log(f"lab nodes run {', '.join(NODE_OSES)}: {DEFAULT_OS} nodes, sources for {os_name}")
    site = Site.up(nodes=nodes, name=name, subnet=subnet, log=_log, registry_name=registry_name,
                   os_name=node_os)
    _print_status(site)
    click.echo(f"ssh key: {site.ssh_key}\nknown_hosts: {site.known_hosts_file}")
    if upstream_k8s:
        _print_upstream(upstream_service.up(site, upstream_k8s, os_name, profile, log=_log))


@cli.group()
def upstream() -> None:
    """The internet, stood in for on this machine's loopback (never reachable from nodes):
    a registry with every image of a release and the package repositories and files a
    bundle build fetches, with lab-sources.yaml for 'kubeferry bundle build --sources'."""


@upstream.command("up")
@click.option("--k8s", "kubernetes", required=True, help="Kubernetes release, e.g. 1.25.0.")
@os_option
@profile_option
@name_option
def upstream_up(kubernetes: str, os_name: str, profile: str, name: str) -> None:
    """Start the upstream stand-in for a running lab and write its lab-sources.yaml."""
    _print_upstream(upstream_service.up(_loaded(name), kubernetes, os_name, profile, log=_log))


@upstream.command("down")
@name_option
def upstream_down(name: str) -> None:
    """Stop the upstream stand-in (the lab's 'down' stops it too)."""
    if upstream_service.down(_loaded(name)):
        _log(f"upstream of lab {name} is down")
    else:
        _log(f"lab {name} has no upstream up")


def _loaded(name: str) -> Site:
    site = Site.load(name)
    if site is None:
        raise InputError(f"lab {name} is not up; run 'kubeferry-lab up --name {name}' first")
    return site


def _print_upstream(running: upstream_service.Upstream) -> None:
    click.echo(f"upstream {running.kubernetes} ({running.profile}): registry "
               f"{running.registry_url}, packages and files {running.repo_url}")
    click.echo(f"sources: {running.sources_file}")
    click.echo(f"try: kubeferry bundle build --k8s {running.kubernetes} --os {running.os} "
               f"--include images,packages,files --sources {running.sources_file}")


@cli.command()
@name_option
def status(name: str) -> None:
    """Show the lab's nodes and service hosts (exit 1 if it is not up)."""
    site = Site.load(name)
    if site is None:
        fail(f"lab {name} is not up", 1)
        return
    _print_status(site)
    running = upstream_service.current(site)
    if running is not None:
        state = "up" if upstream_service.healthy(site) else "down"
        click.echo(f"  upstream   {running.registry_url} (registry), {running.repo_url} "
                   f"(packages): {state}")
    if not site.healthy():
        fail(f"lab {name} is not healthy; 'kubeferry-lab down --name {name}' cleans it", 1)


@cli.command("airgap")
@name_option
def airgap_command(name: str) -> None:
    """Packets each lab host tried to send out of the site (all refused in the host's own
    namespace, counted since it was made); exit 1 when any did."""
    site = _loaded(name)
    counts, tried = site.airgap_counts(), site.airgap_destinations()
    for host, value in counts.items():
        click.echo(f"  {host:<10} {value}" + (f"  to {' '.join(tried[host])}" if host in tried else ""))
    click.echo(airgap.summary(counts, tried))
    if sum(counts.values()):
        sys.exit(1)


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
    click.echo(f"lab {site.name}: {site.os} nodes, subnet {site.subnet}, bridge {site.bridge}, "
               f"internet side {site.admin_address}, vip {site.vip}")
    for row in site.status():
        click.echo(f"  {row['name']:<10} {row['address']:<15} {row['kind']:<8} {row['state']}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point (``kubeferry-lab``), errors as one line."""
    run_cli(cli, "kubeferry-lab", argv,
            interrupted="interrupted; 'kubeferry-lab down' removes whatever was made")


if __name__ == "__main__":
    main()

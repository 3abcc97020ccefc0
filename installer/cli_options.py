"""The options every command that works on a site shares, written once (install, upgrade,
remove-node, reset, certs): the inventory, the host-key policy, the run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import click

Command = Callable[..., Any]


def site_options(command: Command) -> Command:
    """``--inventory``, ``--accept-new-host-keys`` and ``--run-dir``."""
    for option in reversed([
        click.option("--inventory", "inventory_path", required=True,
                     type=click.Path(path_type=Path, dir_okay=False), help="The site inventory (YAML)."),
        click.option("--accept-new-host-keys", is_flag=True,
                     help="Trust unknown SSH host keys on first use (a changed key is still refused)."),
        click.option("--run-dir", type=click.Path(path_type=Path, file_okay=False),
                     help="Where per-host logs go [default: runs/<time>]."),
    ]):
        command = option(command)
    return command

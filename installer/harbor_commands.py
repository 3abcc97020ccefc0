"""``kubeferry harbor seed``: push a bundle's images into Harbor without installing anything."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from kubeferry.bundle.reader import Bundle
from kubeferry.console import human_bytes, progress_bars
from kubeferry.errors import InputError
from kubeferry.installer.harbor_seed import seed
from kubeferry.installer.inventory import PROJECT_NAME, RegistrySettings, registry_url_problem
from kubeferry.signing import require_signed, verify_key_option
from kubeferry.timeouts import timeout_options

PASSWORD_ENV = "KUBEFERRY_HARBOR_PASSWORD"
PLAIN_HTTP_FLAG = "--send-password-over-plain-http"


def harbor_settings(url: str, project: str, username: str, ca_file: Path | None) -> RegistrySettings:
    """RegistrySettings from the command line, each flag checked with a one-line error."""
    url = url.rstrip("/")
    problem = registry_url_problem(url)
    if problem:
        raise InputError(f"--harbor {url!r}: {problem}")
    if not PROJECT_NAME.match(project):
        raise InputError(f"--project {project!r} is not a valid Harbor project name"
                         " (lower case letters and digits, with . _ - between them)")
    if ca_file is not None and not ca_file.is_file():
        raise InputError(f"--ca-file {ca_file}: no such file")
    return RegistrySettings(url=url, project=project, username=username,
                            ca_file=str(ca_file) if ca_file else None)


def read_password(from_stdin: bool) -> str:
    """The password from stdin (--password-stdin) or $KUBEFERRY_HARBOR_PASSWORD; never a flag."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise InputError("--password-stdin: stdin held no password")
        return password
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise InputError(f"no Harbor password: pipe it with --password-stdin or set {PASSWORD_ENV}")
    return password


@click.group("harbor")
def harbor_group() -> None:
    """Work with the site's Harbor."""


@harbor_group.command("seed")
@click.option("--bundle", "bundle_path", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The bundle file from 'kubeferry bundle build'.")
@click.option("--harbor", "url", required=True, metavar="URL",
              help="Harbor's URL, e.g. https://harbor.example.local.")
@click.option("--project", default="google_containers", show_default=True,
              help="The Harbor project the images go to (created if missing, public).")
@click.option("--username", default="admin", show_default=True, help="Harbor user.")
@click.option("--password-stdin", is_flag=True,
              help=f"Read the password from stdin (else from ${PASSWORD_ENV}).")
@click.option("--ca-file", type=click.Path(path_type=Path, dir_okay=False),
              help="CA certificate that signed Harbor's certificate.")
@click.option("--workers", type=click.IntRange(1, 32), default=4, show_default=True,
              help="Parallel uploads.")
@click.option(PLAIN_HTTP_FLAG, "plain_http_password", is_flag=True,
              help="Allow an http:// Harbor: the password then crosses the network in clear.")
@verify_key_option
@timeout_options
def seed_command(bundle_path: Path, url: str, project: str, username: str, password_stdin: bool,
                 ca_file: Path | None, workers: int, plain_http_password: bool,
                 verify_key: Path | None) -> None:
    """Create the project and push every bundle image into Harbor (existing blobs skipped)."""
    settings = harbor_settings(url, project, username, ca_file)
    if settings.url.startswith("http://") and not plain_http_password:
        raise InputError(f"--harbor {settings.url}: plain HTTP would send the Harbor password in"
                         f" clear; use https:// (with --ca-file) or pass {PLAIN_HTTP_FLAG}")
    bundle = Bundle.open(bundle_path)
    require_signed(bundle_path, bundle.raw_metadata, verify_key)
    password = read_password(password_stdin)
    with progress_bars(quiet=False) as bars:
        result = seed(bundle, settings, password, workers=workers,
                      progress=lambda sent: bars("harbor", sent, 0))
    for warning in result.warnings:
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"seeded {settings.repository}: {result.summary()}")
    if result.bytes_sent:
        click.echo(f"sent {human_bytes(result.bytes_sent)} from {bundle_path}")

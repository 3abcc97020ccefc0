"""``kubeferry bundle ...``: build, sources, verify, inspect, images."""

from __future__ import annotations

import click

from kubeferry.errors import OperationError


@click.group()
def bundle() -> None:
    """Build and read kubeferry bundles."""


@bundle.command()
@click.option("--k8s", "kubernetes", required=True, help="Kubernetes patch release, e.g. 1.25.0.")
def build(kubernetes: str) -> None:
    """Write one verifiable bundle file for a Kubernetes release."""
    raise OperationError("bundle build is not implemented yet")

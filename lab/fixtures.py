"""pytest fixtures for the air-gap lab (loaded as a plugin by tests/conftest.py).

``lab_site`` is one 3-node site for the whole test session, always taken down at the end;
``el8_lab_site`` a 1-node EL8 site (Rocky 8 nodes); ``lab_site_factory`` makes extra sites
for tests that break or reshape one; ``lab_upstream`` is the session site's upstream (the
internet's stand-in) for Kubernetes 1.25.0. All need root: tests using them are marked
``real`` and ``lab`` and never skip.
"""

from __future__ import annotations

import os
from typing import Callable, Iterator

import pytest

from kubeferry.lab import upstream_service
from kubeferry.lab.site import Site, up_retrying

SESSION_NODES = 3
UPSTREAM_KUBERNETES = "1.25.0"


def _name(prefix: str, serial: int = 0) -> str:
    """A site name unique to this pytest process (8 characters at most)."""
    return f"{prefix}{os.getpid() % 100000}{serial}"[:8]


def _up(name: str, nodes: int, os_name: str = "debian12") -> Site:
    if os.geteuid() != 0:  # counted as a failure under KUBEFERRY_NO_SKIP=1 (root, CI)
        pytest.skip("the air-gap lab needs root")
    for stale in Site.abandoned():  # sites of an earlier test run that was killed
        Site.down_named(stale)
    # a boot that missed its deadline on a loaded machine is taken down and tried again
    return up_retrying(lambda: Site.up(nodes=nodes, name=name, owner=os.getpid(),
                                       os_name=os_name), name)


@pytest.fixture(scope="session")
def lab_site() -> Iterator[Site]:
    """A running 3-node lab (node1..node3), shared by the session; down at the end."""
    site = _up(_name("t"), SESSION_NODES)
    try:
        yield site
    finally:
        site.down()


@pytest.fixture(scope="session")
def el8_lab_site() -> Iterator[Site]:
    """A running 1-node EL8 lab (Rocky 8 nodes, lab/el_root.py) shared by the session."""
    site = _up(_name("e"), 1, "el8")
    try:
        yield site
    finally:
        site.down()


@pytest.fixture(scope="session")
def lab_upstream(lab_site: Site) -> Iterator[upstream_service.Upstream]:
    """The session site's upstream for 1.25.0: ``.sources_file`` is a ``--sources`` file for
    ``kubeferry bundle build --k8s 1.25.0 --os debian12``; stopped at the end."""
    running = upstream_service.up(lab_site, UPSTREAM_KUBERNETES)
    try:
        yield running
    finally:
        upstream_service.down(lab_site)


@pytest.fixture
def lab_site_factory() -> Iterator[Callable[..., Site]]:
    """``make(nodes=1, os_name="debian12") -> Site``: a fresh site of its own (``el8``: EL
    nodes, lab/el_root.py); every one is downed afterwards."""
    made: list[str] = []

    def make(nodes: int = 1, os_name: str = "debian12") -> Site:
        name = _name("f", len(made))
        made.append(name)
        return _up(name, nodes, os_name)

    yield make
    errors = []
    for name in made:
        try:
            Site.down_named(name)
        except Exception as error:  # noqa: BLE001 - down the others, then report
            errors.append(error)
    if errors:
        raise errors[0]

"""Fixtures for the Harbor tests: the stand-in, the real swagger, an upstream and a bundle."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Iterator

import pytest
from harbor_swagger import SPEC_NAME, SPEC_SHA256, Spec

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.build import BuildRequest, build
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors, seed_upstream
from kubeferry.lab.upstream_packages import reference_dir

KUBERNETES = "1.25.0"


@pytest.fixture(scope="session")
def spec() -> Spec:
    """Harbor's real v2.6.0 swagger (shared/reference's, else lab/reference's copy), checked
    by sha256; missing or different is a failure, never a skip."""
    path = reference_dir() / SPEC_NAME
    if not path.is_file():
        pytest.fail(f"{SPEC_NAME} not found in {path.parent}", pytrace=False)
    if hashlib.sha256(path.read_bytes()).hexdigest() != SPEC_SHA256:
        pytest.fail(f"{path} is not Harbor v2.6.0's swagger (sha256 differs)", pytrace=False)
    return Spec(path)


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """A registry holding stand-ins of every 1.25.0 image under its upstream path."""
    with Registry(tmp_path_factory.mktemp("upstream")) as registry:
        seed_upstream(registry.url, KUBERNETES)
        yield registry


@pytest.fixture(scope="session")
def bundle_file(upstream: Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real bundle of 1.25.0 (images only), built from the stand-in upstream."""
    work = tmp_path_factory.mktemp("bundle")
    result = build(BuildRequest(kubernetes=KUBERNETES, mirrors=mirrors(upstream.url),
                                cache_dir=work / "cache", output_dir=work / "out"))
    shutil.rmtree(work / "cache")
    return result.path


@pytest.fixture
def bundle(bundle_file: Path) -> Bundle:
    return Bundle.open(bundle_file)


@pytest.fixture
def harbor(tmp_path: Path) -> Iterator[HarborStandIn]:
    """A fresh Harbor stand-in on loopback (https, lab CA, admin with a generated password)."""
    standin = HarborStandIn(tmp_path / "harbor", users={"dev": "dev-pass-1"})
    with standin:
        yield standin


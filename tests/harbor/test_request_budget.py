"""Request budgets: a build and a seed against stand-ins make no more requests than they do
now. At a 200 ms round trip every request that waits on another costs time: a change that
adds requests must say why here (docs/benchmarks.md, registry traffic under latency)."""

from __future__ import annotations

import re
from pathlib import Path

from harbor_helpers import settings_for

from kubeferry.bundle.reader import Bundle
from kubeferry.bundler.build import BuildRequest, build
from kubeferry.installer.harbor_seed import seed
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.registry import Registry
from kubeferry.lab.upstream import mirrors

KUBERNETES = "1.25.0"
ACCESS = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) /v2/')
# Measured on the stand-ins of 1.25.0 (12 images: 11 and busybox): keep them or lower them.
# A build GETs a tag it never saw at once (no HEAD first: 59 -> 48). A seed asks the registry
# how it authenticates while the API answers, takes one token for every repository instead
# of one each, and parallel requests wait for the first answer instead of each collecting a
# 401 (140 -> 106, re-seed 35 -> 18), and uploads what its survey found missing without
# a HEAD each (106 -> 80); a re-seed reads a project it just found without another HEAD
# (18 -> 17). /systeminfo goes once without credentials.
BUILD_REQUESTS = {"cold": 48, "warm": 11}
SEED_REQUESTS = {"first": 80, "again": 17}


def _registry_requests(registry: Registry) -> int:
    return len(ACCESS.findall(registry.log()))


def test_a_build_makes_no_more_requests_than_it_did(upstream: Registry, tmp_path: Path) -> None:
    request = BuildRequest(kubernetes=KUBERNETES, mirrors=mirrors(upstream.url),
                           cache_dir=tmp_path / "cache", output_dir=tmp_path / "out")
    before = _registry_requests(upstream)
    build(request)
    cold = _registry_requests(upstream) - before
    build(request)
    warm = _registry_requests(upstream) - before - cold
    print(f"build requests: cold {cold}, warm {warm}")
    assert cold <= BUILD_REQUESTS["cold"] and warm <= BUILD_REQUESTS["warm"], (cold, warm)


def test_a_seed_and_a_reseed_make_no_more_requests_than_they_did(harbor: HarborStandIn,
                                                                  bundle: Bundle) -> None:
    settings = settings_for(harbor)
    seed(bundle, settings, harbor.admin_password)
    first = len(harbor.requests())
    harbor.clear()
    seed(bundle, settings, harbor.admin_password)
    again = len(harbor.requests())
    print(f"seed requests: first {first}, again {again}")
    assert first <= SEED_REQUESTS["first"] and again <= SEED_REQUESTS["again"], (first, again)

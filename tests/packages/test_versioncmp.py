"""Version ordering against rpm's and dpkg's own test vectors."""

from __future__ import annotations

import pytest

from kubeferry.bundler.versioncmp import (
    EVR,
    debian_compare,
    evr_compare,
    parse_evr,
    rpm_ranges_overlap,
    rpmvercmp,
)

# From rpm's tests/rpmvercmp.at (rpm 4.18).
RPM_VECTORS = """
1.0 1.0 0|1.0 2.0 -1|2.0 1.0 1|2.0.1 2.0.1 0|2.0 2.0.1 -1|2.0.1 2.0 1|2.0.1a 2.0.1a 0
2.0.1a 2.0.1 1|2.0.1 2.0.1a -1|5.5p1 5.5p1 0|5.5p1 5.5p2 -1|5.5p2 5.5p1 1|5.5p10 5.5p10 0
5.5p1 5.5p10 -1|5.5p10 5.5p1 1|10xyz 10.1xyz -1|10.1xyz 10xyz 1|xyz10 xyz10 0
xyz10 xyz10.1 -1|xyz10.1 xyz10 1|xyz.4 xyz.4 0|xyz.4 8 -1|8 xyz.4 1|xyz.4 2 -1|2 xyz.4 1
5.5p2 5.6p1 -1|5.6p1 5.5p2 1|5.6p1 6.5p1 -1|6.5p1 5.6p1 1|6.0.rc1 6.0 1|6.0 6.0.rc1 -1
10b2 10a1 1|10a2 10b2 -1|1.0aa 1.0aa 0|1.0a 1.0aa -1|1.0aa 1.0a 1|10.0001 10.0001 0
10.0001 10.1 0|10.1 10.0001 0|10.0001 10.0039 -1|10.0039 10.0001 1|4.999.9 5.0 -1
5.0 4.999.9 1|20101121 20101121 0|20101121 20101122 -1|20101122 20101121 1|2_0 2_0 0
2.0 2_0 0|2_0 2.0 0|a a 0|a+ a+ 0|a+ a_ 0|a_ a+ 0|+a +a 0|+a _a 0|_a +a 0|+_ +_ 0|_+ +_ 0
_+ _+ 0|+ _ 0|_ + 0|1.0~rc1 1.0~rc1 0|1.0~rc1 1.0 -1|1.0 1.0~rc1 1|1.0~rc1 1.0~rc2 -1
1.0~rc2 1.0~rc1 1|1.0~rc1~git123 1.0~rc1~git123 0|1.0~rc1~git123 1.0~rc1 -1
1.0~rc1 1.0~rc1~git123 1|1.0^ 1.0^ 0|1.0^ 1.0 1|1.0 1.0^ -1|1.0^git1 1.0^git1 0
1.0^git1 1.0 1|1.0 1.0^git1 -1|1.0^git1 1.0^git2 -1|1.0^git2 1.0^git1 1|1.0^git1 1.01 -1
1.01 1.0^git1 1|1.0^20160101 1.0^20160101 0|1.0^20160101 1.0.1 -1|1.0.1 1.0^20160101 1
1.0^20160101^git1 1.0^20160101^git1 0|1.0^20160102 1.0^20160101^git1 1
1.0^20160101^git1 1.0^20160102 -1|1.0~rc1^git1 1.0~rc1^git1 0|1.0~rc1^git1 1.0~rc1 1
1.0~rc1 1.0~rc1^git1 -1|1.0^git1~pre 1.0^git1~pre 0|1.0^git1 1.0^git1~pre 1
1.0^git1~pre 1.0^git1 -1
"""


def _vectors(text: str) -> list[tuple[str, str, int]]:
    rows = []
    for item in text.replace("\n", "|").split("|"):
        if item.strip():
            a, b, result = item.split()
            rows.append((a, b, int(result)))
    return rows


@pytest.mark.parametrize("a,b,expected", _vectors(RPM_VECTORS))
def test_rpmvercmp_matches_rpm(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected


# dpkg's own ordering examples (deb-version(7), dpkg t/dpkg_version.t).
DEB_VECTORS = """
1.0 1.0 0|1.0 1.0-0 0|0:1.2 1.2 0|1:1.0 1.0 1|1:0.1 2.0 1|1.0~rc1 1.0 -1|1.0 1.0+1 -1
1.0a 1.0 1|1.0-1 1.0-1~bpo1 1|2.30-1 2.30-1ubuntu1 -1|1.2.3-1 1.2.3-2 -1|1.2.3 1.2.3.0 -1
~~ ~~a -1|~~a ~ -1|~ 0 -1|1.18.36 1.18.36.1 -1|1.18.36 1.18.35 1|7.6p2-4 7.6-0 1
1.0.3-3 1.0-1 1|1.3 1.2.2-2 1|1.3 1.2.2 1|0-pre 0-pre 0|0-pre 0-pree -1|1.1.6r2-2 1.1.6r-1 1
2.6b2-1 2.6b-2 1|98.1p5-1 98.1-pre2-b6-2 -1|0.4a6-2 0.4-1 1|1:3.0.5+dfsg-1 1:3.0.5-1 1
1.25.0-1.1 1.25.0-00 1|3.6.0-1 3.6.0~rc1-1 1
"""


@pytest.mark.parametrize("a,b,expected", _vectors(DEB_VECTORS))
def test_debian_compare_matches_dpkg(a: str, b: str, expected: int) -> None:
    assert debian_compare(a, b) == expected
    assert debian_compare(b, a) == -expected


def test_evr_missing_release_matches_any_release() -> None:
    assert parse_evr("1.25.0") == EVR(0, "1.25.0", None)
    assert parse_evr("2:2.74-1.el8") == EVR(2, "2.74", "1.el8")
    assert evr_compare(parse_evr("1.25.0-0"), parse_evr("1.25.0")) == 0
    assert evr_compare(parse_evr("1:1.0-1"), parse_evr("2.0-1")) == 1


@pytest.mark.parametrize("provide_op,provide,require_op,require,expected", [
    ("=", "1.25.0-0", ">=", "1.19.0", True),
    ("=", "1.18.0-0", ">=", "1.19.0", False),
    ("=", "1.0-1", "=", "1.0", True),  # no release in the require: any release
    ("=", "1.0-1", "=", "1.0-2", False),
    ("=", "1.0-1", "<", "1.0-2", True),
    (None, None, ">=", "9", True),  # an unversioned provide satisfies anything
    ("=", "1.0-1", None, None, True),
    (">=", "2.0", "<", "3.0", True),  # range against range: they intersect
    ("<", "2.0", ">", "3.0", False),
])
def test_rpm_ranges_overlap(provide_op, provide, require_op, require, expected) -> None:
    provide_evr = parse_evr(provide) if provide else None
    require_evr = parse_evr(require) if require else None
    assert rpm_ranges_overlap(provide_op, provide_evr, require_op, require_evr) is expected

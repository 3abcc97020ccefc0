"""Version ordering exactly as rpm and dpkg do it, so a closure picks what yum/apt would.

rpm: ``rpmvercmp`` (rpm 4.15+, with ``~`` sorting before anything and ``^`` after the
base version but before any further segment) and EVR comparison where a missing release
on either side matches any release. dpkg: ``verrevcmp`` on epoch, upstream version and
Debian revision (``~`` sorts before the empty string, letters before other symbols).
"""

from __future__ import annotations

from typing import NamedTuple

# Relation operators shared by both families: rpm's EQ/LT/LE/GT/GE flags and dpkg's
# =, <<, <=, >>, >= map onto these.
OPERATORS = ("<", "<=", "=", ">=", ">")
RPM_FLAGS = {"EQ": "=", "LT": "<", "LE": "<=", "GT": ">", "GE": ">="}
DEB_RELATIONS = {"=": "=", "<<": "<", "<=": "<=", ">>": ">", ">=": ">=", "<": "<=", ">": ">="}


def _isdigit(char: str) -> bool:
    return "0" <= char <= "9"


def _isalpha(char: str) -> bool:
    return "a" <= char <= "z" or "A" <= char <= "Z"


def _isalnum(char: str) -> bool:
    return _isdigit(char) or _isalpha(char)


def rpmvercmp(a: str, b: str) -> int:  # noqa: C901 - a faithful port reads best as one loop
    """-1, 0 or 1 as rpm's ``rpmvercmp(a, b)``."""
    if a == b:
        return 0
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        while i < la and not _isalnum(a[i]) and a[i] not in "~^":
            i += 1
        while j < lb and not _isalnum(b[j]) and b[j] not in "~^":
            j += 1
        # "~" sorts before everything, even the end of the string.
        if (i < la and a[i] == "~") or (j < lb and b[j] == "~"):
            if i >= la or a[i] != "~":
                return 1
            if j >= lb or b[j] != "~":
                return -1
            i += 1
            j += 1
            continue
        # "^" sorts after the end of the string but before any other segment.
        if (i < la and a[i] == "^") or (j < lb and b[j] == "^"):
            if i >= la:
                return -1
            if j >= lb:
                return 1
            if a[i] != "^":
                return 1
            if b[j] != "^":
                return -1
            i += 1
            j += 1
            continue
        if not (i < la and j < lb):
            break
        numeric = _isdigit(a[i])
        kind = _isdigit if numeric else _isalpha
        si, sj = i, j
        while i < la and kind(a[i]):
            i += 1
        while j < lb and kind(b[j]):
            j += 1
        one, two = a[si:i], b[sj:j]
        if not one:
            return -1  # cannot happen: a's segment decided the kind
        if not two:
            return 1 if numeric else -1
        if numeric:
            one, two = one.lstrip("0"), two.lstrip("0")
            if len(one) != len(two):
                return 1 if len(one) > len(two) else -1
        if one != two:
            return 1 if one > two else -1
    if i >= la and j >= lb:
        return 0
    return -1 if i >= la else 1


class EVR(NamedTuple):
    """An rpm epoch:version-release; ``release`` None means "any release" in a dependency."""

    epoch: int
    version: str
    release: str | None

    def __str__(self) -> str:
        text = f"{self.epoch}:{self.version}" if self.epoch else self.version
        return f"{text}-{self.release}" if self.release is not None else text


def parse_evr(text: str) -> EVR:
    """``[epoch:]version[-release]`` as written in rpm dependencies and NEVRAs."""
    epoch = 0
    if ":" in text:
        head, _, text = text.partition(":")
        epoch = int(head) if head.isdigit() else 0
    version, sep, release = text.rpartition("-")
    if not sep:
        return EVR(epoch, text, None)
    return EVR(epoch, version, release)


def evr_compare(a: EVR, b: EVR) -> int:
    """-1, 0 or 1 comparing two EVRs as rpm does; a missing release compares equal."""
    if a.epoch != b.epoch:
        return 1 if a.epoch > b.epoch else -1
    result = rpmvercmp(a.version, b.version)
    if result or a.release is None or b.release is None:
        return result
    return rpmvercmp(a.release, b.release)


def _order(char: str) -> int:
    if _isdigit(char):
        return 0
    if _isalpha(char):
        return ord(char)
    if char == "~":
        return -1
    return ord(char) + 256 if char else 0


def _verrevcmp(a: str, b: str) -> int:
    i = j = 0
    la, lb = len(a), len(b)
    while i < la or j < lb:
        first_diff = 0
        while (i < la and not _isdigit(a[i])) or (j < lb and not _isdigit(b[j])):
            ac = _order(a[i]) if i < la else 0
            bc = _order(b[j]) if j < lb else 0
            if ac != bc:
                return ac - bc
            i += 1
            j += 1
        while i < la and a[i] == "0":
            i += 1
        while j < lb and b[j] == "0":
            j += 1
        while i < la and _isdigit(a[i]) and j < lb and _isdigit(b[j]):
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < la and _isdigit(a[i]):
            return 1
        if j < lb and _isdigit(b[j]):
            return -1
        if first_diff:
            return first_diff
    return 0


def split_debian(version: str) -> tuple[int, str, str]:
    """(epoch, upstream, revision) of a Debian version string."""
    epoch = 0
    if ":" in version:
        head, _, version = version.partition(":")
        epoch = int(head) if head.isdigit() else 0
    upstream, sep, revision = version.rpartition("-")
    if not sep:
        return epoch, version, ""
    return epoch, upstream, revision


def debian_compare(a: str, b: str) -> int:
    """-1, 0 or 1 comparing two Debian versions as dpkg does."""
    if a == b:
        return 0
    ea, ua, ra = split_debian(a)
    eb, ub, rb = split_debian(b)
    if ea != eb:
        return 1 if ea > eb else -1
    result = _verrevcmp(ua, ub) or _verrevcmp(ra, rb)
    return (result > 0) - (result < 0)


def holds(sense: int, op: str) -> bool:
    """Whether ``x op y`` holds given ``sense`` = compare(x, y)."""
    if op == "=":
        return sense == 0
    if op == "<":
        return sense < 0
    if op == "<=":
        return sense <= 0
    if op == ">":
        return sense > 0
    if op == ">=":
        return sense >= 0
    raise ValueError(f"unknown relation {op!r}")


def rpm_ranges_overlap(provide_op: str | None, provide: EVR | None,
                       require_op: str | None, require: EVR | None) -> bool:
    """Whether a provide satisfies a require, as rpm's ``rpmdsCompare`` decides it.

    An unversioned side matches anything. Otherwise both are ranges (``= 1.2`` is a point)
    and they must intersect, with a missing release on either side ignored.
    """
    if not provide_op or not require_op or provide is None or require is None:
        return True
    sense = evr_compare(provide, require)
    if sense < 0:
        return ">" in provide_op or "<" in require_op
    if sense > 0:
        return "<" in provide_op or ">" in require_op
    return (("=" in provide_op and "=" in require_op)
            or ("<" in provide_op and "<" in require_op)
            or (">" in provide_op and ">" in require_op))

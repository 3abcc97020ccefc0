"""Shared fixtures and the no-skip guard. Real services are started by fixtures (the lab's,
tests/*/conftest.py) and stopped by pid.

The guard: as root, or with KUBEFERRY_NO_SKIP=1, a skipped test fails the run, whether it
skipped while running or at collection (a module-level skip, a failed import), however
pytest was started: nothing real may hide. In CI (CI=true) the run must also be whole: a
``-m``, ``-k``, ``--deselect`` or a path that narrows it fails the run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# The air-gap lab's fixtures (lab_site, lab_site_factory), for the lab's and the installer's tests.
pytest_plugins = ["kubeferry.lab.fixtures"]

_skipped: list[str] = []
_narrowed: list[str] = []


def guard_on() -> bool:
    """Whether a skip fails the run: as root (every CI run) or when asked."""
    return os.geteuid() == 0 or os.environ.get("KUBEFERRY_NO_SKIP") == "1"


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("CI") != "true":
        return
    option = config.option
    if option.markexpr:
        _narrowed.append(f"-m {option.markexpr!r}")
    if option.keyword:
        _narrowed.append(f"-k {option.keyword!r}")
    if getattr(option, "deselect", None):
        _narrowed.append("--deselect")
    root = Path(str(config.rootpath))
    whole = {(root / path).resolve() for path in config.getini("testpaths")} | {root.resolve()}
    narrowing = [arg for arg in config.args if Path(arg.split("::")[0]).resolve() not in whole]
    if narrowing:
        _narrowed.append("paths " + " ".join(narrowing))


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.skipped:
        _skipped.append(f"{report.nodeid} (at collection)")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    failures = []
    if guard_on() and _skipped:
        failures.append(f"{len(_skipped)} test(s) skipped as root or with KUBEFERRY_NO_SKIP=1: "
                        + ", ".join(_skipped))
    if _narrowed:
        failures.append("CI runs the whole suite, but this run was narrowed by " + ", ".join(_narrowed))
    for line in failures:
        if reporter:
            reporter.write_line(f"FAILED: {line}")
    if failures:
        session.exitstatus = 1

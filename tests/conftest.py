"""Shared fixtures. Real services are started by fixtures in tests/services/ and stopped by pid."""

from __future__ import annotations

import os

import pytest

# The air-gap lab's fixtures (lab_site, lab_site_factory), for the lab's and the installer's tests.
pytest_plugins = ["kubeferry.lab.fixtures"]

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With KUBEFERRY_NO_SKIP=1 (root, CI) a skipped test fails the run: nothing real may hide."""
    if os.environ.get("KUBEFERRY_NO_SKIP") == "1" and _skipped:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter:
            reporter.write_line(
                f"FAILED: {len(_skipped)} test(s) skipped with KUBEFERRY_NO_SKIP=1: "
                + ", ".join(_skipped)
            )
        session.exitstatus = 1

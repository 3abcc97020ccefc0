"""Phase ``registry``: seeds Harbor from the admin host, plans with HEADs, skips without one."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.installer import inventory as inventory_module
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.phases import all_phases, registry
from kubeferry.installer.workflow import ADMIN, run_phase
from kubeferry.lab.harbor import HarborStandIn

pytestmark = pytest.mark.real
PASSWORD_ENV = "KF_TEST_HARBOR_PASSWORD"


def context(tmp_path: Path, bundle: Bundle, registry_section: object, plan: bool = False,
            name: str = "run") -> InstallContext:
    inventory = inventory_module.parse({
        "cluster": {"controlPlaneEndpoint": "10.0.0.11:6443"},
        "registry": registry_section,
        "hosts": [{"name": "cp1", "address": "10.0.0.11", "roles": ["control-plane"]}],
    }, "cluster.yaml")
    return InstallContext(inventory=inventory, bundle=bundle,
                          options=InstallOptions(plan=plan, run_dir=tmp_path / name))


def section(harbor: HarborStandIn, **extra: object) -> dict:
    return {"url": harbor.url, "project": "google_containers", "username": "admin",
            "passwordFrom": f"env:{PASSWORD_ENV}", "caFile": harbor.ca_file, **extra}


def test_registry_runs_after_distribute() -> None:
    names = [phase.name for phase in all_phases()]
    assert names.index("registry") > names.index("distribute")
    assert registry.PHASE.marker is False and registry.PHASE.after is not None


def test_plan_seed_and_rerun(harbor: HarborStandIn, bundle: Bundle, tmp_path: Path,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, harbor.admin_password)
    [planned] = run_phase(context(tmp_path, bundle, section(harbor), plan=True, name="plan"),
                          registry.PHASE)
    assert (planned.host, planned.status) == (ADMIN, "changed")
    created, pushed = planned.plan[0].split("; ")
    assert created == "create Harbor project google_containers (public)"
    assert pushed.startswith(f"push 12 of 12 images to {harbor.url}: upload ")
    assert harbor.model.project("google_containers") is None

    [done] = run_phase(context(tmp_path, bundle, section(harbor)), registry.PHASE)
    assert done.status == "changed", done.detail
    assert done.detail.startswith("created project google_containers; 12 images: 12 pushed")
    log = (tmp_path / "run" / f"{ADMIN}.log").read_text()
    assert "registry: created project" in log and harbor.admin_password not in log

    [again] = run_phase(context(tmp_path, bundle, section(harbor), name="again"), registry.PHASE)
    assert (again.status, again.detail) == ("ok", "")
    [nothing] = run_phase(context(tmp_path, bundle, section(harbor), plan=True, name="plan2"),
                          registry.PHASE)
    assert (nothing.status, nothing.plan) == ("ok", [])


def test_without_a_registry_there_is_nothing_to_do(bundle: Bundle, tmp_path: Path) -> None:
    [result] = run_phase(context(tmp_path, bundle, "none"), registry.PHASE)
    assert (result.host, result.status, result.detail) == (ADMIN, "ok", "")


def test_a_missing_password_or_a_down_harbor_fails_the_phase(
        harbor: HarborStandIn, bundle: Bundle, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    no_password = {k: v for k, v in section(harbor).items() if k != "passwordFrom"}
    [failed] = run_phase(context(tmp_path, bundle, no_password), registry.PHASE)
    assert failed.status == "failed" and "registry.passwordFrom is not set" in failed.detail
    monkeypatch.setenv(PASSWORD_ENV, harbor.admin_password)
    harbor.stop()
    [down] = run_phase(context(tmp_path, bundle, section(harbor), name="down"), registry.PHASE)
    assert down.status == "failed"
    assert down.detail == f"cannot reach Harbor at {harbor.url}: connection refused"
    harbor.start()
    [resumed] = run_phase(context(tmp_path, bundle, section(harbor), name="resumed"), registry.PHASE)
    assert resumed.status == "changed", resumed.detail

"""HarborAPI: the calls kubeferry makes, no cookies kept, the password never shown."""

from __future__ import annotations

import pytest

from kubeferry.errors import InputError, OperationError
from kubeferry.installer.harbor_api import HarborAPI
from kubeferry.lab.harbor import HarborStandIn

pytestmark = pytest.mark.real


def api_for(harbor: HarborStandIn, password: str | None = None) -> HarborAPI:
    return HarborAPI(harbor.url, harbor.admin_username, password or harbor.admin_password,
                     harbor.ca_file, timeout=10)


def test_calls_and_no_cookie_ever_goes_back(harbor: HarborStandIn) -> None:
    with api_for(harbor) as api:
        assert api.systeminfo()["external_url"] == harbor.url
        assert api.health()["status"] == "healthy"
        assert api.project_exists("library") and not api.project_exists("google_containers")
        assert api.get_project("google_containers") is None
        assert api.create_project("google_containers") is True
        assert api.create_project("google_containers") is False  # 409: already there
        project = api.get_project("google_containers")
        assert project is not None and project["metadata"] == {"public": "true"}
        assert api.create_project("private-one", public=False) is True
    exchanges = harbor.requests(contains="/api/")
    assert all("Set-Cookie" in e.response_headers for e in exchanges)  # Harbor offers a session
    assert [e for e in exchanges if e.header("Cookie")] == []  # and it is never taken
    assert all(e.status != 403 for e in exchanges)


def test_the_password_is_never_shown(harbor: HarborStandIn) -> None:
    api = api_for(harbor)
    assert harbor.admin_password not in repr(api)
    api.close()


def test_refusals(harbor: HarborStandIn) -> None:
    with api_for(harbor, password="wrong") as api:
        assert "external_url" not in api.systeminfo()  # anonymous view, as Harbor does
        with pytest.raises(InputError, match=r"refused the credentials of user 'admin' \(HTTP 401\)"):
            api.project_exists("library")
    with api_for(harbor) as api, pytest.raises(InputError, match="refused project name 'Bad'"):
        api.create_project("Bad")
    with HarborAPI(harbor.url, timeout=10) as untrusted, pytest.raises(
            OperationError, match="cannot verify Harbor's certificate"):
        untrusted.systeminfo()
    with pytest.raises(InputError, match="cannot read CA file"):
        HarborAPI(harbor.url, ca_file="/nonexistent/ca.pem")
    harbor.stop()
    with api_for(harbor) as api, pytest.raises(OperationError, match="cannot reach Harbor at"):
        api.health()

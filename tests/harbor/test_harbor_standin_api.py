"""The Harbor stand-in's API, every request and answer checked against Harbor's real swagger."""

from __future__ import annotations

from pathlib import Path

import pytest
from harbor_helpers import admin, call
from harbor_swagger import Spec, template_of

from kubeferry.lab.harbor import HarborStandIn

pytestmark = pytest.mark.real

# Statuses Harbor 2.6 really answers that its swagger does not declare for the operation.
UNDECLARED = {
    ("HEAD", "/projects"): {401: "HeadProject requires a login (RequireAuthenticated)"},
    ("GET", "/projects/{project_name_or_id}"): {
        403: "a missing name is 403 even for the admin (goharbor/harbor#17586)",
        404: "a missing id, asked by the admin",
    },
    ("POST", "/projects"): {403: "CSRF check when a sid cookie is sent; adminonly creation"},
}

INVALID_NAMES = ["", "Upper", "a..b", "-ab", "ab-", "a_", "a b", "ab/c", "ü", "a" * 256]


def check_exchanges(harbor: HarborStandIn, spec: Spec,
                    malformed_requests: bool = False) -> list[tuple[bytes, list[str]]]:
    """Validate every API answer recorded so far, and every request unless the test sent
    malformed ones on purpose: then return (request body, problems) for each request."""
    exchanges = harbor.requests(contains="/api/v2.0/")
    assert exchanges
    answers, requests = [], []
    for exchange in exchanges:
        template = template_of(exchange.path)
        query = dict(part.split("=", 1) for part in exchange.query.split("&") if "=" in part)
        asked = spec.request_problems(exchange.method, template, query, exchange.headers,
                                      exchange.body)
        requests.append((exchange.body, asked))
        found = spec.response_problems(exchange.method, template, exchange.status,
                                       exchange.response_headers, exchange.response_body,
                                       UNDECLARED.get((exchange.method, template)))
        answers += [f"{exchange.method} {exchange.path} -> {exchange.status}: {p}" for p in found]
    assert answers == []
    if not malformed_requests:
        assert [problems for _, problems in requests if problems] == []
    return requests


def test_systeminfo_anonymous_and_logged_in(harbor: HarborStandIn, spec: Spec) -> None:
    anonymous = call(harbor, "GET", "/systeminfo")
    assert anonymous.status_code == 200
    assert set(anonymous.json()) == {"auth_mode", "self_registration", "harbor_version"}
    logged_in = call(harbor, "GET", "/systeminfo", auth=admin(harbor)).json()
    assert logged_in["external_url"] == harbor.url
    assert logged_in["registry_url"] == harbor.host
    assert logged_in["project_creation_restriction"] == "everyone"
    # a wrong password is treated as no login at all, as Harbor's security middleware does
    wrong = call(harbor, "GET", "/systeminfo", auth=("admin", "wrong"))
    assert wrong.status_code == 200 and "external_url" not in wrong.json()
    assert call(harbor, "GET", "/ping").text == "Pong"
    assert len(check_exchanges(harbor, spec)) == 4


def test_health_reports_the_registry(harbor: HarborStandIn, spec: Spec) -> None:
    healthy = call(harbor, "GET", "/health").json()
    assert healthy == {"status": "healthy", "components": [
        {"name": "core", "status": "healthy"}, {"name": "registry", "status": "healthy"}]}
    assert harbor.registry is not None
    harbor.registry.stop()
    sick = call(harbor, "GET", "/health").json()
    assert sick["status"] == "unhealthy"
    registry = sick["components"][1]
    assert registry["status"] == "unhealthy" and "does not answer" in registry["error"]
    check_exchanges(harbor, spec)


def test_head_project(harbor: HarborStandIn, spec: Spec) -> None:
    assert call(harbor, "HEAD", "/projects", params={"project_name": "library"},
                auth=admin(harbor)).status_code == 200
    assert call(harbor, "HEAD", "/projects", params={"project_name": "nope"},
                auth=admin(harbor)).status_code == 404
    assert call(harbor, "HEAD", "/projects", params={"project_name": "library"}).status_code == 401
    assert call(harbor, "HEAD", "/projects", params={"project_name": "library"},
                auth=("admin", "wrong")).status_code == 401
    check_exchanges(harbor, spec)


def test_create_project_then_get_it_by_name_and_id(harbor: HarborStandIn, spec: Spec) -> None:
    created = call(harbor, "POST", "/projects", auth=admin(harbor),
                   json={"project_name": "google_containers", "metadata": {"public": "true"}})
    assert created.status_code == 201 and created.content == b""
    location = created.headers["Location"]
    assert location.startswith("/api/v2.0/projects/") and location.rsplit("/", 1)[1].isdigit()
    by_name = call(harbor, "GET", "/projects/google_containers", auth=admin(harbor),
                   headers={"X-Is-Resource-Name": "true"}).json()
    by_id = call(harbor, "GET", "/projects/" + location.rsplit("/", 1)[1], auth=admin(harbor)).json()
    assert by_name == by_id
    assert by_name["name"] == "google_containers" and by_name["metadata"] == {"public": "true"}
    assert by_name["owner_name"] == "admin" and by_name["repo_count"] == 0
    # the Location can name the project instead (X-Resource-Name-In-Location)
    named = call(harbor, "POST", "/projects", auth=admin(harbor),
                 headers={"X-Resource-Name-In-Location": "true"}, json={"project_name": "calico"})
    assert named.headers["Location"] == "/api/v2.0/projects/calico"
    private = call(harbor, "GET", "/projects/calico", auth=admin(harbor)).json()
    assert private["metadata"] == {"public": "false"}  # Harbor's default
    listed = call(harbor, "GET", "/projects", auth=admin(harbor)).json()
    assert [p["name"] for p in listed] == ["library", "google_containers", "calico"]
    check_exchanges(harbor, spec)


def test_create_project_refusals(harbor: HarborStandIn, spec: Spec) -> None:
    body = {"project_name": "dupe", "metadata": {"public": "true"}}
    assert call(harbor, "POST", "/projects", json=body).status_code == 401
    assert call(harbor, "POST", "/projects", json=body, auth=("admin", "wrong")).status_code == 401
    assert call(harbor, "POST", "/projects", json=body, auth=admin(harbor)).status_code == 201
    conflict = call(harbor, "POST", "/projects", json=body, auth=admin(harbor))
    assert conflict.status_code == 409
    assert conflict.json()["errors"][0]["code"] == "CONFLICT"
    for name in INVALID_NAMES:
        refused = call(harbor, "POST", "/projects", json={"project_name": name}, auth=admin(harbor))
        assert refused.status_code == 400, name
        assert refused.json()["errors"][0]["code"] == "BAD_REQUEST"
    for bad in ({"project_name": "ok", "metadata": {"public": "yes"}},
                {"project_name": "ok", "metadata": {"public": True}},
                {"project_name": "ok", "public": "true"}):
        assert call(harbor, "POST", "/projects", json=bad, auth=admin(harbor)).status_code == 400
    not_json = call(harbor, "POST", "/projects", data=b"{", auth=admin(harbor),
                    headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400
    assert harbor.model.project("ok") is None
    # every answer is Harbor's; the requests the spec itself rejects are exactly those
    # whose types are wrong (Harbor checks the rest: names, metadata.public values)
    flagged = {body for body, problems in check_exchanges(harbor, spec, True) if problems}
    assert flagged == {b"{", b'{"project_name": "ok", "metadata": {"public": true}}',
                       b'{"project_name": "ok", "public": "true"}',
                       ('{"project_name": "' + "a" * 256 + '"}').encode()}


def test_valid_names_are_accepted(harbor: HarborStandIn, spec: Spec) -> None:
    for name in ("a", "google_containers", "k8s.io", "a-b_c.d", "0", "a" * 255):
        assert call(harbor, "POST", "/projects", json={"project_name": name},
                    auth=admin(harbor)).status_code == 201, name
    check_exchanges(harbor, spec)


def test_get_project_access_rules(harbor: HarborStandIn, spec: Spec) -> None:
    call(harbor, "POST", "/projects", json={"project_name": "secret"}, auth=admin(harbor))
    assert call(harbor, "GET", "/projects/library").status_code == 200  # public: anonymous ok
    assert call(harbor, "GET", "/projects/secret").status_code == 401
    assert call(harbor, "GET", "/projects/secret", auth=("dev", "dev-pass-1")).status_code == 403
    assert call(harbor, "GET", "/projects/secret", auth=admin(harbor)).status_code == 200
    missing = call(harbor, "GET", "/projects/nope", auth=admin(harbor))
    assert missing.status_code == 403  # Harbor 2.6's answer for a missing name
    assert call(harbor, "GET", "/projects/999", auth=admin(harbor)).status_code == 404
    assert call(harbor, "GET", "/projects/nope").status_code == 401
    check_exchanges(harbor, spec)


def test_any_user_may_create_unless_admin_only(harbor: HarborStandIn, spec: Spec,
                                                tmp_path: Path) -> None:
    dev = ("dev", "dev-pass-1")
    assert call(harbor, "POST", "/projects", json={"project_name": "mine"}, auth=dev).status_code == 201
    mine = call(harbor, "GET", "/projects/mine", auth=dev).json()
    assert mine["owner_name"] == "dev" and mine["current_user_role_ids"] == [1]
    check_exchanges(harbor, spec)
    with HarborStandIn(tmp_path / "strict", users={"dev": "dev-pass-1"},
                       project_creation="adminonly") as strict:
        refused = call(strict, "POST", "/projects", json={"project_name": "mine"}, auth=dev)
        assert refused.status_code == 403
        assert call(strict, "GET", "/systeminfo", auth=dev).json()[
            "project_creation_restriction"] == "adminonly"
        check_exchanges(strict, spec)


def test_a_client_that_keeps_cookies_fails_csrf(harbor: HarborStandIn, spec: Spec) -> None:
    """Why API clients must not keep Harbor's session cookie (FACTS: CSRF)."""
    import requests

    with requests.Session() as session:
        session.trust_env = False
        first = session.get(harbor.url + "/api/v2.0/systeminfo", verify=harbor.ca_file, timeout=10)
        assert "sid=" in first.headers["Set-Cookie"]
        refused = session.post(harbor.url + "/api/v2.0/projects", json={"project_name": "x"},
                               auth=admin(harbor), verify=harbor.ca_file, timeout=10)
    assert refused.status_code == 403
    assert refused.json() == {"errors": [{"code": "FORBIDDEN", "message": "CSRF token invalid"}]}
    check_exchanges(harbor, spec)


def test_the_checker_catches_what_harbor_would_never_send(spec: Spec) -> None:
    """The validator is not a rubber stamp."""
    project = spec.data["definitions"]["Project"]
    assert spec.problems(project, {"name": "a", "project_id": 1}) == []
    assert spec.problems(project, {"name": 1}) == ["body.name: 1 is not a string"]
    assert spec.problems(project, {"colour": "red"}) == ["body.colour: not a property of this model"]
    assert spec.problems(project, {"metadata": {"public": True}}) == [
        "body.metadata.public: true is not a string"]
    assert spec.problems(project, {"creation_time": "yesterday"}) == [
        "body.creation_time: 'yesterday' is not a date-time"]
    assert spec.problems(project, {"project_id": 2**40}) == [
        "body.project_id: 1099511627776 is out of int32 range"]
    assert spec.response_problems("POST", "/projects", 418, {}, b"") == [
        "status 418 is not declared for POST /projects"]
    assert spec.response_problems("POST", "/projects", 201, {"X-Request-Id": "1"}, b"") == [
        "header Location: missing from a 201"]
    assert spec.request_problems("HEAD", "/projects", {}, {}, b"") == ["query project_name: required"]

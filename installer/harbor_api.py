"""A small client for the Harbor v2 API calls kubeferry makes: reach, health, projects.

Its session is ``kubeferry.transport``'s: every call has a timeout and is retried on 429,
5xx and refused connections. Cookies are refused there: Harbor answers API calls with a
``sid`` session cookie, and a client that sends it back must pass Harbor's CSRF check
(which a Basic-auth client cannot), so a POST after a GET would fail with 403. The password
is sent as Basic auth only to Harbor's own URL and is never logged or shown in a repr.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import requests

from kubeferry import timeouts, transport
from kubeferry.errors import InputError, KubeferryError, OperationError

API = "/api/v2.0"
DEFAULT_TIMEOUT = None  # kubeferry.timeouts' connect and read timeouts (--connect/--read-timeout)


class HarborAPI:
    """Harbor at ``url`` (``https://harbor.example.local``), as ``username``."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None,
                 timeout: float | tuple[float, float] | None = DEFAULT_TIMEOUT,
                 retries: int = transport.RETRIES) -> None:
        self.url = url.rstrip("/")
        self.username = username
        self._password = password
        self.session = transport.session(jobs=1, ca_files=(ca_file,), retries=retries,
                                         timeout=timeout)

    def __repr__(self) -> str:
        return f"HarborAPI({self.url!r}, username={self.username!r})"

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HarborAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport ---------------------------------------------------------------------------

    def _call(self, method: str, path: str, *, params: dict | None = None,
              json_body: object = None, headers: dict[str, str] | None = None,
              anonymous: bool = False) -> requests.Response:
        auth = None
        if not anonymous and self.username is not None and self._password is not None:
            auth = requests.auth.HTTPBasicAuth(self.username, self._password)
        read = timeouts.resolve(self.session.timeout)[1]
        try:
            with timeouts.waiting(f"Harbor at {self.url} to answer {method} {API}{path}", read):
                return self.session.request(
                    method, f"{self.url}{API}{path}", params=params, json=json_body,
                    headers=headers, auth=auth, allow_redirects=False,
                )
        except requests.exceptions.SSLError as error:
            raise OperationError(
                f"cannot verify Harbor's certificate at {self.url} ({transport.reason(error)});"
                " pass Harbor's CA certificate (--ca-file / registry.caFile)"
            ) from None
        except requests.RequestException as error:
            raise transport.unreachable(error, f"Harbor at {self.url}", method, API + path,
                                        self.session, "pass Harbor's CA certificate") from None

    def _fail(self, response: requests.Response, what: str) -> KubeferryError:
        status = response.status_code
        detail = _message(response)
        if status == 401:
            return InputError(
                f"Harbor at {self.url} refused the credentials of user {self.username!r}"
                f" (HTTP 401) while trying to {what}; check the user name and password"
            )
        if status == 403:
            return OperationError(
                f"Harbor at {self.url} does not let user {self.username!r} {what}"
                f" (HTTP 403{': ' + detail if detail else ''})"
            )
        return OperationError(
            f"Harbor at {self.url} answered HTTP {status} when asked to {what}"
            f"{': ' + detail if detail else ''}"
        )

    # -- calls -----------------------------------------------------------------------------------

    def systeminfo(self, anonymous: bool = False) -> dict:
        """``GET /systeminfo`` (works anonymously; more fields for a logged-in user)."""
        response = self._call("GET", "/systeminfo", anonymous=anonymous)
        if response.status_code != 200:
            raise self._fail(response, "read its system info")
        return _json_object(response, self.url, "systeminfo")

    def health(self) -> dict:
        """``GET /health``: ``{"status": "healthy", "components": [...]}``."""
        response = self._call("GET", "/health", anonymous=True)
        if response.status_code != 200:
            raise self._fail(response, "report its health")
        return _json_object(response, self.url, "health")

    def project_exists(self, name: str) -> bool:
        """``HEAD /projects?project_name=NAME``: 200 yes, 404 no."""
        response = self._call("HEAD", "/projects", params={"project_name": name})
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        raise self._fail(response, f"check whether project {name} exists")

    def get_project(self, name: str, exists: bool = False) -> dict | None:
        """``GET /projects/NAME``; None when it does not exist.

        Harbor 2.6 answers 403 for a name that does not exist, even to the admin
        (goharbor/harbor#17586), so the existence is checked with HEAD first, unless the
        caller has just seen it (``exists``: one round trip less).
        """
        if not exists and not self.project_exists(name):
            return None
        response = self._call("GET", f"/projects/{quote(name, safe='')}",
                              headers={"X-Is-Resource-Name": "true"})
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise self._fail(response, f"read project {name}")
        return _json_object(response, self.url, f"project {name}")

    def create_project(self, name: str, public: bool = True) -> bool:
        """``POST /projects``; True when created, False when it already existed (409)."""
        body = {"project_name": name, "metadata": {"public": "true" if public else "false"}}
        response = self._call("POST", "/projects", json_body=body)
        if response.status_code == 201:
            return True
        if response.status_code == 409:
            return False
        if response.status_code == 400:
            raise InputError(f"Harbor at {self.url} refused project name {name!r}:"
                             f" {_message(response) or 'HTTP 400'}")
        raise self._fail(response, f"create project {name}")


def _message(response: requests.Response) -> str:
    """The first message of Harbor's ``{"errors": [...]}`` body, if there is one."""
    try:
        errors = json.loads(response.content[:65536] or b"{}").get("errors") or []
        return str(errors[0].get("message") or errors[0].get("code") or "")
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


def _json_object(response: requests.Response, url: str, what: str) -> dict:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise OperationError(f"Harbor at {url} sent something that is not JSON for {what};"
                             " is this URL really Harbor?")
    return data

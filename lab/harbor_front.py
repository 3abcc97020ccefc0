"""The Harbor stand-in's one HTTPS address: ``/api/v2.0``, ``/service/token`` and ``/v2/``.

Real Harbor puts nginx and harbor-core in front of a distribution registry configured for
token auth. This server plays both parts: it answers the Harbor API subset kubeferry uses
itself, hosts the token endpoint (service ``harbor-registry``), and streams every
``/v2/`` request to the real registry on loopback (chunked uploads included), after
refusing, as Harbor does, anything aimed at a project that does not exist. API answers
carry ``X-Request-Id`` and a ``sid`` session cookie; an unsafe API call that sends a
``sid`` cookie back needs a CSRF token (Harbor's rule, why API clients must not keep
cookies). Every request is recorded (no credentials) for tests to check.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import secrets
import socket
import ssl
import sys
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Iterator
from urllib.parse import parse_qsl, unquote, urlsplit

from kubeferry.lab.harbor_projects import HarborModel, ProjectExists, User, check_project_name, now
from kubeferry.lab.token_service import TokenService

API = "/api/v2.0"
TOKEN_PATH = "/service/token"
VERSION = "v2.6.0-kubeferry-standin"
PROXY_TIMEOUT = 120.0
MAX_API_BODY = 1 << 20
_CHUNK = 1 << 20
_HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te",
    "trailers", "transfer-encoding", "upgrade",
})
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass
class Exchange:
    """One request the stand-in answered. Credentials are reduced to their scheme."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""  # recorded for /api/ only
    status: int = 0
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: bytes = b""  # recorded for /api/ only

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), None)

    def response_header(self, name: str) -> str | None:
        return next((v for k, v in self.response_headers.items() if k.lower() == name.lower()), None)

    def json(self) -> object:
        return json.loads(self.response_body) if self.response_body else None


def _redacted(headers: dict[str, str]) -> dict[str, str]:
    out = {}
    for name, value in headers.items():
        if name.lower() == "authorization":
            value = value.split(" ", 1)[0] + " <redacted>"
        elif name.lower() == "cookie":
            value = "; ".join(part.split("=", 1)[0] + "=<redacted>" for part in value.split(";"))
        out[name] = value
    return out


def errors(code: str, message: str) -> dict:
    """Harbor's ``Errors`` body."""
    return {"errors": [{"code": code, "message": message}]}


@dataclass
class Backend:
    """What the handler needs: the model, the token service, where the registry listens."""

    model: HarborModel
    tokens: TokenService
    registry_port: int
    record: Callable[[Exchange], None]  # as the request arrives (its answer is filled in later)
    finished: Callable[[Exchange], None]  # once answered
    registry_healthy: Callable[[], str | None]  # None when healthy, else the error
    repo_count: Callable[[str], int]  # repositories holding a manifest under a project
    public_url: str


Answer = tuple[int, object, dict[str, str]]  # status, JSON body (None: empty), extra headers


class HarborServer(ThreadingHTTPServer):
    """A threaded TLS server that can drop its open connections (to play "Harbor is down")."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], context: ssl.SSLContext | None) -> None:
        super().__init__(address, HarborHandler)
        if context is not None:
            # the handshake happens in the handler thread: a slow client blocks nobody else
            self.socket = context.wrap_socket(
                self.socket, server_side=True, do_handshake_on_connect=False
            )
        self.backend: Backend | None = None
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:  # type: ignore[no-untyped-def]
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        with self._open_lock:
            open_now = list(self._open)
        for sock in open_now:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:  # type: ignore[no-untyped-def]
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError, ssl.SSLError, OSError)):
            return  # a client that hung up or failed the TLS handshake: not the server's problem
        super().handle_error(request, client_address)  # a bug: its traceback goes to the log


class HarborHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = PROXY_TIMEOUT
    server: HarborServer

    # -- dispatch -------------------------------------------------------------------------

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        self.exchange = Exchange(self.command, parts.path, parts.query, _redacted(dict(self.headers)))
        self.backend.record(self.exchange)  # before answering: a client never sees it missing
        try:
            if parts.path == "/v2" or parts.path.startswith("/v2/"):
                self._v2(parts.path)
            elif parts.path == TOKEN_PATH:
                self._token(parts.query)
            elif parts.path.startswith("/api/"):
                self._api(parts.path, parts.query)
            else:
                self._send_json(404, errors("NOT_FOUND", f"{parts.path} not found"))
        finally:
            self.backend.finished(self.exchange)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815

    @property
    def backend(self) -> Backend:
        assert self.server.backend is not None
        return self.server.backend

    def log_message(self, *args: object) -> None:
        pass  # requests are recorded as Exchanges instead

    def _send_json(self, status: int, body: object | None, headers: dict[str, str] | None = None,
                   api: bool = False) -> None:
        sent = dict(headers or {})
        if isinstance(body, str):  # /ping answers text/plain
            data = body.encode()
            sent["Content-Type"] = "text/plain"
        else:
            data = b"" if body is None else json.dumps(body).encode()
            if data:
                sent["Content-Type"] = "application/json; charset=utf-8"
        self.exchange.status = status  # recorded before the client can see the answer
        self.exchange.response_headers = {**sent, "Content-Length": str(len(data))}
        if api:
            self.exchange.response_body = data
        self.send_response(status)
        for name, value in sent.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- /service/token -----------------------------------------------------------------------

    def _token(self, query: str) -> None:
        if self.command != "GET":
            self._send_json(405, errors("METHOD_NOT_ALLOWED", "method not allowed"))
            return
        status, body = self.backend.tokens.answer(query, self.headers.get("Authorization"))
        self._send_json(status, body)

    # -- /api/v2.0 --------------------------------------------------------------------------

    def _api(self, path: str, query: str) -> None:
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # API bodies come with a Content-Length; don't guess
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_API_BODY:
            self.close_connection = True
            self._send_json(413, errors("BAD_REQUEST", "request body too large"), api=True)
            return
        body = self.rfile.read(length) if length else b""
        self.exchange.body = body
        headers = {"X-Request-Id": self.headers.get("X-Request-Id") or str(uuid.uuid4())}
        sid = self._cookie("sid")
        if sid is None:
            headers["Set-Cookie"] = f"sid={secrets.token_hex(16)}; Path=/; Secure; HttpOnly"
        if sid is not None and self.command in _UNSAFE:
            # Harbor skips its CSRF check for API calls only when no session cookie is sent
            self._send_json(403, errors("FORBIDDEN", "CSRF token invalid"), headers, api=True)
            return
        user = self.backend.model.login(self.headers.get("Authorization"))
        route = path[len(API):] if path.startswith(API + "/") else None
        status, answer, extra = self._route(route, dict(parse_qsl(query, keep_blank_values=True)), body, user)
        headers.update(extra)
        self._send_json(status, answer, headers, api=True)

    def _cookie(self, name: str) -> str | None:
        for part in (self.headers.get("Cookie") or "").split(";"):
            key, sep, value = part.strip().partition("=")
            if sep and key == name:
                return value
        return None

    def _route(self, route: str | None, query: dict[str, str], body: bytes,
               user: User | None) -> Answer:
        method = self.command
        if route in ("/ping", "/systeminfo", "/health"):
            if method != "GET":
                return 405, errors("METHOD_NOT_ALLOWED", "method not allowed"), {}
            if route == "/ping":
                return 200, "Pong", {}
            return 200, self._systeminfo(user) if route == "/systeminfo" else self._health(), {}
        if route == "/projects":
            if method == "HEAD":
                return self._head_project(query, user)
            if method == "POST":
                return self._create_project(body, user)
            if method == "GET":
                return self._list_projects(query, user)
            return 405, errors("METHOD_NOT_ALLOWED", "method not allowed"), {}
        if route is not None and route.startswith("/projects/") and route.count("/") == 2:
            if method != "GET":
                return 405, errors("METHOD_NOT_ALLOWED", "not implemented by the stand-in"), {}
            return self._get_project(unquote(route[len("/projects/"):]), user)
        return 404, errors("NOT_FOUND", f"{API}{route or ''} is not implemented by the stand-in"), {}

    def _systeminfo(self, user: User | None) -> dict:
        info: dict = {"auth_mode": "db_auth", "self_registration": False, "harbor_version": VERSION}
        if user is not None:  # Harbor adds the "protected" part for a logged-in caller
            url = self.backend.public_url
            info.update({
                "has_ca_root": False,
                "project_creation_restriction": self.backend.model.project_creation,
                "external_url": url,
                "registry_url": urlsplit(url).netloc,
                "with_chartmuseum": False,
                "with_notary": False,
                "read_only": False,
                "registry_storage_provider_name": "filesystem",
                "notification_enable": False,
                "current_time": now(),
            })
        return info

    def _health(self) -> dict:
        problem = self.backend.registry_healthy()
        registry = {"name": "registry", "status": "healthy" if problem is None else "unhealthy"}
        if problem is not None:
            registry["error"] = problem
        components = [{"name": "core", "status": "healthy"}, registry]
        overall = "healthy" if problem is None else "unhealthy"
        return {"status": overall, "components": components}

    def _head_project(self, query: dict[str, str], user: User | None) -> Answer:
        if user is None:  # v2.6 HeadProject: RequireAuthenticated first
            return 401, errors("UNAUTHORIZED", "unauthorized"), {}
        name = query.get("project_name")
        if not name:
            return 400, errors("BAD_REQUEST", "project_name in query is required"), {}
        if self.backend.model.project(name) is None:
            return 404, errors("NOT_FOUND", f"project {name} not found"), {}
        return 200, None, {}

    def _create_project(self, body: bytes, user: User | None) -> Answer:
        if user is None:
            return 401, errors("UNAUTHORIZED", "unauthorized"), {}
        model = self.backend.model
        if not model.may_create(user):
            return 403, errors("FORBIDDEN", "Only system admin can create project"), {}
        try:
            request = json.loads(body or b"null")
        except ValueError as error:
            return 400, errors("BAD_REQUEST", f"parsing project body failed: {error}"), {}
        problem, name, public = _project_request(request)
        if problem:
            return 400, errors("BAD_REQUEST", problem), {}
        try:
            project = model.create(name, public, user)
        except ProjectExists:
            return 409, errors("CONFLICT", f"The project named {name} already exists"), {}
        by_name = (self.headers.get("X-Resource-Name-In-Location") or "").lower() == "true"
        location = f"{API}/projects/{project.name if by_name else project.project_id}"
        return 201, None, {"Location": location}

    def _get_project(self, name_or_id: str, user: User | None) -> Answer:
        model = self.backend.model
        by_name = (self.headers.get("X-Is-Resource-Name") or "").lower() == "true"
        if not by_name and name_or_id.isdigit():
            project = model.project_by_id(int(name_or_id))
            if project is None:
                # Harbor resolves the id after checking access: only an admin learns it is missing
                if user is None:
                    return 401, errors("UNAUTHORIZED", "unauthorized"), {}
                if not user.admin:
                    return 403, errors("FORBIDDEN", "forbidden"), {}
                return 404, errors("NOT_FOUND", f"project {name_or_id} not found"), {}
        else:
            project = model.project(name_or_id)
            if project is None:
                # v2.6 answers 403 for a missing name, even to the admin (goharbor/harbor#17586)
                if user is None:
                    return 401, errors("UNAUTHORIZED", "unauthorized"), {}
                return 403, errors("FORBIDDEN", "forbidden"), {}
        if not model.may_read(project, user):
            if user is None:
                return 401, errors("UNAUTHORIZED", "unauthorized"), {}
            return 403, errors("FORBIDDEN", "forbidden"), {}
        return 200, project.to_api(user, self._repo_count(project.name)), {}

    def _list_projects(self, query: dict[str, str], user: User | None) -> Answer:
        model = self.backend.model
        wanted = query.get("name", "")
        visible = [p for p in model.projects() if model.may_read(p, user) and wanted in p.name]
        body = [p.to_api(user, self._repo_count(p.name)) for p in visible]
        return 200, body, {"X-Total-Count": str(len(body))}

    def _repo_count(self, project: str) -> int:
        return self.backend.repo_count(project)

    # -- /v2/ ----------------------------------------------------------------------------------

    def _v2(self, path: str) -> None:
        refusal = self._missing_project(path)
        if refusal is not None:
            self._drain_request_body()
            self._send_json(401, errors("UNAUTHORIZED", refusal[1]),
                            {"WWW-Authenticate": refusal[0],
                             "Docker-Distribution-Api-Version": "registry/2.0"})
            return
        upstream = http.client.HTTPConnection("127.0.0.1", self.backend.registry_port,
                                              timeout=PROXY_TIMEOUT)
        try:
            try:
                response = self._forward(upstream)
            except OSError as error:
                self.close_connection = True
                self._send_json(502, errors("BAD_GATEWAY", f"registry unavailable: {error}"))
                return
            self._relay(response)
        finally:
            upstream.close()

    def _missing_project(self, path: str) -> tuple[str, str] | None:
        """(challenge, message) when ``path`` names a repository outside any project."""
        rest = path[len("/v2/"):]
        for marker in ("/blobs/", "/manifests/", "/tags/"):
            if marker in rest:
                repository = rest.split(marker, 1)[0]
                break
        else:
            return None
        project, sep, _ = repository.partition("/")
        if sep and self.backend.model.project(project) is not None:
            return None
        actions = "pull" if self.command in ("GET", "HEAD") else "pull,push"
        challenge = (f'Bearer realm="{self._realm()}",service="{self.backend.tokens.service}",'
                     f'scope="repository:{repository}:{actions}"')
        return challenge, f"project {project} not found"

    def _realm(self) -> str:
        """The token realm under the name the client used for us (as Harbor's external URL)."""
        host = self.headers.get("Host") or urlsplit(self.backend.public_url).netloc
        return f"https://{host}{TOKEN_PATH}"

    def _drain_request_body(self) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            for _ in self._request_chunks():
                pass
            return
        remaining = int(self.headers.get("Content-Length") or 0)
        while remaining > 0:
            data = self.rfile.read(min(_CHUNK, remaining))
            if not data:
                break
            remaining -= len(data)

    def _request_chunks(self) -> Iterator[bytes]:
        """The decoded body of a chunked request, as it arrives."""
        while True:
            size_line = self.rfile.readline(65537)
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining > 0:
                data = self.rfile.read(min(_CHUNK, remaining))
                if not data:
                    raise ConnectionError("client closed the connection mid-chunk")
                remaining -= len(data)
                yield data
            self.rfile.readline(3)  # the CRLF after each chunk

    def _forward(self, upstream: http.client.HTTPConnection) -> http.client.HTTPResponse:
        upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
        for name, value in self.headers.items():
            if name.lower() not in _HOP_BY_HOP:
                upstream.putheader(name, value)
        upstream.putheader("X-Forwarded-Proto", "https")
        chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
        if chunked:
            upstream.putheader("Transfer-Encoding", "chunked")
        upstream.endheaders()
        if chunked:
            for data in self._request_chunks():
                upstream.send(b"%x\r\n%b\r\n" % (len(data), data))
            upstream.send(b"0\r\n\r\n")
        else:
            remaining = int(self.headers.get("Content-Length") or 0)
            while remaining > 0:
                data = self.rfile.read(min(_CHUNK, remaining))
                if not data:
                    raise ConnectionError("client closed the connection mid-body")
                upstream.send(data)
                remaining -= len(data)
        return upstream.getresponse()

    def _relay(self, response: http.client.HTTPResponse) -> None:
        self.send_response_only(response.status, response.reason)  # the registry's Date stays
        sent: dict[str, str] = {}
        for name, value in response.getheaders():
            if name.lower() in _HOP_BY_HOP:
                continue
            if name.lower() == "www-authenticate":
                value = value.replace(self.backend.tokens.realm, self._realm())
            self.send_header(name, value)
            sent[name] = value
        bodiless = self.command == "HEAD" or response.status in (204, 304)
        chunked = not bodiless and response.getheader("Content-Length") is None
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        self.exchange.status = response.status
        self.exchange.response_headers = sent
        self.end_headers()
        if bodiless:
            return
        while True:
            data = response.read(_CHUNK)
            if not data:
                break
            self.wfile.write(b"%x\r\n%b\r\n" % (len(data), data) if chunked else data)
        if chunked:
            self.wfile.write(b"0\r\n\r\n")


def _project_request(request: object) -> tuple[str | None, str, bool]:
    """(problem, name, public) for a ``ProjectReq`` body, checked as Harbor 2.6 does."""
    if not isinstance(request, dict):
        return "the request body must be a ProjectReq JSON object", "", False
    name = request.get("project_name")
    problem = check_project_name(name)
    if problem:
        return problem, "", False
    metadata = request.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        return "metadata must be a JSON object", "", False
    for key, value in metadata.items():
        if value is not None and not isinstance(value, str):
            return f"metadata.{key} must be a string, not {json.dumps(value)}", "", False
    public_flag = request.get("public")
    if public_flag is not None and not isinstance(public_flag, bool):
        return "public must be a boolean", "", False
    public = metadata.get("public") or ("true" if public_flag else "false")
    if public not in ("true", "false"):
        return f"metadata.public should only be 'true' or 'false', but got: '{public}'", "", False
    if request.get("registry_id") is not None:
        return "proxy cache projects (registry_id) are not supported by the stand-in", "", False
    for key in ("storage_limit",):
        value = request.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return f"{key} must be an integer", "", False
    return None, str(name), public == "true"

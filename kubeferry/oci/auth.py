"""Registry credentials and the Basic / Bearer-token challenge dance.

Credentials come from a docker config file (``~/.docker/config.json``, or the file given
with ``--registry-auth``: passwords never travel on a command line). A request goes out
without an Authorization header until the host answers 401; from then on that host (and
only that host) gets the scheme it asked for. Bearer tokens are cached per
(origin, scopes) until shortly before ``expires_in`` runs out.

Written here rather than taken from oras-py, which keeps one token per client (no
per-scope cache, no expiry), has no timeouts, and always merges ``~/.docker/config.json``
into an explicit config file.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import requests

from kubeferry import timeouts
from kubeferry.errors import InputError, OperationError

DOCKER_HUB_KEYS = ("docker.io", "index.docker.io", "registry-1.docker.io")
DEFAULT_TOKEN_LIFETIME = 60.0
COVER_BATCH = 25  # scopes per token request of ``Authorizer.cover`` (the URL stays short)
_HELPER_TIMEOUT = 30.0


@dataclass(frozen=True)
class Login:
    """A username and password (repr never shows the password)."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def registry_key(name: str) -> str:
    """The host[:port] a docker config key stands for; Docker Hub's aliases become docker.io."""
    host = urlsplit(name).netloc if "://" in name else name.split("/", 1)[0]
    host = host.lower()
    return "docker.io" if host in DOCKER_HUB_KEYS else host


class Credentials:
    """Logins by registry host, from docker config files or added in code."""

    def __init__(self, logins: dict[str, Login] | None = None) -> None:
        self._logins = {registry_key(host): login for host, login in (logins or {}).items()}
        self._helpers: dict[str, str] = {}
        self._store: str | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_docker_config(cls, path: Path | str | None = None) -> Credentials:
        """Load a docker config file.

        With no ``path``: ``$DOCKER_CONFIG/config.json`` or ``~/.docker/config.json``, and a
        missing file means no credentials. An explicit ``path`` (``--registry-auth FILE``)
        must exist and be valid.
        """
        explicit = path is not None
        if path is None:
            base = os.environ.get("DOCKER_CONFIG") or os.path.expanduser("~/.docker")
            path = Path(base) / "config.json"
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            if explicit:
                raise InputError(f"registry auth file {path} does not exist") from None
            return cls()
        except OSError as error:
            raise InputError(f"cannot read registry auth file {path}: {error.strerror}") from None
        except UnicodeDecodeError:
            raise InputError(f"registry auth file {path} is not a text file (not UTF-8 JSON)") from None
        try:
            data = json.loads(text)
        except ValueError as error:
            raise InputError(f"registry auth file {path} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise InputError(f"registry auth file {path} is not a docker config JSON object")
        credentials = cls()
        auths = data.get("auths") or {}
        if not isinstance(auths, dict):
            raise InputError(f"registry auth file {path}: 'auths' is not an object")
        for key, entry in auths.items():
            login = _login_from_entry(entry, key, path)
            if login is not None:
                credentials._logins[registry_key(key)] = login
        helpers = data.get("credHelpers") or {}
        if isinstance(helpers, dict):
            credentials._helpers = {registry_key(k): str(v) for k, v in helpers.items()}
        if isinstance(data.get("credsStore"), str):
            credentials._store = data["credsStore"]
        return credentials

    def add(self, registry: str, username: str, password: str) -> None:
        self._logins[registry_key(registry)] = Login(username, password)

    def lookup(self, host: str) -> Login | None:
        """The login for a registry host ("127.0.0.1:5000", "docker.io", ...), if any."""
        key = registry_key(host)
        with self._lock:
            login = self._logins.get(key)
            if login is None and (key in self._helpers or self._store):
                helper = self._helpers.get(key) or self._store
                login = _login_from_helper(str(helper), key)
                if login is not None:
                    self._logins[key] = login
            return login

    def __bool__(self) -> bool:
        return bool(self._logins or self._helpers or self._store)


def _login_from_entry(entry: object, key: str, path: Path) -> Login | None:
    if not isinstance(entry, dict):
        raise InputError(f"registry auth file {path}: entry {key!r} is not an object")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(str(entry["auth"]), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise InputError(
                f"registry auth file {path}: 'auth' of {key!r} is not base64"
            ) from None
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InputError(
                f"registry auth file {path}: 'auth' of {key!r} is not base64 of user:password"
            )
        return Login(username, password)
    if entry.get("username") and "password" in entry:
        return Login(str(entry["username"]), str(entry["password"]))
    return None


def _login_from_helper(helper: str, host: str) -> Login | None:
    """Ask ``docker-credential-<helper> get`` (host on stdin, as docker does)."""
    hosts = ["https://index.docker.io/v1/", "index.docker.io"] if host == "docker.io" else [host]
    for name in hosts:
        try:
            result = subprocess.run(
                [f"docker-credential-{helper}", "get"],
                input=name.encode(),
                capture_output=True,
                timeout=_HELPER_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if result.returncode == 0:
            try:
                data = json.loads(result.stdout)
                return Login(str(data["Username"]), str(data["Secret"]))
            except (ValueError, KeyError, TypeError):
                return None
    return None


@dataclass(frozen=True)
class Challenge:
    """A parsed ``WWW-Authenticate`` header: scheme ("basic"/"bearer") and its parameters."""

    scheme: str
    realm: str | None = None
    service: str | None = None
    scope: str | None = None


def parse_challenge(header: str | None) -> Challenge | None:
    """Parse ``Bearer realm="...",service="...",scope="..."`` or ``Basic realm="..."``."""
    if not header:
        return None
    scheme, _, params = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    parsed = {key.lower(): quoted if quoted else token
              for key, quoted, token in _AUTH_PARAM.findall(params)}
    return Challenge(scheme, parsed.get("realm"), parsed.get("service"), parsed.get("scope"))


# RFC 7235 auth-param: name=token or name="quoted string" (a scope may hold commas).
_AUTH_PARAM = re.compile(r'([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


Send = Callable[..., requests.Response]


def _actions(scopes: tuple[str, ...] | list[str]) -> dict[str, set[str]]:
    """``repository:a/b:pull,push`` -> {``repository:a/b``: {pull, push}} over all scopes."""
    held: dict[str, set[str]] = {}
    for scope in scopes:
        for item in scope.split(" "):
            resource, _, actions = item.rpartition(":")
            held.setdefault(resource, set()).update(filter(None, actions.split(",")))
    return held


def in_clear(url: str) -> bool:
    """Whether a request to ``url`` crosses a network unencrypted (http:// off loopback)."""
    parts = urlsplit(url)
    if parts.scheme != "http":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


class Authorizer:
    """Authorization headers per origin, answered from the origin's own 401 challenges.

    ``origin`` is ``scheme://host:port``. Credentials are only used for the origin of the
    registry's own endpoint (``own=True``); any other origin (a redirect target) only ever
    gets anonymous tokens from its own challenge, so a password never leaves its registry.
    """

    def __init__(self, credentials: Credentials | None, send: Send,
                 allow_plain_http: bool = False) -> None:
        self._credentials = credentials or Credentials()
        self._send = send
        self.allow_plain_http = allow_plain_http  # the operator asked for it by name
        self._lock = threading.Lock()
        self._challenges: dict[str, Challenge] = {}
        # (origin, scopes) -> (header value, expires, fetched): one token serves every
        # request whose scopes it covers, until shortly before it expires
        self._tokens: dict[tuple[str, tuple[str, ...]], tuple[str, float, float]] = {}
        self._fetching: dict[tuple[str, tuple[str, ...]], threading.Lock] = {}
        self._probes: dict[str, threading.Event] = {}

    def header(self, origin: str, login_host: str, own: bool, scopes: list[str]) -> str | None:
        """The Authorization value for a request, or None while the origin never challenged.

        The first request to an origin finds out whether and how it authenticates; parallel
        requests to it wait for that answer (``probed``) rather than each collecting a 401.
        """
        with self._lock:
            challenge = self._challenges.get(origin)
            probe = self._probes.get(origin)
            if challenge is None and probe is None:
                self._probes[origin] = threading.Event()  # this request is the probe
                return None
        if challenge is None and probe is not None:
            probe.wait(sum(timeouts.resolve(None)))
            with self._lock:
                challenge = self._challenges.get(origin)
        if challenge is None:
            return None
        return self._authorize(origin, challenge, login_host, own, scopes, refresh=False)

    def probed(self, origin: str) -> None:
        """A request to ``origin`` was answered (and a 401 handled): waiters may go on."""
        with self._lock:
            probe = self._probes.get(origin)
        if probe is not None:
            probe.set()

    def knows(self, origin: str) -> bool:
        """Whether ``origin`` challenged already (its scheme is known)."""
        with self._lock:
            return origin in self._challenges

    def cover(self, origin: str, login_host: str, scopes: list[str]) -> None:
        """Fetch tokens for all ``scopes`` now (``COVER_BATCH`` scopes per token; the origin
        challenged already), so the requests that follow, each needing some of them, make
        no token request of their own."""
        with self._lock:
            challenge = self._challenges.get(origin)
        if challenge is None or challenge.scheme != "bearer":
            return
        for start in range(0, len(scopes), COVER_BATCH):
            self._authorize(origin, challenge, login_host, True, scopes[start:start + COVER_BATCH],
                            refresh=False)

    def answer(
        self,
        origin: str,
        login_host: str,
        own: bool,
        scopes: list[str],
        response: requests.Response,
    ) -> str:
        """Handle a 401 from ``origin``; returns the Authorization value to retry with."""
        challenge = self.learn(origin, login_host, response)
        return self._authorize(origin, challenge, login_host, own, scopes, refresh=True)

    def learn(self, origin: str, login_host: str, response: requests.Response) -> Challenge:
        """Remember the challenge of a 401 from ``origin``."""
        challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
        if challenge is None:
            raise OperationError(
                f"{login_host} answered 401 without a usable WWW-Authenticate challenge"
            )
        with self._lock:
            self._challenges[origin] = challenge
        return challenge

    def _authorize(
        self,
        origin: str,
        challenge: Challenge,
        login_host: str,
        own: bool,
        scopes: list[str],
        refresh: bool,
    ) -> str:
        login = self._credentials.lookup(login_host) if own else None
        if challenge.scheme == "basic":
            if login is None:
                raise OperationError(
                    f"{login_host} needs a username and password (Basic auth): "
                    "pass a docker config file with --registry-auth FILE"
                )
            self._check_transport(origin, login, login_host)
            return login.basic()
        wanted = list(scopes) if own else []
        if challenge.scope and challenge.scope not in wanted:
            wanted.append(challenge.scope)
        key = (origin, tuple(sorted(wanted)))
        asked = time.monotonic()
        if not refresh:
            cached = self._covering(key, asked)
            if cached is not None:
                return cached[0]
        with self._lock:
            fetching = self._fetching.setdefault(key, threading.Lock())
        with fetching:  # one token request per scope set at a time; the others reuse it
            cached = self._covering(key, time.monotonic())
            if cached is not None and (not refresh or cached[2] >= asked):
                return cached[0]
            token, lifetime = self._fetch_token(challenge, wanted, login, login_host)
            value = f"Bearer {token}"
            now = time.monotonic()
            with self._lock:
                self._tokens[key] = (value, now + lifetime * 0.9, now)
            return value

    def _covering(self, key: tuple[str, tuple[str, ...]], now: float
                  ) -> tuple[str, float, float] | None:
        """A live token of the origin asked for at least the scopes of ``key``."""
        origin, wanted = key
        with self._lock:
            exact = self._tokens.get(key)
            if exact is not None and exact[1] > now:
                return exact
            need = _actions(wanted)
            for (other_origin, scopes), cached in self._tokens.items():
                if other_origin != origin or cached[1] <= now:
                    continue
                held = _actions(scopes)
                if all(actions <= held.get(resource, set()) for resource, actions in need.items()):
                    return cached
        return None

    def _check_transport(self, url: str, login: Login, login_host: str) -> None:
        """Refuse to send a password over plain HTTP off this machine unless asked by name."""
        if self.allow_plain_http or not in_clear(url):
            return
        raise InputError(
            f"{login_host}: refusing to send the password of {login.username!r} over plain HTTP"
            f" to {urlsplit(url).netloc}; use https:// or pass --send-password-over-plain-http"
        )

    def _fetch_token(
        self, challenge: Challenge, scopes: list[str], login: Login | None, login_host: str
    ) -> tuple[str, float]:
        if not challenge.realm or not challenge.realm.startswith(("http://", "https://")):
            raise OperationError(f"{login_host} sent a Bearer challenge without a usable realm")
        params: list[tuple[str, str]] = []
        if challenge.service:
            params.append(("service", challenge.service))
        params += [("scope", scope) for scope in scopes]
        if login is not None:
            params.append(("account", login.username))
        headers = {"Accept": "application/json"}
        if login is not None:
            self._check_transport(challenge.realm, login, login_host)
            headers["Authorization"] = login.basic()
        response = self._send("GET", challenge.realm, headers=headers, params=params)
        realm_host = urlsplit(challenge.realm).netloc
        if response.status_code in (401, 403):
            if login is None:
                raise OperationError(
                    f"{login_host}: the token service at {realm_host} refused anonymous access; "
                    "pass credentials with --registry-auth FILE"
                )
            raise OperationError(
                f"{login_host}: the token service at {realm_host} refused the credentials "
                f"of user {login.username!r}"
            )
        if response.status_code != 200:
            raise OperationError(
                f"{login_host}: the token service at {realm_host} answered "
                f"HTTP {response.status_code}"
            )
        try:
            data = response.json()
            token = data.get("token") or data.get("access_token")
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (ValueError, AttributeError, TypeError):
            token = None
        if not isinstance(token, str) or not token:
            raise OperationError(f"{login_host}: the token service at {realm_host} sent no token")
        return token, max(lifetime, 1.0)

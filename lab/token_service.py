"""A small Docker token endpoint (``auth: token`` realm) for the lab registry and Harbor stand-in.

It issues ES256 JWTs that distribution 2.8 accepts: the header carries ``kid``, the
libtrust key ID of the signing key (sha256 of the DER SubjectPublicKeyInfo, first 240
bits, base32 in twelve ':'-separated groups of four — docker/libtrust util.go
keyIDFromCryptoKey). distribution trusts a ``kid`` when a certificate in its
``rootcertbundle`` has that public key, so ``cert_file`` goes in the registry config.

Users are a username -> password table; ``authorize(username, repository, actions)``
returns the granted actions (username None means anonymous). Without a callback, users
get what they ask for and anonymous callers get ``pull`` only if ``anonymous_pull``.
A refused anonymous request still gets a token with no access, as Docker Hub does, so the
registry's own 401 tells the client it lacks rights; a wrong password gets 401 here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from kubeferry.lab.pki import ServerCertificate, make_ca, make_certificate
from kubeferry.lab.serving import ServerThread

Authorize = Callable[["str | None", str, "list[str]"], "list[str]"]


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key ID distribution matches a JWT ``kid`` against (docker/libtrust)."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii").rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass
class TokenRequest:
    """One token request as the service saw it (for tests to assert on)."""

    username: str | None
    service: str | None
    scopes: list[str]
    granted: list[dict] = field(default_factory=list)
    status: int = 200


class TokenService:
    """A threaded HTTP(S) token endpoint; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        authorize: Authorize | None = None,
        anonymous_pull: bool = False,
        service: str = "kubeferry-lab-registry",
        issuer: str = "kubeferry-lab-token",
        addr: str = "127.0.0.1",
        port: int = 0,
        tls: ServerCertificate | None = None,
        lifetime: int = 300,
        realm: str | None = None,
    ) -> None:
        self.workdir = Path(workdir)
        self._realm = realm  # when another server hosts the endpoint (see answer())
        self.users = dict(users or {})
        self.authorize = authorize
        self.anonymous_pull = anonymous_pull
        self.service = service
        self.issuer = issuer
        self.addr = addr
        self.port = port
        self.tls = tls
        self.lifetime = lifetime
        self.requests: list[TokenRequest] = []
        self._lock = threading.Lock()
        self._serving: ServerThread | None = None
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.key_id = libtrust_key_id(self._key.public_key())
        self.cert_file = self._write_signing_cert()

    def _write_signing_cert(self) -> Path:
        """A certificate for the signing key: distribution's rootcertbundle holds certs."""
        directory = self.workdir / "token-signing"
        ca = make_ca(directory, "kubeferry lab token CA")
        signer = make_certificate(ca, directory, "token-signer", server=False, key=self._key)
        return signer.cert_file

    # -- tokens ---------------------------------------------------------------------------

    def _granted(self, username: str | None, repository: str, actions: list[str]) -> list[str]:
        if self.authorize is not None:
            return [a for a in self.authorize(username, repository, actions) if a in actions]
        if username is not None:
            return list(actions)
        return ["pull"] if self.anonymous_pull and "pull" in actions else []

    def issue(self, username: str | None, scopes: list[str]) -> tuple[str, list[dict]]:
        """A signed JWT granting what the rules allow for ``scopes``."""
        access: list[dict] = []
        for scope in scopes:
            for item in scope.split(" "):
                parts = item.split(":")
                if len(parts) < 3:
                    continue
                kind, name, actions = parts[0], ":".join(parts[1:-1]), parts[-1].split(",")
                granted = self._granted(username, name, actions) if kind == "repository" else []
                if granted:
                    access.append({"type": kind, "name": name, "actions": granted})
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": username or "",
            "aud": self.service,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(16),
            "access": access,
        }
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id}
        signing_input = (
            _b64url(json.dumps(header, separators=(",", ":")).encode())
            + "."
            + _b64url(json.dumps(claims, separators=(",", ":")).encode())
        )
        der = self._key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        signature = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return f"{signing_input}.{_b64url(signature)}", access

    def _check_login(self, header: str | None) -> tuple[bool, str | None]:
        """(ok, username) for a request's Authorization header; no header is anonymous."""
        if not header:
            return True, None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return False, None
        try:
            username, _, password = base64.b64decode(value).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False, None
        expected = self.users.get(username)
        if expected is None or not hmac.compare_digest(expected, password):
            return False, username
        return True, username

    def answer(self, query: str, authorization: str | None) -> tuple[int, dict]:
        """Answer one token request (its query string and Authorization header): (status, body).

        Shared by this service's own server and by servers that host a token endpoint
        among other routes (the Harbor stand-in's ``/service/token``).
        """
        pairs = parse_qsl(query)
        scopes = [value for key, value in pairs if key == "scope"]
        requested_service = next((v for k, v in pairs if k == "service"), None)
        ok, username = self._check_login(authorization)
        record = TokenRequest(username, requested_service, scopes)
        with self._lock:
            self.requests.append(record)
        if not ok:
            record.status = 401
            return 401, {"details": "incorrect username or password"}
        token, access = self.issue(username, scopes)
        record.granted = access
        return 200, {
            "token": token,
            "access_token": token,
            "expires_in": self.lifetime,
            "issued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    # -- server -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://{self.addr}:{self.port}"

    @property
    def realm(self) -> str:
        return self._realm or f"{self.url}/token"

    def start(self) -> TokenService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                parts = urlsplit(self.path)
                if parts.path != "/token":
                    self._reply(404, {"error": "not found"})
                    return
                self._reply(*service.answer(parts.query, self.headers.get("Authorization")))

            def _reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:  # quiet: tests read .requests
                pass

        server = ThreadingHTTPServer((self.addr, self.port), Handler)
        server.daemon_threads = True
        if self.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(self.tls.cert_file), str(self.tls.key_file))
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self.port = server.server_address[1]
        self._serving = ServerThread(server, "token-service")
        return self

    def stop(self) -> None:
        serving, self._serving = self._serving, None
        if serving is not None:
            serving.stop()

    def __enter__(self) -> TokenService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

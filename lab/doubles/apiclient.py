"""A small Kubernetes API client for the doubles (stdlib only): a kubeconfig's server, CA and
client certificate, TLS verified, JSON in and out, every request bounded."""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

TIMEOUT = 10


class ApiUnavailable(Exception):
    """The server did not answer (connection, TLS or timeout): one line."""


class ApiClient:
    def __init__(self, kubeconfig: Path, credentials: Path) -> None:
        """``credentials``: a 0700 directory for the CA and the client key pair (ssl reads files)."""
        config = yaml.safe_load(kubeconfig.read_text()) or {}
        context = next(c["context"] for c in config["contexts"] if c["name"] == config["current-context"])
        cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
        self.server = str(cluster["server"]).rstrip("/")
        credentials.mkdir(mode=0o700, parents=True, exist_ok=True)
        ca = credentials / "ca.crt"
        pair = credentials / "client.pem"
        ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        fd = os.open(pair, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(base64.b64decode(user["client-certificate-data"]))
            handle.write(base64.b64decode(user["client-key-data"]))
        self.context = ssl.create_default_context(cafile=str(ca))
        self.context.load_cert_chain(str(pair))

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.server}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT, context=self.context) as answer:
                return answer.status, json.loads(answer.read() or b"{}")
        except urllib.error.HTTPError as error:
            try:
                return error.code, json.loads(error.read() or b"{}")
            except ValueError:
                return error.code, {}
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise ApiUnavailable(f"{self.server}{path}: {getattr(error, 'reason', error)}") from None

    def upsert(self, collection: str, obj: dict[str, Any]) -> int:
        """Create ``obj`` in ``collection`` or replace it (a conflict is retried by the next caller)."""
        name = obj["metadata"]["name"]
        code, current = self.request("GET", f"{collection}/{name}")
        if code == 404:
            code, _ = self.request("POST", collection, obj)
            return code
        replacement = json.loads(json.dumps(obj))
        replacement["metadata"]["resourceVersion"] = (current.get("metadata") or {}).get("resourceVersion", "")
        code, _ = self.request("PUT", f"{collection}/{name}", replacement)
        return code

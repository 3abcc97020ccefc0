"""kube-controller-manager's bootstrapsigner, folded into the API server stand-in's read path.

The lab runs no controller-manager, so when cluster-info (kube-public) is read, the stand-in
adds what the signer would have written into it: ``jws-kubeconfig-<id>`` = the detached JWS
(HS256, key = the token's secret) of its ``kubeconfig``, for every bootstrap-token Secret in
kube-system that is not expired and has ``usage-bootstrap-signing: "true"``; signatures of
other tokens are dropped (the signer removes them; the token cleaner deletes expired tokens).
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from typing import Any


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def detached_jws(content: str, token_id: str, token_secret: str) -> str:
    header = b64url(json.dumps({"alg": "HS256", "kid": token_id}, separators=(",", ":")).encode())
    signing_input = f"{header}.{b64url(content.encode())}".encode()
    return f"{header}..{b64url(hmac.new(token_secret.encode(), signing_input, hashlib.sha256).digest())}"


def is_cluster_info(namespace: str, name: str, resource_name: str) -> bool:
    return (resource_name, namespace, name) == ("configmaps", "kube-public", "cluster-info")


def signed(cluster_info: dict[str, Any], secrets: list[dict[str, Any]]) -> dict[str, Any]:
    """``cluster_info`` with the signatures of the valid signing tokens and no others."""
    data = {k: v for k, v in (cluster_info.get("data") or {}).items() if not k.startswith("jws-kubeconfig-")}
    content = data.get("kubeconfig", "")
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    for secret in secrets:
        if secret.get("type") != "bootstrap.kubernetes.io/token":
            continue
        fields = {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
        expiration = fields.get("expiration", "")
        if fields.get("usage-bootstrap-signing") != "true" or (expiration and expiration < now):
            continue
        if fields.get("token-id") and fields.get("token-secret") and content:
            data[f"jws-kubeconfig-{fields['token-id']}"] = detached_jws(content, fields["token-id"],
                                                                        fields["token-secret"])
    return dict(cluster_info, data=data)

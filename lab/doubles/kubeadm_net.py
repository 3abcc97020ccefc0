"""What the kubeadm double asks of the running control plane over the network (TLS verified).

Only with ``run_control_plane`` (the kubelet double then runs etcd and the API server
stand-in): init's wait-control-plane polls ``https://<advertise>:<port>/healthz`` with the
cluster CA, as kubeadm's waiter does, and a control-plane join adds its etcd member through
an existing member's v3 API (kubeadm's etcd client ``MemberAdd``, with the
apiserver-etcd-client certificate, retried) before its own etcd starts, then waits for its
own API server's /healthz, which includes etcd (the new member has joined).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from pathlib import Path

REQUEST_TIMEOUT = 5
MEMBER_ADD_TIMEOUT = 60.0


def tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca))
    if cert:
        context.load_cert_chain(str(cert), str(key) if key else None)
    return context


def healthy(url: str, context: ssl.SSLContext) -> str:
    """"" when ``url`` answers 200 ok; else why not (one line)."""
    try:
        with urllib.request.urlopen(url, timeout=REQUEST_TIMEOUT, context=context) as answer:
            return "" if answer.status == 200 else f"{url}: HTTP {answer.status}"
    except (urllib.error.URLError, OSError) as error:
        return f"{url}: {getattr(error, 'reason', error)}"


def wait_healthy(url: str, context: ssl.SSLContext, timeout: float) -> str:
    deadline = time.time() + timeout
    problem = healthy(url, context)
    while problem and time.time() < deadline:
        time.sleep(0.5)
        problem = healthy(url, context)
    return problem


def etcd_call(endpoints: list[str], path: str, body: dict, context: ssl.SSLContext) -> tuple[dict, str]:
    """POST ``body`` to the first endpoint that answers: (reply, "") or ({}, why not)."""
    problems = []
    for endpoint in endpoints:
        request = urllib.request.Request(f"{endpoint}{path}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT, context=context) as answer:
                return json.loads(answer.read() or b"{}"), ""
        except (urllib.error.URLError, OSError, ValueError) as error:
            problems.append(f"{endpoint}: {getattr(error, 'reason', error)}")
    return {}, "; ".join(problems) or "no etcd endpoint"


def etcd_member_remove(endpoints: list[str], name: str, context: ssl.SSLContext) -> str:
    """kubeadm reset's RemoveMember: the member called ``name``, through another member."""
    members, problem = etcd_call(endpoints, "/v3/cluster/member/list", {}, context)
    if problem:
        return problem
    for member in members.get("members") or []:
        if member.get("name") == name:
            _, problem = etcd_call(endpoints, "/v3/cluster/member/remove", {"ID": member["ID"]}, context)
            return problem
    return ""


def etcd_member_add(endpoints: list[str], peer_url: str, context: ssl.SSLContext,
                    timeout: float = MEMBER_ADD_TIMEOUT) -> str:
    """Add ``peer_url`` as a member through the first endpoint that answers; "" or why not.

    Retried with back-off as kubeadm's etcd client does (etcdBackoff): a cluster whose last
    member was just added refuses another until that one has started ("unhealthy cluster")."""
    deadline = time.time() + timeout
    delay = 0.5
    while True:
        reply, problem = etcd_call(endpoints, "/v3/cluster/member/add", {"peerURLs": [peer_url]}, context)
        if not problem and "member" in reply:
            return ""
        problem = problem or str(reply.get("error") or reply)
        if time.time() + delay > deadline:
            return problem
        time.sleep(delay)
        delay = min(delay * 2, 5.0)

"""A running control plane seen from the admin host: its API server's health, its static
pods restarted as kubeadm's documentation says, its etcd membership, its apiserver
certificate's SANs.

Restarting a static pod: the kubelet runs what ``/etc/kubernetes/manifests`` holds, so a
manifest moved out stops its pod and moved back starts it again (kubeadm's "Certificate
Management" page: move it out, wait for the kubelet to notice (its fileCheckFrequency,
20 s by default), move it back). Here the wait is bounded and watched: the API server is
seen to stop answering before its manifest goes back, and to answer ``/healthz`` again
(TLS verified with the cluster CA, as kubeadm's own waiter does) before the next node.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from typing import Callable

from cryptography import x509

from kubeferry.errors import OperationError
from kubeferry.installer import facts
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host

MANIFESTS = "/etc/kubernetes/manifests"
PARKED = "/etc/kubernetes/kubeferry-parked"  # where manifests wait while their pod stops
APISERVER_CERT = "/etc/kubernetes/pki/apiserver.crt"
APISERVER_PORT = 6443
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
STOP_TIMEOUT = 60.0  # the kubelet notices a removed manifest within its fileCheckFrequency (20 s)
HEALTHY_TIMEOUT = 240.0  # as kubeadm's wait-control-plane (4 min)
REQUEST_TIMEOUT = 5.0


def healthz(ctx: InstallContext, host: Host) -> str:
    """"" when ``host``'s API server answers /healthz "ok"; else why not, in one line."""
    ca = facts.file_content(kube.CA_CERT).read(ctx.conn(host))
    if ca is None:
        return f"{kube.CA_CERT} is missing"
    context = ssl.create_default_context(cadata=ca)
    connection = http.client.HTTPSConnection(host.address, APISERVER_PORT, context=context,
                                             timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", "/healthz")
        answer = connection.getresponse()
        body = answer.read(200).decode(errors="replace").strip()
        return "" if answer.status == 200 and body == "ok" else f"HTTP {answer.status} {body[:80]}"
    except (OSError, ssl.SSLError, http.client.HTTPException, socket.timeout) as error:
        return str(error) or type(error).__name__
    finally:
        connection.close()


def wait_for(check: Callable[[], str], timeout: float) -> str:
    """Poll ``check`` (returns "" when satisfied) until it is or ``timeout`` passed; the last why-not."""
    deadline = time.monotonic() + timeout
    problem = check()
    while problem and time.monotonic() < deadline:
        time.sleep(1)
        problem = check()
    return problem


def wait_healthy(ctx: InstallContext, host: Host, timeout: float = HEALTHY_TIMEOUT) -> None:
    problem = wait_for(lambda: healthz(ctx, host), timeout)
    if problem:
        raise OperationError(f"{host.name}: the API server did not answer /healthz within {timeout:.0f} s"
                             f" ({problem}); see /var/log/pods on {host.name}")


def restart_static_pods(ctx: InstallContext, host: Host, pods: tuple[str, ...] = STATIC_PODS) -> str:
    """Each of ``pods`` stopped and started again by its kubelet; returns once /healthz answers."""
    conn = ctx.conn(host)
    present = [pod for pod in pods if kube.exists(conn, f"{MANIFESTS}/{pod}.yaml")]
    if not present:
        return ""
    moves = " && ".join(f"mv -f {MANIFESTS}/{pod}.yaml {PARKED}/{pod}.yaml" for pod in present)
    conn.run(f"mkdir -p {PARKED} && chmod 0700 {PARKED} && {moves}")
    try:
        if "kube-apiserver" in present:
            stopped = wait_for(lambda: "" if healthz(ctx, host) else "still answers", STOP_TIMEOUT)
            if stopped:
                raise OperationError(f"{host.name}: the API server still answered {STOP_TIMEOUT:.0f} s after"
                                     f" its manifest left {MANIFESTS} (is the kubelet running?)")
        else:
            time.sleep(min(STOP_TIMEOUT, 25.0))  # no health endpoint to watch: the kubelet's period
    finally:
        back = " && ".join(f"mv -f {PARKED}/{pod}.yaml {MANIFESTS}/{pod}.yaml" for pod in present)
        conn.run(back)
    wait_healthy(ctx, host)
    ctx.log(host)(f"restarted {', '.join(present)}; the API server answers /healthz")
    return f"restarted {', '.join(present)}"


def etcd_members(ctx: InstallContext) -> list[Host]:
    """The inventory's control planes that run a stacked etcd member (its static pod manifest)."""
    return [host for host in ctx.inventory.control_planes
            if kube.exists(ctx.conn(host), f"{MANIFESTS}/etcd.yaml")]


def quorum(members: int) -> int:
    """etcd's quorum: a majority of the members."""
    return members // 2 + 1


def san_entry(value: str) -> str:
    """``IP:x`` for an address, ``DNS:x`` for a name (kubeadm's certSANs rule)."""
    try:
        return f"IP:{ipaddress.ip_address(value)}"
    except ValueError:
        return f"DNS:{value}"


def certificate_sans(pem: str) -> set[str]:
    """The SANs of a PEM certificate as ``DNS:x`` / ``IP:y``."""
    try:
        names = x509.load_pem_x509_certificate(pem.encode()).extensions.get_extension_for_class(
            x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound) as error:
        raise OperationError(f"{APISERVER_CERT} has no readable SANs ({error})") from None
    return ({f"DNS:{n}" for n in names.get_values_for_type(x509.DNSName)}
            | {f"IP:{a}" for a in names.get_values_for_type(x509.IPAddress)})


def missing_sans(ctx: InstallContext, host: Host, wanted: list[str]) -> list[str] | None:
    """Which of ``wanted`` the API server certificate on ``host`` lacks; None when it has none."""
    pem = facts.file_content(APISERVER_CERT).read(ctx.conn(host))
    if pem is None:
        return None
    have = certificate_sans(pem)
    return [value for value in wanted if san_entry(value) not in have]

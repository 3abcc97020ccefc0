"""The API server stand-in's long answers: watches, and pod logs fetched from the node's kubelet.

A watch (``?watch=true``) answers as kube-apiserver does: ``200``, chunked JSON, one
``{"type": "ADDED|MODIFIED|DELETED", "object": {...}}`` per change after the request's
resourceVersion, until ``timeoutSeconds`` (capped) or the client goes away. The stand-in
finds changes by reading the etcd prefix every ``POLL`` seconds (kube-apiserver's watch
cache follows etcd's watch stream instead): an object created and deleted between two
reads is never seen, and a deletion that happened before the watch began is not
reported. kubectl's informers (``wait``, ``run -i``, ``rollout status``) list, then watch
from the list's resourceVersion, which this serves.

``GET .../pods/NAME/log`` is what kube-apiserver does with it: it finds the pod's node,
and asks that node's kubelet (``https://<InternalIP>:<port>/containerLogs/NS/POD/CONTAINER``,
the port the kubelet reported in ``status.daemonEndpoints``)
with the ``--kubelet-client-certificate`` (the kubelet's serving certificate is not
verified, as kube-apiserver does without ``--kubelet-certificate-authority``).
"""

from __future__ import annotations

import json
import ssl
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator
from urllib.parse import quote

POLL = 0.5
WATCH_CAP = 1800.0  # kube-apiserver's --min-request-timeout is 1800 s
KUBELET_PORT = 10250
KUBELET_TIMEOUT = 15


Seen = dict[tuple[str, str], tuple[dict[str, Any], int, int]]  # key -> (object, mod, create revision)


@dataclass
class Watch:
    """A watch on one collection: ``read()`` gives every object with its etcd revisions."""

    read: Callable[[], Seen]
    keep: Callable[[dict[str, Any]], bool]
    since: int
    timeout: float

    def events(self, alive: Callable[[], bool]) -> Iterator[dict[str, Any]]:
        """Every change after ``since`` as a watch event, until the timeout or ``alive()`` is False."""
        deadline = time.monotonic() + min(self.timeout, WATCH_CAP)
        known: Seen | None = None
        while time.monotonic() < deadline and alive():
            current = {k: v for k, v in self.read().items() if self.keep(v[0])}
            for key, (obj, modified, created) in sorted(current.items(), key=lambda item: item[1][1]):
                if known is None:
                    if modified > self.since:
                        yield {"type": "ADDED" if created > self.since else "MODIFIED", "object": obj}
                elif key not in known:
                    yield {"type": "ADDED", "object": obj}
                elif known[key][1] != modified:
                    yield {"type": "MODIFIED", "object": obj}
            for key in set(known or {}) - set(current):
                yield {"type": "DELETED", "object": (known or {})[key][0]}
            known = current
            time.sleep(POLL)


def watch_timeout(query: dict[str, str]) -> float:
    try:
        return float(query.get("timeoutSeconds") or WATCH_CAP)
    except ValueError:
        return WATCH_CAP


def log_route(path: str) -> tuple[str, str] | None:
    """(namespace, pod) of ``/api/v1/namespaces/NS/pods/NAME/log``."""
    parts = [p for p in path.split("/") if p]
    if len(parts) == 7 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods" and parts[6] == "log":
        return parts[3], parts[5]
    return None


def node_address(node: dict[str, Any]) -> str:
    """The InternalIP a kubelet reported (kube-apiserver's --kubelet-preferred-address-types)."""
    for address in (node.get("status") or {}).get("addresses") or []:
        if address.get("type") == "InternalIP" and address.get("address"):
            return str(address["address"])
    return ""


def kubelet_port(node: dict[str, Any]) -> int:
    endpoint = ((node.get("status") or {}).get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}
    return int(endpoint.get("Port") or KUBELET_PORT)


def kubelet_logs(address: str, port: int, namespace: str, pod: str, container: str, cert: str, key: str) -> bytes:
    """The container's log from its kubelet; raises OSError with the reason when it does not answer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if cert:
        context.load_cert_chain(cert, key or None)
    host = f"[{address}]" if ":" in address else address
    url = f"https://{host}:{port}/containerLogs/{quote(namespace)}/{quote(pod)}/{quote(container)}"
    try:
        with urllib.request.urlopen(url, timeout=KUBELET_TIMEOUT, context=context) as answer:
            return answer.read()
    except urllib.error.HTTPError as error:
        raise OSError(f"the server responded with HTTP {error.code}: {error.read().decode(errors='replace')}") from None
    except urllib.error.URLError as error:
        raise OSError(f"dial tcp {host}:{port}: {error.reason}") from None


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def event_bytes(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode() + b"\n"

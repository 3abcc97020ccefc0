"""The kubelet double's view of the API: the workloads to run, the pods users create, their logs.

- ``workloads(client)``: the DaemonSets, Deployments and bare Pods stored in the API server
  stand-in (what ``kubectl apply`` / ``kubectl run`` wrote), in clustermodel's form, so the
  model places and pulls what the API holds (no other record of applied objects exists).
- ``run_pod``: a bare Pod (``kubectl run``) on this node, once its images are present and
  the network is up, is run by the model: the container's output is modelled, not executed
  (the nodes have no pod network). Only busybox's ``nslookup NAME`` is modelled, answered
  from the cluster's Service subnet and whether a CoreDNS pod is Running; any other
  command terminates with exit 126 and says so in its log.
- ``LogServer``: kubelet's ``/containerLogs/NS/POD/CONTAINER`` on ``<node IP>:<port>`` (config.yaml's
  ``port``, default 10250; double.conf's ``kubelet_port`` overrides it for test nodes that share
  a network namespace), reported in the Node's ``status.daemonEndpoints``, TLS
  with a self-signed serving certificate (as kubelet makes one without
  ``serverTLSBootstrap``), client certificates checked against config.yaml's
  ``authentication.x509.clientCAFile``; no certificate: 401 as with kubeadm's
  ``anonymous: false``. It binds the node's IP, not 0.0.0.0, so test nodes sharing a
  network namespace do not collide.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import clustermodel
from apiclient import ApiClient, ApiUnavailable
from doublelib import Env

PORT = 10250
COLLECTIONS = (("/apis/apps/v1/daemonsets", "DaemonSet"), ("/apis/apps/v1/deployments", "Deployment"),
               ("/api/v1/pods", "Pod"))


def containers_of(kind: str, obj: dict[str, Any]) -> tuple[list[dict[str, str]], bool, dict[str, str]]:
    """(init + regular containers, hostNetwork, the labels its pods carry)."""
    spec = obj.get("spec") or {}
    labels = (obj.get("metadata") or {}).get("labels") or {}
    if kind != "Pod":
        template = spec.get("template") or {}
        spec, labels = template.get("spec") or {}, (template.get("metadata") or {}).get("labels") or {}
    containers = [{"name": c.get("name", ""), "image": c.get("image", "")}
                  for c in (spec.get("initContainers") or []) + (spec.get("containers") or [])]
    return containers, bool(spec.get("hostNetwork")), dict(labels)


def is_user_pod(pod: dict[str, Any]) -> bool:
    """A Pod nobody's controller owns (not a mirror pod, not a DaemonSet's or ReplicaSet's)."""
    meta = pod.get("metadata") or {}
    return not meta.get("ownerReferences") and "kubernetes.io/config.mirror" not in (meta.get("annotations") or {})


def workloads(client: ApiClient) -> dict[str, dict[str, Any]]:
    """clustermodel's ``objects`` from the API: key ``Kind/namespace/name``."""
    objects: dict[str, dict[str, Any]] = {}
    for path, kind in COLLECTIONS:
        code, answer = client.request("GET", path)
        if code >= 300:
            raise ApiUnavailable(f"GET {path}: HTTP {code} {answer.get('message', '')}".strip())
        for obj in answer.get("items") or []:
            if kind == "Pod" and not is_user_pod(obj):
                continue
            meta = obj["metadata"]
            containers, host_network, labels = containers_of(kind, obj)
            entry = {"kind": kind, "namespace": meta.get("namespace", ""), "name": meta["name"],
                     "uid": meta.get("uid", ""), "containers": containers, "hostNetwork": host_network,
                     "replicas": int((obj.get("spec") or {}).get("replicas", 1) or 0), "labels": labels}
            if kind == "Pod":
                entry["object"] = obj
            objects[f"{kind}/{entry['namespace']}/{entry['name']}"] = entry
    return objects


def nslookup(state: dict[str, Any], beats: dict[str, dict[str, Any]], name: str) -> tuple[str, int]:
    """busybox 1.28's ``nslookup NAME`` in a pod of this cluster: (output, exit code)."""
    init = state.get("init") or {}
    subnet, domain = init.get("serviceSubnet", "10.96.0.0/12"), init.get("dnsDomain", "cluster.local")
    dns_ip, api_ip = clustermodel.service_ip(subnet, 10), clustermodel.service_ip(subnet, 1)
    now = time.time()
    coredns_up = any(p["labels"].get("k8s-app") == "kube-dns"
                     and clustermodel.pod_status(p, state, beats, now)[0] == "Running"
                     for p in clustermodel.pods(state, beats))
    if not coredns_up:
        return (f"Server:    {dns_ip}\nAddress 1: {dns_ip}\n\nnslookup: can't resolve '{name}'\n", 1)
    known = {"kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}"}
    head = f"Server:    {dns_ip}\nAddress 1: {dns_ip} kube-dns.kube-system.svc.{domain}\n\n"
    if name.rstrip(".") not in known:
        return head + f"nslookup: can't resolve '{name}'\n", 1
    return head + f"Name:      {name}\nAddress 1: {api_ip} kubernetes.default.svc.{domain}\n", 0


def log_path(env: Env, namespace: str, pod: str, uid: str, container: str) -> Path:
    return env.path(f"/var/log/pods/{namespace}_{pod}_{uid}/{container}/0.log")


def run_pod(env: Env, pod: dict[str, Any], state: dict[str, Any],
            beats: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The status of a user Pod that ran to completion here; its log written where kubelet keeps it."""
    meta, spec = pod["metadata"], pod.get("spec") or {}
    container = (spec.get("containers") or [{}])[0]
    argv = list(container.get("command") or []) + list(container.get("args") or [])
    if len(argv) == 2 and argv[0] == "nslookup":
        output, code = nslookup(state, beats, argv[1])
    else:
        output, code = (f"lab kubelet double: only `nslookup NAME` is modelled, not {argv}\n", 126)
    path = log_path(env, meta.get("namespace", ""), meta["name"], meta.get("uid", ""), container.get("name", ""))
    for old in env.path("/var/log/pods").glob(f"{meta.get('namespace', '')}_{meta['name']}_*"):
        if old != path.parent.parent:  # an earlier pod of that name: kubelet removes a deleted pod's logs
            shutil.rmtree(old, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(output)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    reason = "Completed" if code == 0 else "Error"
    return {
        "phase": "Succeeded" if code == 0 else "Failed",
        "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
        "startTime": stamp,
        "containerStatuses": [{
            "name": container.get("name", ""), "image": container.get("image", ""), "ready": False,
            "restartCount": 0, "started": False,
            "state": {"terminated": {"exitCode": code, "reason": reason, "startedAt": stamp, "finishedAt": stamp}},
        }],
    }


def report_user_pod(env: Env, client: ApiClient, node: str, model: dict[str, Any], state: dict[str, Any],
                    beats: dict[str, dict[str, Any]]) -> int:
    """Bind (the model schedules) and update one user Pod's status; an ended pod is left as it is."""
    obj = model["object"]
    namespace, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    status = obj.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return 200
    word, reason = clustermodel.pod_status(model, state, beats, time.time())
    restart = (obj.get("spec") or {}).get("restartPolicy", "Always")
    if word == "Running" and restart != "Always":
        new_status = run_pod(env, obj, state, beats)
    else:
        pod_obj, _ = clustermodel.pod_object(model, state, beats, time.time())
        new_status = pod_obj["status"]
    if (obj.get("spec") or {}).get("nodeName") == node and status == new_status:
        return 200
    obj.setdefault("spec", {})["nodeName"] = node
    obj["status"] = new_status
    code, _ = client.request("PUT", f"/api/v1/namespaces/{namespace}/pods/{name}", obj)
    return code


# ---------------------------------------------------------------- kubelet's log endpoint


def serving_certificate(env: Env, node: str, address: str) -> tuple[Path, Path]:
    """/var/lib/kubelet/pki/kubelet.{crt,key}: self-signed, made once, as kubelet makes them."""
    directory = env.path("/var/lib/kubelet/pki")
    cert, key = directory / "kubelet.crt", directory / "kubelet.key"
    if not cert.exists() or not key.exists():
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        subprocess.run([str(env.setting("openssl", "openssl")), "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "365",
                        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={node}@{int(time.time())}",
                        "-addext", f"subjectAltName=DNS:{node},IP:{address}"],
                       check=True, capture_output=True, timeout=60)
    return cert, key


class LogHandler(BaseHTTPRequestHandler):
    server: LogServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass

    def do_GET(self) -> None:
        if not self.connection.getpeercert():
            return self.answer(401, b"Unauthorized")
        parts = [unquote(p) for p in self.path.split("?")[0].split("/") if p]
        if len(parts) != 4 or parts[0] != "containerLogs":
            return self.answer(404, b"404 page not found")
        _, namespace, pod, container = parts
        found = sorted(self.server.env.path("/var/log/pods").glob(f"{namespace}_{pod}_*/{container}/0.log"))
        if not found:
            return self.answer(404, f'container "{container}" in pod "{pod}" is not available'.encode())
        return self.answer(200, found[-1].read_bytes())

    def answer(self, code: int, data: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class LogServer(ThreadingHTTPServer):
    """kubelet's HTTPS endpoint, cut to containerLogs, on a thread of the kubelet double."""

    daemon_threads = True

    def __init__(self, env: Env, node: str, address: str, port: int, client_ca: str) -> None:
        self.env = env
        cert, key = serving_certificate(env, node, address)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        context.load_verify_locations(str(env.path(client_ca)))
        context.verify_mode = ssl.CERT_OPTIONAL
        super().__init__((address, port), LogHandler)
        self.socket = context.wrap_socket(self.socket, server_side=True)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self.thread.join(timeout=10)

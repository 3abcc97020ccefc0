"""The lab's API server stand-in: what real kubectl needs from kube-apiserver, state in etcd.

Started with kube-apiserver's flags (the static pod manifest's command): it listens on
``--advertise-address:--secure-port`` with ``--tls-cert-file``, authenticates client
certificates against ``--client-ca-file`` (user = CN, groups = O) and bootstrap tokens
(the ``bootstrap-token-<id>`` Secret in kube-system), keeps every object in the etcd of
``--etcd-servers`` (the JSON gateway of etcd 3.4, with the ``--etcd-*file`` client
certificate) under kube-apiserver's ``/registry/...`` keys, and serves discovery, the
built-in resources of ``apiserver-resources.yaml``, CRDs and the resources they define,
tables for ``kubectl get``, server-side dry run and the OpenAPI v2 document kubectl's
apply reads (``apiserver_openapi.py``). What it does not serve answers 404 with a Status,
as kube-apiserver answers a missing resource. Lab equipment; see docs/lab-doubles.md.
"""

from __future__ import annotations

import base64
import datetime
import hmac
import ipaddress
import json
import os
import re
import ssl
import sys
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import apiserver_bootstrap
import apiserver_openapi
import apiserver_patch
import apiserver_streams
import yaml

HERE = Path(__file__).resolve().parent
RESOURCES = HERE / "apiserver-resources.yaml"
ETCD_TIMEOUT = 10
# kube-apiserver flags kubeadm 1.25 writes into the static pod (phases/controlplane/manifests.go).
KNOWN_FLAGS = {
    "advertise-address", "allow-privileged", "authorization-mode", "client-ca-file",
    "enable-admission-plugins", "enable-bootstrap-token-auth", "etcd-cafile", "etcd-certfile",
    "etcd-keyfile", "etcd-servers", "kubelet-client-certificate", "kubelet-client-key",
    "kubelet-preferred-address-types", "proxy-client-cert-file", "proxy-client-key-file",
    "requestheader-allowed-names", "requestheader-client-ca-file", "requestheader-extra-headers-prefix",
    "requestheader-group-headers", "requestheader-username-headers", "secure-port",
    "service-account-issuer", "service-account-key-file", "service-account-signing-key-file",
    "service-cluster-ip-range", "tls-cert-file", "tls-private-key-file", "bind-address",
}
REQUIRED_FLAGS = ("advertise-address", "secure-port", "tls-cert-file", "tls-private-key-file",
                  "client-ca-file", "etcd-servers", "service-cluster-ip-range")
DISCOVERY = re.compile(r"/api|/api/v1|/apis|/apis/[^/]+|/apis/[^/]+/[^/]+")
BOOTSTRAP_TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")


class ApiError(Exception):
    """An API answer that is not 2xx: a Status object."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def status(self) -> dict[str, Any]:
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": self.message, "reason": self.reason, "details": self.details, "code": self.code}


def not_found(resource: str = "", name: str = "", group: str = "") -> ApiError:
    if not name:
        return ApiError(404, "NotFound", "the server could not find the requested resource")
    qualified = f"{resource}.{group}" if group else resource
    return ApiError(404, "NotFound", f'{qualified} "{name}" not found',
                    {"name": name, "group": group, "kind": resource})


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------- flags


def parse_flags(argv: list[str]) -> dict[str, str]:
    """kube-apiserver's ``--name=value`` flags; an unknown one fails as cobra fails."""
    flags: dict[str, str] = {}
    for arg in argv:
        if not arg.startswith("--"):
            continue
        name, _, value = arg[2:].partition("=")
        if name not in KNOWN_FLAGS:
            raise SystemExit(f"Error: unknown flag: --{name}")
        flags[name] = value
    missing = [f"--{name}" for name in REQUIRED_FLAGS if not flags.get(name)]
    if missing:
        raise SystemExit(f"Error: lab API server stand-in needs {', '.join(missing)}")
    return flags


# ---------------------------------------------------------------- etcd (v3 JSON gateway)


def b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


def prefix_end(prefix: str) -> str:
    raw = bytearray(prefix.encode())
    raw[-1] += 1
    return b64(bytes(raw))


class Etcd:
    """etcd's v3 API through its gRPC gateway (``/v3/kv/*``), TLS with a client certificate."""

    def __init__(self, servers: str, ca: str = "", cert: str = "", key: str = "") -> None:
        self.servers = [s.rstrip("/") for s in servers.split(",") if s]
        self.context = None
        if any(s.startswith("https://") for s in self.servers):
            self.context = ssl.create_default_context(cafile=ca or None)
            if cert:
                self.context.load_cert_chain(cert, key or None)

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        last = ""
        for server in self.servers:
            request = urllib.request.Request(f"{server}{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=ETCD_TIMEOUT, context=self.context) as answer:
                    return json.loads(answer.read())
            except (urllib.error.URLError, OSError, ValueError) as error:
                last = f"{server}: {getattr(error, 'reason', error)}"
        raise ApiError(500, "InternalError", f"etcdserver: request timed out ({last})")

    def range(self, key: str, prefix: bool = False) -> tuple[list[tuple[dict[str, Any], int]], int]:
        body: dict[str, Any] = {"key": b64(key)}
        if prefix:
            body["range_end"] = prefix_end(key)
        answer = self.call("/v3/kv/range", body)
        items = [(json.loads(base64.b64decode(kv["value"])), int(kv["mod_revision"]))
                 for kv in answer.get("kvs") or []]
        return items, int(answer["header"]["revision"])

    def get(self, key: str) -> tuple[dict[str, Any], int] | None:
        items, _ = self.range(key)
        return items[0] if items else None

    def put_if(self, key: str, value: dict[str, Any], mod_revision: int) -> int | None:
        """Write ``value`` if the key's mod revision is ``mod_revision`` (0: absent); its new revision."""
        compare = {"key": b64(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(mod_revision)}
        put = {"request_put": {"key": b64(key), "value": b64(json.dumps(value))}}
        answer = self.call("/v3/kv/txn", {"compare": [compare], "success": [put]})
        return int(answer["header"]["revision"]) if answer.get("succeeded") else None

    def delete(self, key: str) -> bool:
        return int(self.call("/v3/kv/deleterange", {"key": b64(key)}).get("deleted") or 0) > 0


# ---------------------------------------------------------------- resources


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    name: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    crd: bool = False

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def key(self, namespace: str = "", name: str = "") -> str:
        base = f"/registry/{self.group}/{self.name}" if self.crd else f"/registry/{self.name}"
        parts = [base] + ([namespace] if self.namespaced and namespace else []) + ([name] if name else [])
        return "/".join(parts) + ("" if name else "/")

    def discovery(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name, "singularName": self.kind.lower() if self.crd else "",
            "namespaced": self.namespaced, "kind": self.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        return entry


def builtin_resources() -> list[Resource]:
    spec = yaml.safe_load(RESOURCES.read_text())
    return [Resource(g["group"], g["version"], r["name"], r["kind"], r["namespaced"],
                     tuple(r.get("shortNames") or ()), tuple(r.get("categories") or ()))
            for g in spec["groups"] for r in g["resources"]]


def crd_resources(crd: dict[str, Any]) -> list[Resource]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    return [Resource(spec["group"], v["name"], names["plural"], names["kind"], spec.get("scope") == "Namespaced",
                     tuple(names.get("shortNames") or ()), tuple(names.get("categories") or ()), crd=True)
            for v in spec.get("versions") or [] if v.get("served", True)]


# ---------------------------------------------------------------- authentication and authorization


@dataclass
class User:
    name: str
    groups: list[str] = field(default_factory=list)

    @property
    def anonymous(self) -> bool:
        return self.name == "system:anonymous"


def certificate_user(peer: dict[str, Any] | None) -> User | None:
    if not peer:
        return None
    subject = [item for rdn in peer.get("subject", ()) for item in rdn]
    names = [v for k, v in subject if k == "commonName"]
    groups = [v for k, v in subject if k == "organizationName"]
    return User(names[0], groups + ["system:authenticated"]) if names else None


def token_user(store: Store, token: str) -> User:
    """A bootstrap token, as kube-apiserver's bootstrap authenticator checks it; else 401."""
    match = BOOTSTRAP_TOKEN.match(token)
    if not match:
        raise ApiError(401, "Unauthorized", "Unauthorized")
    secret = store.secret("kube-system", f"bootstrap-token-{match.group(1)}")
    data = {k: base64.b64decode(v).decode() for k, v in ((secret or {}).get("data") or {}).items()}
    expiration = data.get("expiration", "")
    expired = bool(expiration) and expiration < now_rfc3339()
    if (not secret or secret.get("type") != "bootstrap.kubernetes.io/token" or expired
            or data.get("usage-bootstrap-authentication") != "true"
            or not hmac.compare_digest(data.get("token-secret", ""), match.group(2))):
        raise ApiError(401, "Unauthorized", "Unauthorized")
    extra = [g for g in data.get("auth-extra-groups", "").split(",") if g]
    return User(f"system:bootstrap:{match.group(1)}", ["system:bootstrappers", *extra, "system:authenticated"])


# (verb, resource, namespace, name) a group may use; "*" matches anything. kubeadm's and
# kube-apiserver's default RBAC, cut to what the lab's clients do (docs/lab-doubles.md).
RULES = {
    "system:masters": [("*", "*", "*", "*")],
    "system:nodes": [("*", "nodes", "*", "*"), ("*", "pods", "*", "*"), ("*", "events", "*", "*"),
                     ("*", "leases", "*", "*"), ("get", "*", "*", "*"), ("list", "*", "*", "*"),
                     ("watch", "*", "*", "*")],
    "system:bootstrappers": [("get", "configmaps", "kube-system", "*"), ("get", "nodes", "*", "*"),
                             ("get", "configmaps", "kube-public", "cluster-info")],
    "system:unauthenticated": [("get", "configmaps", "kube-public", "cluster-info")],
}
USER_RULES = {
    "system:kube-controller-manager": [("*", "*", "*", "*")],
    "system:kube-scheduler": [("get", "*", "*", "*"), ("list", "*", "*", "*"), ("watch", "*", "*", "*"),
                              ("*", "pods", "*", "*"), ("*", "events", "*", "*"), ("*", "leases", "*", "*")],
}


def allowed(user: User, verb: str, resource: str, namespace: str, name: str) -> bool:
    rules = [r for g in user.groups + (["system:unauthenticated"] if user.anonymous else [])
             for r in RULES.get(g, [])] + USER_RULES.get(user.name, [])
    wanted = (verb, resource, namespace or "*", name or "*")
    return any(all(r == "*" or r == w for r, w in zip(rule, wanted)) for rule in rules)


def forbidden(user: User, verb: str, resource: Resource, namespace: str, name: str) -> ApiError:
    scope = f'in the namespace "{namespace}"' if namespace else "at the cluster scope"
    what = f'{resource.name} "{name}"' if name else resource.name
    return ApiError(403, "Forbidden", f'{what} is forbidden: User "{user.name}" cannot {verb} resource '
                    f'"{resource.name}" in API group "{resource.group}" {scope}',
                    {"name": name, "group": resource.group, "kind": resource.name})


# ---------------------------------------------------------------- the store


class Store:
    """Objects in etcd, with kube-apiserver's metadata (uid, resourceVersion, timestamps)."""

    def __init__(self, etcd: Etcd) -> None:
        self.etcd = etcd
        self.builtin = builtin_resources()

    def resources(self) -> list[Resource]:
        crds = next(r for r in self.builtin if r.name == "customresourcedefinitions")
        items, _ = self.etcd.range(crds.key(), prefix=True)
        return self.builtin + [r for crd, _ in items for r in crd_resources(crd)]

    def find(self, group: str, version: str, name: str) -> Resource:
        for resource in self.resources():
            if (resource.group, resource.version, resource.name) == (group, version, name):
                return resource
        raise not_found()

    def secret(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self.etcd.get(f"/registry/secrets/{namespace}/{name}")
        return found[0] if found else None

    def get(self, resource: Resource, namespace: str, name: str) -> dict[str, Any]:
        found = self.etcd.get(resource.key(namespace, name))
        if not found:
            raise not_found(resource.name, name, resource.group)
        return with_version(*found)

    def list(self, resource: Resource, namespace: str) -> tuple[list[dict[str, Any]], int]:
        items, revision = self.etcd.range(resource.key(namespace), prefix=True)
        return [with_version(obj, rev) for obj, rev in items], revision

    def create(self, resource: Resource, namespace: str, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        meta = normalize(resource, obj).setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        name = meta.get("name") or ""
        if not name:
            raise ApiError(422, "Invalid", f"{resource.kind} \"\" is invalid: metadata.name: Required value: "
                           "name or generateName is required")
        if resource.namespaced:
            if not self.etcd.get(f"/registry/namespaces/{namespace}"):
                raise not_found("namespaces", namespace)
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339())
        meta.pop("resourceVersion", None)
        if dry_run:
            if self.etcd.get(resource.key(namespace, name)):
                raise already_exists(resource, name)
            return obj
        revision = self.etcd.put_if(resource.key(namespace, name), obj, 0)
        if revision is None:
            raise already_exists(resource, name)
        return with_version(obj, revision)

    def replace(self, resource: Resource, namespace: str, name: str, obj: dict[str, Any],
                dry_run: bool) -> dict[str, Any]:
        current = self.get(resource, namespace, name)
        meta = normalize(resource, obj).setdefault("metadata", {})
        wanted = meta.get("resourceVersion")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise conflict(resource, name)
        for keep in ("uid", "creationTimestamp", "namespace"):
            if keep in current["metadata"]:
                meta[keep] = current["metadata"][keep]
        meta["name"] = name
        meta.pop("resourceVersion", None)
        if dry_run:
            return with_version(obj, int(current["metadata"]["resourceVersion"]))
        revision = self.etcd.put_if(resource.key(namespace, name), obj, int(current["metadata"]["resourceVersion"]))
        if revision is None:
            raise conflict(resource, name)
        return with_version(obj, revision)

    def delete(self, resource: Resource, namespace: str, name: str, dry_run: bool) -> dict[str, Any]:
        current = self.get(resource, namespace, name)
        if not dry_run:
            self.etcd.delete(resource.key(namespace, name))
            if resource.name == "namespaces":
                for other in self.resources():
                    if other.namespaced:
                        for obj, _ in self.etcd.range(other.key(name), prefix=True)[0]:
                            self.etcd.delete(other.key(name, obj["metadata"]["name"]))
        return current

    def bootstrap(self, service_ip: str, advertise: str, port: int) -> None:
        """What kube-apiserver's bootstrap controller makes: the system namespaces, the kubernetes Service."""
        spec = yaml.safe_load(RESOURCES.read_text())
        namespaces = self.find("", "v1", "namespaces")
        for name in spec["namespaces"]:
            if not self.etcd.get(namespaces.key("", name)):
                self.create(namespaces, "", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name},
                                             "spec": {"finalizers": ["kubernetes"]},
                                             "status": {"phase": "Active"}}, False)
        services = self.find("", "v1", "services")
        if not self.etcd.get(services.key("default", "kubernetes")):
            self.create(services, "default", {
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "kubernetes", "labels": {"component": "apiserver", "provider": "kubernetes"}},
                "spec": {"clusterIP": service_ip, "clusterIPs": [service_ip], "type": "ClusterIP",
                         "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
            }, False)
        endpoints = self.find("", "v1", "endpoints")
        address = {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "kubernetes", "namespace": "default"},
                   "subsets": [{"addresses": [{"ip": advertise}],
                                "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}
        current = self.etcd.get(endpoints.key("default", "kubernetes"))
        if not current:
            self.create(endpoints, "default", address, False)
        else:
            ips = [a["ip"] for s in current[0].get("subsets") or [] for a in s.get("addresses") or []]
            if advertise not in ips:
                current[0]["subsets"][0]["addresses"].append({"ip": advertise})
                self.etcd.put_if(endpoints.key("default", "kubernetes"), current[0], current[1])


def normalize(resource: Resource, obj: dict[str, Any]) -> dict[str, Any]:
    """What kube-apiserver does to an object before storing it (a Secret's stringData goes into data)."""
    if resource.name == "secrets" and obj.get("stringData"):
        data = obj.setdefault("data", {})
        for key, value in obj.pop("stringData").items():
            data[key] = b64(str(value))
    return obj


def with_version(obj: dict[str, Any], revision: int) -> dict[str, Any]:
    obj.setdefault("metadata", {})["resourceVersion"] = str(revision)
    return obj


def already_exists(resource: Resource, name: str) -> ApiError:
    qualified = f"{resource.name}.{resource.group}" if resource.group else resource.name
    return ApiError(409, "AlreadyExists", f'{qualified} "{name}" already exists',
                    {"name": name, "group": resource.group, "kind": resource.name})


def conflict(resource: Resource, name: str) -> ApiError:
    qualified = f"{resource.name}.{resource.group}" if resource.group else resource.name
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {qualified} "{name}": the object has been '
                    "modified; please apply your changes to the latest version and try again",
                    {"name": name, "group": resource.group, "kind": resource.name})


# ---------------------------------------------------------------- patches, selectors, tables


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (strategic merge patches: apiserver_patch)."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith(("$setElementOrder/", "$retainKeys", "$patch", "$deleteFromPrimitiveList/")):
            continue
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def matches_labels(labels: dict[str, str], selector: str) -> bool:
    """Equality and existence terms of a label selector (``a=b,c!=d,e,!f``)."""
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def field_value(obj: dict[str, Any], path: str) -> str:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return "" if value is None else str(value)


def matches_fields(obj: dict[str, Any], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        negate = "!=" in term
        key, value = re.split(r"!=|==|=", term, maxsplit=1)
        if (field_value(obj, key.strip()) == value.strip()) == negate:
            return False
    return True


def age(timestamp: str) -> str:
    try:
        then = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    except (TypeError, ValueError):
        return "<unknown>"
    seconds = int((datetime.datetime.now(datetime.timezone.utc) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def node_cells(obj: dict[str, Any]) -> list[Any]:
    status = obj.get("status") or {}
    ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/"))
    state = ["Ready" if ready.get("status") == "True" else "NotReady"]
    if (obj.get("spec") or {}).get("unschedulable"):  # printers.go printNode
        state.append("SchedulingDisabled")
    return [",".join(state), ",".join(roles) or "<none>",
            age(obj["metadata"].get("creationTimestamp", "")), (status.get("nodeInfo") or {}).get("kubeletVersion", "")]


def pod_cells(obj: dict[str, Any]) -> list[Any]:
    status = obj.get("status") or {}
    containers = (obj.get("spec") or {}).get("containers") or []
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    reason = next((s["state"]["waiting"].get("reason") for s in statuses
                   if (s.get("state") or {}).get("waiting")), None)
    return [f"{ready}/{len(containers)}", reason or status.get("phase", "Pending"), restarts,
            age(obj["metadata"].get("creationTimestamp", ""))]


COLUMNS = {
    "namespaces": (["Status", "Age"], lambda o: [(o.get("status") or {}).get("phase", "Active"),
                                                 age(o["metadata"].get("creationTimestamp", ""))]),
    "nodes": (["Status", "Roles", "Age", "Version"], node_cells),
    "pods": (["Ready", "Status", "Restarts", "Age"], pod_cells),
}


def table(resource: Resource, items: list[dict[str, Any]], revision: int) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table, as kubectl get asks for it (default columns: Name, Created At)."""
    names, cells = COLUMNS.get(resource.name, (["Created At"], lambda o: [o["metadata"].get("creationTimestamp")]))
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name", "priority": 0}]
    definitions += [{"name": n, "type": "date" if n == "Created At" else "string", "format": "",
                     "description": n, "priority": 0} for n in names]
    rows = [{"cells": [o["metadata"]["name"], *cells(o)],
             "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]}}
            for o in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(revision)},
            "columnDefinitions": definitions, "rows": rows}


# ---------------------------------------------------------------- HTTP


@dataclass
class Raw:
    """A non-JSON answer body."""

    data: bytes
    content_type: str


@dataclass
class Route:
    """A resource request: /api/v1/..., /apis/G/V/[namespaces/NS/]RESOURCE[/NAME]."""

    group: str
    version: str
    namespace: str
    resource: str
    name: str


def route(path: str) -> Route | None:
    parts = [p for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 2:
        return None
    return Route(group, version, namespace, rest[0], rest[1] if len(rest) == 2 else "")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 300  # an idle keep-alive connection is closed (kubectl reconnects)
    server: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        pass

    def do_GET(self) -> None:
        self.dispatch("GET")

    def do_POST(self) -> None:
        self.dispatch("POST")

    def do_PUT(self) -> None:
        self.dispatch("PUT")

    def do_PATCH(self) -> None:
        self.dispatch("PATCH")

    def do_DELETE(self) -> None:
        self.dispatch("DELETE")

    def dispatch(self, method: str) -> None:
        try:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            user = self.authenticate()
            code, answer = self.server.api.handle(method, self.path, self.headers, body, user)
        except ApiError as error:
            code, answer = error.code, error.status()
        if isinstance(answer, apiserver_streams.Watch):
            self.stream(answer)
        elif isinstance(answer, Raw):
            self.reply(code, answer.data, answer.content_type)
        elif isinstance(answer, str):
            self.reply(code, answer.encode(), "text/plain; charset=utf-8")
        else:
            self.reply(code, json.dumps(answer).encode(), "application/json")

    def authenticate(self) -> User:
        header = self.headers.get("Authorization", "")
        if header.startswith("Bearer "):
            return token_user(self.server.api.store, header[7:].strip())
        return certificate_user(self.connection.getpeercert()) or User("system:anonymous", ["system:unauthenticated"])

    def stream(self, watch: apiserver_streams.Watch) -> None:
        """A watch's events, chunked, until it ends or the client hangs up."""
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.flush()
        try:
            for event in watch.events(lambda: not self.server.stopping):
                self.wfile.write(apiserver_streams.chunk(apiserver_streams.event_bytes(event)))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            pass
        self.close_connection = True

    def reply(self, code: int, data: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.wfile.write(data)


class Api:
    """Request handling without the socket: (method, path, headers, body, user) -> (code, answer)."""

    def __init__(self, store: Store, version: dict[str, str], address: str) -> None:
        self.store, self.version, self.address = store, version, address
        self.kubelet_client = ("", "")

    def handle(self, method: str, target: str, headers: Any, body: bytes, user: User) -> tuple[int, Any]:
        url = urlsplit(target)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        path = url.path.rstrip("/") or "/"
        if path == "/livez":
            return 200, "ok"
        if path in ("/healthz", "/readyz"):
            return self.health()
        if path == "/version":
            return 200, self.version
        if path == "/openapi/v2" and method == "GET" and not user.anonymous:
            resources = self.store.resources()
            if apiserver_openapi.PROTOBUF in headers.get("Accept", ""):
                return 200, Raw(apiserver_openapi.document(resources, self.version["gitVersion"]),
                                apiserver_openapi.PROTOBUF_REPLY)
            return 200, apiserver_openapi.document_json(resources, self.version["gitVersion"])
        if user.anonymous and not path.startswith("/api/v1/namespaces/kube-public/configmaps"):
            raise ApiError(403, "Forbidden", f'forbidden: User "system:anonymous" cannot {method.lower()} path "{path}"')
        if method == "GET" and DISCOVERY.fullmatch(path):
            return 200, self.discovery(path)
        logs = apiserver_streams.log_route(path)
        if logs and method == "GET":
            return self.pod_log(user, *logs, query)
        if EVICTION.fullmatch(path):
            return evict(self.store, method, path, body, user)
        found = route(path)
        if found is None:
            raise not_found()
        resource = self.store.find(found.group, found.version, found.resource)
        return self.resource(method, resource, found, query, headers, body, user)

    def health(self) -> tuple[int, str]:
        """/healthz and /readyz as kube-apiserver answers them: failing while etcd does not answer."""
        try:
            self.store.etcd.range("/registry/health")
        except ApiError:
            return 500, "[-]etcd failed: reason withheld\nhealthz check failed"
        return 200, "ok"

    def discovery(self, path: str) -> dict[str, Any]:
        resources = self.store.resources()
        if path == "/api":
            return {"kind": "APIVersions", "versions": ["v1"],
                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": self.address}]}
        if path == "/apis":
            groups: dict[str, list[str]] = {}
            for r in resources:
                if r.group and r.version not in groups.setdefault(r.group, []):
                    groups[r.group].append(r.version)
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": [
                {"name": g, "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                 "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]}}
                for g, vs in groups.items()]}
        parts = path.strip("/").split("/")
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2] if len(parts) > 2 else "")
        if not version:
            versions = sorted({r.version for r in resources if r.group == group})
            if not versions:
                raise not_found()
            return {"kind": "APIGroup", "apiVersion": "v1", "name": group,
                    "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions],
                    "preferredVersion": {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]}}
        served = [r for r in resources if (r.group, r.version) == (group, version)]
        if not served:
            raise not_found()
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": served[0].group_version,
                "resources": [r.discovery() for r in served] + subresources(group, version)}

    def resource(self, method: str, resource: Resource, found: Route, query: dict[str, str], headers: Any,
                 body: bytes, user: User) -> tuple[int, Any]:
        namespace = found.namespace if resource.namespaced else ""
        verb = {"GET": "get" if found.name else "list", "POST": "create", "PUT": "update",
                "PATCH": "patch", "DELETE": "delete"}[method]
        if query.get("watch") in ("1", "true"):
            verb = "watch"
        if not allowed(user, verb, resource.name, namespace, found.name):
            raise forbidden(user, verb, resource, namespace, found.name)
        dry_run = query.get("dryRun") == "All"
        if verb == "watch":
            return 200, watch_for(self.store, resource, namespace, query)
        if verb == "get":
            obj = self.store.get(resource, namespace, found.name)
            if apiserver_bootstrap.is_cluster_info(namespace, found.name, resource.name):
                obj = apiserver_bootstrap.signed(obj, self.store.list(self.store.find("", "v1", "secrets"),
                                                                      "kube-system")[0])
            return 200, obj
        if verb == "list":
            items, revision = self.store.list(resource, namespace)
            items = [o for o in items
                     if matches_labels((o.get("metadata") or {}).get("labels") or {}, query.get("labelSelector", ""))
                     and matches_fields(o, query.get("fieldSelector", ""))]
            if "as=Table" in headers.get("Accept", ""):
                return 200, table(resource, items, revision)
            return 200, {"kind": f"{resource.kind}List", "apiVersion": resource.group_version,
                         "metadata": {"resourceVersion": str(revision)}, "items": items}
        if verb == "delete":
            self.store.delete(resource, namespace, found.name, dry_run)
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                         "details": {"name": found.name, "group": resource.group, "kind": resource.name}}
        obj = self.decode(body, headers.get("Content-Type", ""))
        if verb == "create":
            self.check_kind(resource, obj)
            created = self.store.create(resource, namespace, obj, dry_run)
            return 201, self.admitted(resource, created, dry_run)
        if verb == "update":
            self.check_kind(resource, obj)
            return 200, self.store.replace(resource, namespace, found.name, obj, dry_run)
        content_type = headers.get("Content-Type", "").split(";")[0]
        if content_type == "application/apply-patch+yaml":
            try:
                current = self.store.get(resource, namespace, found.name)
            except ApiError as error:
                if error.code != 404:
                    raise
                obj.setdefault("metadata", {})["name"] = found.name
                return 201, self.store.create(resource, namespace, obj, dry_run)
            return 200, self.store.replace(resource, namespace, found.name, merge_patch(current, obj), dry_run)
        if content_type not in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
            raise ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown format - "
                           "accepted media types include: application/merge-patch+json, "
                           "application/strategic-merge-patch+json, application/apply-patch+yaml")
        current = self.store.get(resource, namespace, found.name)
        strategic = content_type == "application/strategic-merge-patch+json"
        patched = apiserver_patch.strategic_merge(current, obj) if strategic else merge_patch(current, obj)
        patched["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return 200, self.store.replace(resource, namespace, found.name, patched, dry_run)

    def admitted(self, resource: Resource, obj: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        """After a CRD is stored its resources are served (the real one waits for Established)."""
        if resource.name == "customresourcedefinitions":
            obj.setdefault("status", {})["conditions"] = [
                {"type": "NamesAccepted", "status": "True"}, {"type": "Established", "status": "True"}]
        return obj

    @staticmethod
    def decode(body: bytes, content_type: str) -> dict[str, Any]:
        try:
            obj = yaml.safe_load(body) if "yaml" in content_type else json.loads(body or b"{}")
        except (ValueError, yaml.YAMLError) as error:
            raise ApiError(400, "BadRequest", f"the body of the request could not be decoded: {error}") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "BadRequest", "the body of the request must be an object")
        return obj

    @staticmethod
    def check_kind(resource: Resource, obj: dict[str, Any]) -> None:
        if obj.get("kind") != resource.kind or obj.get("apiVersion") != resource.group_version:
            raise ApiError(400, "BadRequest", f"the API version in the data ({obj.get('apiVersion')}) does not "
                           f"match the expected API version ({resource.group_version})")


    def pod_log(self, user: User, namespace: str, name: str, query: dict[str, str]) -> tuple[int, Any]:
        """pods/log: the pod's node's kubelet is asked, as kube-apiserver asks it."""
        pods = self.store.find("", "v1", "pods")
        if not allowed(user, "get", "pods", namespace, name):
            raise forbidden(user, "get", pods, namespace, name)
        pod = self.store.get(pods, namespace, name)
        containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
        container = query.get("container") or (containers[0] if len(containers) == 1 else "")
        if container not in containers:
            raise ApiError(400, "BadRequest", f"a container name must be specified for pod {name}, "
                           f"choose one of: {containers}")
        node_name = (pod.get("spec") or {}).get("nodeName") or ""
        if not node_name:
            raise ApiError(400, "BadRequest", f'container "{container}" in pod "{name}" is waiting to start: '
                           "ContainerCreating")
        node = self.store.get(self.store.find("", "v1", "nodes"), "", node_name)
        address, port = apiserver_streams.node_address(node), apiserver_streams.kubelet_port(node)
        try:
            data = apiserver_streams.kubelet_logs(address, port, namespace, name, container,
                                                  self.kubelet_client[0], self.kubelet_client[1])
        except OSError as error:
            raise ApiError(500, "InternalError", f"Get \"https://{address}:{port}"
                           f"/containerLogs/{namespace}/{name}/{container}\": {error}") from None
        return 200, Raw(data, "text/plain")


def watch_for(store: Store, resource: Resource, namespace: str, query: dict[str, str]) -> apiserver_streams.Watch:
    """A watch of ``resource`` (in ``namespace``) with the request's selectors, from its resourceVersion."""
    def read() -> apiserver_streams.Seen:
        body = {"key": b64(resource.key(namespace)), "range_end": prefix_end(resource.key(namespace))}
        answer = store.etcd.call("/v3/kv/range", body)
        seen: apiserver_streams.Seen = {}
        for kv in answer.get("kvs") or []:
            obj = with_version(json.loads(base64.b64decode(kv["value"])), int(kv["mod_revision"]))
            meta = obj["metadata"]
            seen[(meta.get("namespace", ""), meta["name"])] = (obj, int(kv["mod_revision"]), int(kv["create_revision"]))
        return seen

    def keep(obj: dict[str, Any]) -> bool:
        return (matches_labels((obj.get("metadata") or {}).get("labels") or {}, query.get("labelSelector", ""))
                and matches_fields(obj, query.get("fieldSelector", "")))

    try:
        since = int(query.get("resourceVersion") or 0)
    except ValueError:
        raise ApiError(400, "BadRequest", f"invalid resource version: {query.get('resourceVersion')}") from None
    return apiserver_streams.Watch(read, keep, since, apiserver_streams.watch_timeout(query))


# ---------------------------------------------------------------- drain: the pods/eviction subresource
# What real kubectl's drain uses (k8s.io/kubectl/pkg/drain): discovery names pods/eviction
# (kind Eviction, group policy, version v1), then one POST of a policy/v1 Eviction per pod,
# which deletes the pod (no PodDisruptionBudget is modelled). Cordon is a PATCH of the Node's
# spec.unschedulable and the pod list a fieldSelector on spec.nodeName: both generic above.

EVICTION = re.compile(r"/api/v1/namespaces/([^/]+)/pods/([^/]+)/eviction")


def subresources(group: str, version: str) -> list[dict[str, Any]]:
    """The subresources discovery lists beside the resources of ``group/version``."""
    if (group, version) != ("", "v1"):
        return []
    return [{"name": "pods/eviction", "singularName": "", "namespaced": True, "group": "policy",
             "version": "v1", "kind": "Eviction", "verbs": ["create"]}]


def evict(store: Store, method: str, path: str, body: bytes, user: User) -> tuple[int, Any]:
    """POST .../pods/NAME/eviction with a policy/v1 (or v1beta1) Eviction: the pod deleted."""
    namespace, name = EVICTION.fullmatch(path).groups()  # type: ignore[union-attr]
    if method != "POST":
        raise ApiError(405, "MethodNotAllowed", f"the server does not allow this method on the requested resource"
                       f" (pods/eviction {name})")
    pods = store.find("", "v1", "pods")
    if not allowed(user, "create", "pods/eviction", namespace, name) and not allowed(user, "delete", "pods",
                                                                                     namespace, name):
        raise forbidden(user, "create", pods, namespace, name)
    eviction = Api.decode(body, "application/json")
    if eviction.get("kind") != "Eviction" or eviction.get("apiVersion") not in ("policy/v1", "policy/v1beta1"):
        raise ApiError(400, "BadRequest", f"the API version in the data ({eviction.get('apiVersion')}) does not "
                       "match the expected API version (policy/v1)")
    if (eviction.get("metadata") or {}).get("name", name) != name:
        raise ApiError(400, "BadRequest", f"name in URL does not match name in Eviction object: {name}")
    store.delete(pods, namespace, name, (eviction.get("deleteOptions") or {}).get("dryRun") == ["All"])
    return 201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    api: Api
    stopping = False


def serve(flags: dict[str, str], version: dict[str, str]) -> ApiServer:
    """Bind advertise-address:secure-port with the serving certificate; the caller runs it."""
    address, port = flags["advertise-address"], int(flags["secure-port"])
    etcd = Etcd(flags["etcd-servers"], flags.get("etcd-cafile", ""), flags.get("etcd-certfile", ""),
                flags.get("etcd-keyfile", ""))
    store = Store(etcd)
    subnet = ipaddress.ip_network(flags["service-cluster-ip-range"].split(",")[0], strict=False)
    store.bootstrap(str(subnet.network_address + 1), address, port)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(flags["tls-cert-file"], flags["tls-private-key-file"])
    context.load_verify_locations(flags["client-ca-file"])
    context.verify_mode = ssl.CERT_OPTIONAL
    context.set_alpn_protocols(["http/1.1"])
    server = ApiServer((flags.get("bind-address") or "0.0.0.0", port), Handler, bind_and_activate=True)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.api = Api(store, version, f"{address}:{port}")
    server.api.kubelet_client = (flags.get("kubelet-client-certificate", ""), flags.get("kubelet-client-key", ""))
    return server


def version_info(git_version: str) -> dict[str, str]:
    major, minor = git_version.lstrip("v").split(".")[:2]
    return {"major": major, "minor": minor, "gitVersion": git_version, "gitCommit": "kubeferry-lab",
            "gitTreeState": "clean", "buildDate": "2022-08-23T17:36:43Z", "goVersion": "go1.19",
            "compiler": "gc", "platform": "linux/amd64"}


def main(argv: list[str], git_version: str) -> int:
    flags = parse_flags(argv)
    server = serve(flags, version_info(git_version))
    host, port = server.server_address[:2]
    print(f"Serving securely on {host}:{port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    # the kubelet double says which release the kube-apiserver image is (its tag)
    sys.exit(main(sys.argv[1:], os.environ.get("KUBEFERRY_APISERVER_VERSION", "v0.0.0")))

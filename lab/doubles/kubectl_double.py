"""The lab's kubectl double: answers apply, get, wait, run (DNS check) and version from the state.

``apply`` is an admission point stricter than a real API server: it refuses a manifest
whose images are not in the site registry (a HEAD on the manifest through containerd's
hosts.toml) or whose calico CALICO_IPV4POOL_CIDR differs from the cluster's podSubnet —
on a real cluster those mistakes show up later as ImagePullBackOff or broken pod routing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import clustermodel
import kubectl_nodes
import yaml
from doublelib import (
    Containerd,
    Env,
    Fail,
    load_documents,
    manifest_exists,
    parse_flags,
    split_image,
)

GLOBAL = {
    "--kubeconfig": "str",
    "-n": "str",
    "--namespace": "str",
    "-A": "bool",
    "--all-namespaces": "bool",
    "-o": "str",
    "--output": "str",
    "--request-timeout": "str",
    "-v": "str",
    "--v": "str",
    "-f": "multi",
    "--filename": "multi",
    "--for": "str",
    "--all": "bool",
    "--timeout": "str",
    "--image": "str",
    "--rm": "bool",
    "-i": "bool",
    "--stdin": "bool",
    "-t": "bool",
    "--tty": "bool",
    "--restart": "str",
    "--image-pull-policy": "str",
    "--client": "bool",
    "--short": "bool",
    "--command": "bool",
    "--attach": "bool",
    "--quiet": "bool",
    "--server-side": "bool",
    "--force-conflicts": "bool",
    "-l": "str",
    "--selector": "str",
    **kubectl_nodes.FLAGS,
    "--ignore-daemonsets": "bool",
    "--delete-emptydir-data": "bool",
    "--delete-local-data": "bool",
    "--force": "bool",
    "--grace-period": "str",
    "--disable-eviction": "bool",
}
WORKLOAD_KINDS = ("DaemonSet", "Deployment", "Pod")


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def age(since: float) -> str:
    seconds = max(0, int(time.time() - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    return f"{seconds // 3600}h"


class Session:
    """One kubectl invocation: the kubeconfig checked against the cluster, the state read."""

    def __init__(self, env: Env, flags: dict[str, Any]) -> None:
        self.env = env
        self.flags = flags
        path = (
            flags.get("--kubeconfig") or os.environ.get("KUBECONFIG") or str(Path.home() / ".kube" / "config")
        )
        if not Path(path).exists():
            raise Fail(
                "The connection to the server localhost:8080 was refused - did you specify the right host or port?"
            )
        try:
            config = yaml.safe_load(Path(path).read_text()) or {}
            context_name = config.get("current-context")
            context = next(c["context"] for c in config["contexts"] if c["name"] == context_name)
            cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
        except (OSError, yaml.YAMLError, KeyError, StopIteration, TypeError):
            raise Fail(f'error: error loading config file "{path}": invalid kubeconfig') from None
        self.server = str(cluster.get("server", ""))
        self.state = env.state.read()
        host = self.server.split("://", 1)[-1].rstrip("/")
        if not self.state.get("init") or host not in self._endpoints():
            raise Fail(f"Unable to connect to the server: dial tcp {host}: connect: connection refused")
        ca = base64.b64decode(cluster.get("certificate-authority-data", "") or b"")
        if ca != env.state.read_file("ca.crt"):
            raise Fail("Unable to connect to the server: x509: certificate signed by unknown authority")
        self.beats = env.state.heartbeats()
        self.now = time.time()

    def _endpoints(self) -> set[str]:
        init = self.state["init"]
        endpoints = {init["endpoint"]}
        for node in self.state.get("nodes", []):
            if node["role"] == "control-plane" and node.get("address"):
                endpoints.add(f"{node['address']}:{node.get('bind_port', 6443)}")
        return endpoints

    def namespace(self) -> str:
        return self.flags.get("-n") or self.flags.get("--namespace") or "default"

    def all_namespaces(self) -> bool:
        return bool(self.flags.get("-A") or self.flags.get("--all-namespaces"))

    def output(self) -> str:
        return self.flags.get("-o") or self.flags.get("--output") or ""


# ---------------------------------------------------------------- apply


def resource_name(obj: dict[str, Any]) -> str:
    group = str(obj.get("apiVersion", "v1")).rpartition("/")[0]
    kind = str(obj.get("kind", "")).lower()
    return f"{kind}.{group}" if group else kind


def containers_of(obj: dict[str, Any]) -> tuple[list[dict[str, Any]], bool]:
    spec = obj.get("spec") or {}
    if obj.get("kind") != "Pod":
        spec = ((spec.get("template") or {}).get("spec")) or {}
    containers = [
        {"name": c.get("name", ""), "image": c.get("image", "")} for c in spec.get("containers") or []
    ]
    init = [
        {"name": c.get("name", ""), "image": c.get("image", "")} for c in spec.get("initContainers") or []
    ]
    return init + containers, bool(spec.get("hostNetwork"))


def template_labels(obj: dict[str, Any]) -> dict[str, str]:
    """The labels the object's pods carry (the pod template's, or a Pod's own)."""
    if obj.get("kind") == "Pod":
        return dict((obj.get("metadata") or {}).get("labels") or {})
    template = ((obj.get("spec") or {}).get("template") or {}).get("metadata") or {}
    return dict(template.get("labels") or {})


def calico_cidr(obj: dict[str, Any]) -> str | None:
    """CALICO_IPV4POOL_CIDR of a calico-node DaemonSet (None when it is not set)."""
    spec = ((obj.get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        for item in container.get("env") or []:
            if item.get("name") == "CALICO_IPV4POOL_CIDR":
                return str(item.get("value"))
    return None


def site_registries(env: Env, hosts_dir: str) -> list[str]:
    configured = env.setting("site_registries", None)
    if configured:
        return [str(r) for r in configured]
    if hosts_dir and Path(hosts_dir).is_dir():
        return sorted(p.name for p in Path(hosts_dir).iterdir() if p.is_dir() and p.name != "_default")
    return []


def admit(session: Session, objects: list[dict[str, Any]], source: str) -> None:
    """The double's admission: images must be in the site registry; calico's pool must be podSubnet.

    A cluster kubeadm made from images outside the site registries (``registry: none``:
    kubeadm's own registry.k8s.io names, imported with ctr) has no registry to pull from:
    there an image is admitted when every node's containerd holds it (kubelet's
    IfNotPresent never pulls it), else refused like an image missing from the registry.
    """
    env = session.env
    runtime = Containerd(env)
    allowed = site_registries(env, runtime.hosts_dir)
    kube_proxy = (session.state["init"].get("images") or {}).get("kube-proxy", "")
    imported_only = bool(kube_proxy) and split_image(kube_proxy)[0] not in allowed
    checked: dict[str, str] = {}
    pod_subnet = session.state["init"].get("podSubnet")
    for obj in objects:
        what = f"{resource_name(obj)}/{(obj.get('metadata') or {}).get('name', '')}"
        if obj.get("kind") == "DaemonSet" and (obj.get("metadata") or {}).get("name") == "calico-node":
            cidr = calico_cidr(obj)
            if cidr is None:
                deny(
                    source,
                    what,
                    "CALICO_IPV4POOL_CIDR is not set (commented out): calico would use 192.168.0.0/16, "
                    f"not the cluster podSubnet {pod_subnet}",
                )
            if cidr != pod_subnet:
                deny(
                    source,
                    what,
                    f'CALICO_IPV4POOL_CIDR "{cidr}" differs from the cluster podSubnet "{pod_subnet}"',
                )
        for container in containers_of(obj)[0]:
            image = container["image"]
            if image not in checked:
                registry = split_image(image)[0]
                if registry in allowed:
                    checked[image] = manifest_exists(env, runtime.hosts_dir, image)
                elif imported_only:
                    checked[image] = not_imported(session, image)
                else:
                    checked[image] = (
                        f"registry {registry} is not a site registry (site registries: {', '.join(allowed) or 'none'})"
                    )
            if checked[image]:
                deny(source, what, f'image "{image}" is not in the site registry: {checked[image]}')


def not_imported(session: Session, image: str) -> str:
    """Empty when every registered node's containerd holds ``image``, else which nodes lack it."""
    lacking = [
        node["name"]
        for node in clustermodel.members(session.state)
        if image not in (session.beats.get(node["name"]) or {}).get("images", [])
    ]
    if not lacking:
        return ""
    return f"no site registry to pull from, and it is not imported on {', '.join(lacking)}"


def deny(source: str, what: str, reason: str) -> None:
    raise Fail(
        f'Error from server (Forbidden): error when creating "{source}": admission webhook '
        f'"kubeferry-lab.double" denied the request: {what}: {reason}'
    )


def cmd_apply(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    files = (session.flags.get("-f") or []) + (session.flags.get("--filename") or [])
    if not files:
        raise Fail("error: must specify one of -f and -k", 1)
    objects: list[tuple[str, dict[str, Any]]] = []
    for name in files:
        if name == "-":
            text, source = sys.stdin.read(), "STDIN"
        else:
            try:
                text, source = Path(name).read_text(), name
            except OSError as error:
                raise Fail(f'error: the path "{name}" does not exist ({error.strerror})') from None
        for doc in load_documents(text, source):
            items = doc.get("items", []) if doc.get("kind") == "List" else [doc]
            objects.extend((source, item) for item in items)
    for source, obj in objects:
        if not obj.get("apiVersion") or not obj.get("kind"):
            raise Fail(
                f'error: error validating "{source}": error validating data: [apiVersion not set, kind not set]'
            )
    for source in dict.fromkeys(s for s, _ in objects):
        admit(session, [o for s, o in objects if s == source], source)
    results = []
    with session.env.state.update() as data:
        store = data.setdefault("objects", {})
        record = {
            "time": time.time(),
            "node": session.env.hostname,
            "sources": sorted({s for s, _ in objects}),
            "objects": [],
        }
        for source, obj in objects:
            meta = obj.get("metadata") or {}
            namespaced = obj["kind"] not in (
                "Namespace",
                "ClusterRole",
                "ClusterRoleBinding",
                "CustomResourceDefinition",
                "PriorityClass",
                "StorageClass",
                "APIService",
            )
            namespace = (meta.get("namespace") or session.namespace()) if namespaced else ""
            key = f"{obj['kind']}/{namespace}/{meta.get('name', '')}"
            digest = hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
            containers, host_network = containers_of(obj)
            entry = {
                "kind": obj["kind"],
                "apiVersion": obj["apiVersion"],
                "namespace": namespace,
                "name": meta.get("name", ""),
                "sha256": digest,
                "source": source,
                "containers": containers,
                "images": [c["image"] for c in containers],
                "hostNetwork": host_network,
                "replicas": int((obj.get("spec") or {}).get("replicas", 1) or 1),
                "labels": template_labels(obj),
            }
            if obj["kind"] == "DaemonSet" and meta.get("name") == "calico-node":
                entry["calicoIPv4PoolCIDR"] = calico_cidr(obj)
            previous = store.get(key)
            verb = (
                "created"
                if previous is None
                else ("unchanged" if previous["sha256"] == digest else "configured")
            )
            store[key] = entry
            record["objects"].append({"key": key, "verb": verb, "images": entry["images"]})
            results.append(f"{resource_name(obj)}/{meta.get('name', '')} {verb}")
        data.setdefault("applied", []).append(record)
    extra["applied"] = len(results)
    for line in results:
        out(line)


# ---------------------------------------------------------------- get / wait


def node_objects(session: Session) -> list[dict[str, Any]]:
    result = []
    for node in clustermodel.members(session.state):  # a reset node stays until deleted
        obj = clustermodel.node_object(session.state, session.beats, node, session.now)
        result.append({**obj, "_joined": node["joined"], "_role": node["role"]})
    return result


def pod_objects(session: Session) -> list[dict[str, Any]]:
    result = []
    for pod in clustermodel.pods(session.state, session.beats):
        obj, status = clustermodel.pod_object(pod, session.state, session.beats, session.now)
        result.append({**obj, "_status": status})
    return result


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def print_objects(session: Session, kind: str, items: list[dict[str, Any]]) -> None:
    fmt = session.output()
    if fmt == "json":
        out(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "List",
                    "items": [strip(i) for i in items],
                    "metadata": {},
                },
                indent=4,
            )
        )
    elif fmt == "yaml":
        out(
            yaml.safe_dump(
                {"apiVersion": "v1", "kind": "List", "items": [strip(i) for i in items]},
                sort_keys=False,
            )
        )
    elif fmt == "name":
        for item in items:
            out(f"{kind.lower()}/{item['metadata']['name']}")
    elif fmt in ("", "wide"):
        if not items:
            where = (
                "" if kind == "Node" or session.all_namespaces() else f" in {session.namespace()} namespace"
            )
            sys.stderr.write(f"No resources found{where}.\n")
            return
        if kind == "Node":
            rows = [
                ["NAME", "STATUS", "ROLES", "AGE", "VERSION"] + (["INTERNAL-IP"] if fmt == "wide" else [])
            ]
            for item in items:
                ready = item["status"]["conditions"][0]["status"] == "True"
                cordoned = ",SchedulingDisabled" if (item.get("spec") or {}).get("unschedulable") else ""
                row = [
                    item["metadata"]["name"],
                    ("Ready" if ready else "NotReady") + cordoned,
                    "control-plane" if item["_role"] == "control-plane" else "<none>",
                    age(item["_joined"]),
                    item["status"]["nodeInfo"]["kubeletVersion"] or "<unknown>",
                ]
                if fmt == "wide":
                    row.append(item["status"]["addresses"][0]["address"] or "<none>")
                rows.append(row)
        else:
            head = (["NAMESPACE"] if session.all_namespaces() else []) + [
                "NAME",
                "READY",
                "STATUS",
                "RESTARTS",
                "AGE",
            ]
            rows = [head + (["NODE"] if fmt == "wide" else [])]
            for item in items:
                total = len(item["spec"]["containers"])
                ready = total if item["_status"] == "Running" else 0
                row = ([item["metadata"]["namespace"]] if session.all_namespaces() else []) + [
                    item["metadata"]["name"],
                    f"{ready}/{total}",
                    item["_status"],
                    "0",
                    age(session.state["init"]["time"]),
                ]
                if fmt == "wide":
                    row.append(item["spec"]["nodeName"])
                rows.append(row)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for row in rows:
            out("   ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    else:
        raise Fail(f'error: unable to match a printer suitable for the output format "{fmt}"')


def select(session: Session, resource: str, names: list[str]) -> tuple[str, list[dict[str, Any]]]:
    resource = resource.split(".")[0]
    if resource in ("nodes", "node", "no"):
        kind, items = "Node", node_objects(session)
    elif resource in ("pods", "pod", "po"):
        kind, items = "Pod", pod_objects(session)
        if not session.all_namespaces():
            items = [i for i in items if i["metadata"]["namespace"] == session.namespace()]
    else:
        raise Fail(f'lab double: kubectl get/wait supports nodes and pods, not "{resource}"', 1)
    selector = session.flags.get("-l") or session.flags.get("--selector")
    if selector:
        items = [i for i in items if clustermodel.matches(i["metadata"].get("labels") or {}, selector)]
    if names:
        missing = [n for n in names if n not in {i["metadata"]["name"] for i in items}]
        if missing:
            raise Fail(
                f'Error from server (NotFound): {resource if resource.endswith("s") else resource + "s"} "{missing[0]}" not found'
            )
        items = [i for i in items if i["metadata"]["name"] in names]
    return kind, items


def cmd_get(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    if not positional:
        raise Fail("You must specify the type of resource to get.", 1)
    resource, names = positional[0], positional[1:]
    if "/" in resource:
        resource, name = resource.split("/", 1)
        names = [name]
    kind, items = select(session, resource, names)
    if len(names) == 1 and session.output() in ("json", "yaml"):  # one object, not a List
        item = strip(items[0])
        out(json.dumps(item, indent=4) if session.output() == "json" else yaml.safe_dump(item, sort_keys=False))
        return
    print_objects(session, kind, items)


def cmd_wait(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    condition = session.flags.get("--for", "")
    if condition.lower() != "condition=ready":
        raise Fail(f'lab double: kubectl wait supports --for=condition=Ready, not "{condition}"', 1)
    if not positional:
        raise Fail("error: resource(s) were provided, but no name was specified", 1)
    resource, names = positional[0], positional[1:]
    if "/" in resource:
        resource, name = resource.split("/", 1)
        names = [name]
    if (
        not names
        and not session.flags.get("--all")
        and not (session.flags.get("-l") or session.flags.get("--selector"))
    ):
        raise Fail("error: resource(s) were provided, but no name was specified", 1)
    from doublelib import parse_duration

    deadline = time.time() + parse_duration(session.flags.get("--timeout", "30s"))
    while True:
        session.state = session.env.state.read()
        session.beats = session.env.state.heartbeats()
        session.now = time.time()
        plural, items = select(session, resource, names)
        pending = [i for i in items if i["status"]["conditions"][0]["status"] != "True"]
        if items and not pending:
            for item in items:
                out(f"{plural.lower()}/{item['metadata']['name']} condition met")
            return
        if time.time() >= deadline:
            first = pending[0]["metadata"]["name"] if pending else "<none>"
            raise Fail(f"error: timed out waiting for the condition on {plural.lower()}s/{first}")
        time.sleep(1)


# ---------------------------------------------------------------- run (DNS check), version


def cmd_run(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    if not positional:
        raise Fail("error: NAME is required for run", 1)
    name = positional[0]
    command = positional[positional.index("--") + 1 :] if "--" in positional else positional[1:]
    image = session.flags.get("--image")
    if not image:
        raise Fail("error: --image is required", 1)
    if not command or command[0] != "nslookup" or len(command) != 2:
        raise Fail("lab double: kubectl run supports only `-- nslookup NAME` (a DNS check)", 1)
    admit(
        session,
        [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name},
                "spec": {"containers": [{"name": name, "image": image}]},
            }
        ],
        "STDIN",
    )
    init = session.state["init"]
    dns_ip = clustermodel.service_ip(init["serviceSubnet"], 10)
    domain = init["dnsDomain"]
    coredns_up = [
        p
        for p in pod_objects(session)
        if p["metadata"]["name"].startswith("coredns-") and p["_status"] == "Running"
    ]
    nodes_ready = [n for n in node_objects(session) if n["status"]["conditions"][0]["status"] == "True"]
    if not nodes_ready:
        raise Fail(f"error: timed out waiting for the condition (pod {name} Pending: no Ready node)")
    wanted = command[1]
    known = {
        "kubernetes": 1,
        "kubernetes.default": 1,
        "kubernetes.default.svc": 1,
        f"kubernetes.default.svc.{domain}": 1,
    }
    if not coredns_up:
        out(f"Server:    {dns_ip}\nAddress 1: {dns_ip}\n")
        out(f"nslookup: can't resolve '{wanted}'")
        out(f'pod "{name}" deleted')
        raise Fail(f"pod default/{name} terminated (Error)")
    out(f"Server:    {dns_ip}\nAddress 1: {dns_ip} kube-dns.kube-system.svc.{domain}\n")
    if wanted.rstrip(".") not in known:
        out(f"nslookup: can't resolve '{wanted}'")
        out(f'pod "{name}" deleted')
        raise Fail(f"pod default/{name} terminated (Error)")
    api_ip = clustermodel.service_ip(init["serviceSubnet"], 1)
    out(f"Name:      {wanted}\nAddress 1: {api_ip} kubernetes.default.svc.{domain}")
    if session.flags.get("--rm"):
        out(f'pod "{name}" deleted')


def cmd_version(env: Env, flags: dict[str, Any]) -> None:
    version = f"v{env.version}"
    major, minor, _ = env.version.split(".")
    client = {"major": major, "minor": minor, "gitVersion": version, "platform": "linux/amd64"}
    result: dict[str, Any] = {"clientVersion": client, "kustomizeVersion": "v4.5.7"}
    if not flags.get("--client"):
        session = Session(env, flags)
        server = session.state["init"]["kubernetesVersion"]
        result["serverVersion"] = dict(client, gitVersion=server)
    fmt = flags.get("-o") or flags.get("--output") or ""
    if fmt == "json":
        out(json.dumps(result, indent=2))
    elif fmt == "yaml":
        out(yaml.safe_dump(result, sort_keys=False).rstrip())
    else:
        out(f"Client Version: {version}")
        out("Kustomize Version: v4.5.7")
        if "serverVersion" in result:
            out(f"Server Version: {result['serverVersion']['gitVersion']}")


def cmd_cluster_info(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    out(f"Kubernetes control plane is running at {session.server}")
    out(f"CoreDNS is running at {session.server}/api/v1/namespaces/kube-system/services/kube-dns:dns/proxy")


# ---------------------------------------------------------------- cordon, uncordon, drain


def _node_record(session: Session, name: str) -> dict[str, Any]:
    for node in clustermodel.members(session.state):
        if node["name"] == name:
            return node
    raise Fail(f'Error from server (NotFound): nodes "{name}" not found')


def set_unschedulable(session: Session, name: str, value: bool) -> bool:
    """spec.unschedulable of node ``name`` (a PATCH in real kubectl); whether it changed."""
    if bool(_node_record(session, name).get("unschedulable")) == value:
        return False
    with session.env.state.update() as data:
        for node in data.get("nodes", []):
            if node["name"] == name and not node.get("reset"):
                node["unschedulable"] = value
    session.state = session.env.state.read()
    return True


def _one_node(positional: list[str], verb: str) -> str:
    if len(positional) != 1:
        raise Fail(f"error: USAGE: {verb} NODE [flags]\nSee 'kubectl {verb} -h' for help and examples", 1)
    return positional[0].split("/", 1)[-1] if positional[0].startswith(("node/", "nodes/")) else positional[0]


def cmd_cordon(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    name = _one_node(positional, "cordon")
    out(f"node/{name} {'cordoned' if set_unschedulable(session, name, True) else 'already cordoned'}")


def cmd_uncordon(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    name = _one_node(positional, "uncordon")
    out(f"node/{name} {'uncordoned' if set_unschedulable(session, name, False) else 'already uncordoned'}")


def cmd_drain(session: Session, positional: list[str], extra: dict[str, Any]) -> None:
    """kubectl drain's filters (mirror pods skipped, DaemonSet pods refused without
    --ignore-daemonsets, bare pods without --force), then each pod evicted: cordoned, the
    model places its Deployment's pods on the other nodes."""
    name = _one_node(positional, "drain")
    cordoned = set_unschedulable(session, name, True)
    out(f"node/{name} {'cordoned' if cordoned else 'already cordoned'}")
    on_node = [p for p in clustermodel.pods(session.state, session.beats) if p["node"] == name]
    daemons = [f"{p['namespace']}/{p['name']}" for p in on_node if p["owner"] == "DaemonSet"]
    bare = [f"{p['namespace']}/{p['name']}" for p in on_node if p["owner"] == "Pod"]
    problems = []
    if daemons and not session.flags.get("--ignore-daemonsets"):
        problems.append("cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): "
                        + ", ".join(daemons))
    if bare and not session.flags.get("--force"):
        problems.append("cannot delete Pods declare no controller (use --force to override): " + ", ".join(bare))
    if problems:
        joined = "; ".join(problems)
        raise Fail(f'error: unable to drain node "{name}" due to error:{joined}, continuing command...\n'
                   f"There are pending nodes to be drained:\n {name}\n{joined}")
    if daemons:
        sys.stderr.write(f"Warning: ignoring DaemonSet-managed Pods: {', '.join(daemons)}\n")
    evicted = [p for p in on_node if p["owner"] in ("Deployment", "Pod")]
    for pod in evicted:
        out(f"evicting pod {pod['namespace']}/{pod['name']}")
    now_on = {(p["namespace"], p["name"]) for p in clustermodel.pods(session.state, session.beats)
              if p["node"] == name}
    for pod in evicted:
        if (pod["namespace"], pod["name"]) in now_on and pod["owner"] == "Deployment":
            raise Fail(f"error: error when evicting pods/\"{pod['name']}\" -n \"{pod['namespace']}\" "
                       "(will retry after 5s): no other schedulable node for its replica")
        out(f"pod/{pod['name']} evicted")
    extra["drained"] = name
    out(f"node/{name} drained")


COMMANDS = {
    "cordon": cmd_cordon,
    "uncordon": cmd_uncordon,
    "drain": cmd_drain,
    "apply": cmd_apply,
    "get": cmd_get,
    "wait": cmd_wait,
    "run": cmd_run,
    "cluster-info": cmd_cluster_info,
    "delete": kubectl_nodes.cmd_delete,
}


def handle(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(argv, GLOBAL)
    if not positional:
        raise Fail("lab double: kubectl needs a command (apply, get, wait, run, version, cluster-info,"
                   " cordon, uncordon, drain, delete node)", 1)
    command, rest = positional[0], positional[1:]
    extra["command"] = command
    if command == "version":
        cmd_version(env, flags)
        return
    if command not in COMMANDS:
        raise Fail(
            f"lab double: kubectl {command} is not modelled; supported: apply, get, wait, run, version,"
            " cluster-info, cordon, uncordon, drain, delete node",
            1,
        )
    COMMANDS[command](Session(env, flags), rest, extra)

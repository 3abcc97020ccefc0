"""Phase ``verify``: the cluster works and pulled nothing from outside the site.

Checks, all read-only, each bounded: every inventory node registered and Ready; every
kube-system pod Running; DNS (a busybox pod resolving ``kubernetes.default`` through
CoreDNS, when that image is on the site); and every pod image from the local registry:
under the Harbor project, or, with ``registry: none``, present in the containerd of the
node running it (so nothing was pulled from elsewhere). Runs on every install (no marker).
"""

from __future__ import annotations

import json
import shlex
import time
from typing import Any, Callable

from kubeferry import manifests
from kubeferry.errors import OperationError
from kubeferry.installer import facts
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.image_names import site_image
from kubeferry.installer.inventory import Host, RegistrySettings
from kubeferry.installer.operations import Step
from kubeferry.installer.workflow import Phase

CERTS_DIR = "/etc/containerd/certs.d"


def _settings() -> dict[str, Any]:
    return manifests.load("verify")


def _items(ctx: InstallContext, host: Host, what: str) -> list[dict[str, Any]]:
    result = kube.kubectl(ctx.conn(host), f"get {what} -o json", timeout=60)
    try:
        return json.loads(result.stdout).get("items", [])
    except ValueError:
        raise OperationError(f"{host.name}: `kubectl get {what} -o json` printed no JSON") from None


def _wait(check: Callable[[], str], timeout: float, interval: float) -> str:
    """Call ``check`` until it returns "" (done) or the deadline passes; the last complaint."""
    deadline = time.monotonic() + timeout
    while True:
        problem = check()
        if not problem or time.monotonic() >= deadline:
            return problem
        time.sleep(interval)


def _ready(node: dict[str, Any]) -> bool:
    conditions = (node.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _nodes_ready(ctx: InstallContext, host: Host) -> int:
    wanted = [h.name for h in ctx.inventory.kubernetes_nodes]
    state: dict[str, bool] = {}

    def check() -> str:
        state.clear()
        state.update({n["metadata"]["name"]: _ready(n) for n in _items(ctx, host, "nodes")})
        missing = [name for name in wanted if name not in state]
        if missing:
            return f"not registered: {', '.join(missing)}"
        not_ready = [name for name in wanted if not state[name]]
        return f"not Ready: {', '.join(not_ready)}" if not_ready else ""

    settings = _settings()
    problem = _wait(check, settings["nodesReadyTimeout"], settings["pollInterval"])
    if problem:
        raise OperationError(f"nodes {problem} after {settings['nodesReadyTimeout']} s"
                             " (kubectl get nodes on the first control plane says why)")
    return len(wanted)


def _system_pods_running(ctx: InstallContext, host: Host) -> int:
    pods: list[dict[str, Any]] = []

    def check() -> str:
        pods[:] = _items(ctx, host, "pods -n kube-system")
        waiting = [f"{p['metadata']['name']} ({_reason(p)})" for p in pods
                   if (p.get("status") or {}).get("phase") != "Running"]
        if not pods:
            return "no kube-system pods"
        return ", ".join(waiting[:5]) + (" ..." if len(waiting) > 5 else "") if waiting else ""

    settings = _settings()
    problem = _wait(check, settings["podsRunningTimeout"], settings["pollInterval"])
    if problem:
        raise OperationError(f"kube-system pods not Running after {settings['podsRunningTimeout']} s:"
                             f" {problem}")
    return len(pods)


def _reason(pod: dict[str, Any]) -> str:
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting")
        if waiting:
            return waiting.get("reason") or "waiting"
    return status.get("phase") or "unknown"


def _image_on_site(ctx: InstallContext, host: Host, image: str) -> bool:
    """Whether the first control plane has ``image`` or can pull it from the site registry."""
    conn = ctx.conn(host)
    if image in facts.CONTAINERD_IMAGES.read(conn):
        return True
    if ctx.inventory.registry is None:
        return False
    pull = f"ctr -n k8s.io images pull --hosts-dir {CERTS_DIR} {shlex.quote(image)} >/dev/null 2>&1"
    return conn.run(pull, timeout=300, check=False).ok


def _dns(ctx: InstallContext, host: Host) -> str:
    check = _settings()["dnsCheck"]
    image = site_image(check["image"], ctx.inventory.registry)
    if not _image_on_site(ctx, host, image):
        return f"DNS lookup not checked: {image} is not on the site (push it there to check DNS)"
    name = shlex.quote(check["podName"])
    command = (f"run {name} --image {shlex.quote(image)} --rm -i --restart=Never"
               f" -- nslookup {shlex.quote(check['lookup'])}")
    result = ctx.conn(host).run(f"{kube.KUBECTL} {command}", timeout=check["timeout"] + 30, check=False)
    answer = [line for line in result.stdout.splitlines() if line.startswith(("Name:", "Address"))]
    if not result.ok or not any(line.startswith("Name:") for line in answer):
        lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
        raise OperationError(f"DNS: `nslookup {check['lookup']}` in a pod failed: "
                             f"{lines[-1] if lines else 'no output'}")
    return f"DNS resolves {check['lookup']}"


def foreign_images(pods: list[dict[str, Any]], registry: RegistrySettings | None,
                   present: Callable[[str], set[str]]) -> tuple[int, list[str]]:
    """(images in use, the ones that came from outside the site) for the pods' containers.

    With a Harbor an image must be under its project; with ``registry: none`` it must be
    in the containerd of the node running it (``present(node)``): imported, not pulled.
    """
    used: dict[str, set[str]] = {}  # image -> nodes running it
    for pod in pods:
        spec = pod.get("spec") or {}
        for container in (spec.get("containers") or []) + (spec.get("initContainers") or []):
            used.setdefault(container["image"], set()).add(spec.get("nodeName") or "")
    if registry is not None:
        return len(used), sorted(i for i in used if not i.startswith(registry.repository + "/"))
    cache: dict[str, set[str]] = {}
    foreign = []
    for image, nodes in sorted(used.items()):
        for node in sorted(n for n in nodes if n):
            if node not in cache:
                cache[node] = present(node)
            if image not in cache[node]:
                foreign.append(f"{image} on {node}")
    return len(used), foreign


def _images_local(ctx: InstallContext, host: Host) -> str:
    registry = ctx.inventory.registry
    count, foreign = foreign_images(
        _items(ctx, host, "pods -A"), registry,
        lambda node: facts.CONTAINERD_IMAGES.read(ctx.conn(ctx.inventory.host(node))))
    if registry is not None:
        if foreign:
            raise OperationError(f"{len(foreign)} image(s) not from {registry.repository}:"
                                 f" {', '.join(foreign)}")
        return f"all {count} images from {registry.repository}"
    if foreign:
        raise OperationError(f"image(s) not imported on the node that runs them: {', '.join(foreign)}")
    return f"all {count} images imported with ctr (registry: none)"


def _hosts(ctx: InstallContext) -> list[Host]:
    return [ctx.inventory.first_control_plane]


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    """The checks, read-only, each bounded; a run's result is their report, not a change."""
    return [Step("check: nodes Ready, kube-system pods Running, DNS, every image from the site",
                 run=lambda: _check(ctx, host))]


def _check(ctx: InstallContext, host: Host) -> str:
    nodes = _nodes_ready(ctx, host)
    pods = _system_pods_running(ctx, host)
    dns = _dns(ctx, host)
    images = _images_local(ctx, host)
    summary = f"{nodes} nodes Ready; {pods} kube-system pods Running; {dns}; {images}"
    ctx.log(host)(f"verify: {summary}")
    return summary


PHASE = Phase(
    name="verify",
    short="nodes Ready, kube-system Running, DNS resolving, no image from outside the site",
    hosts=_hosts,
    steps=steps,
    parallel=False,
    marker=False,
    changes=False,
)

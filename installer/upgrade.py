"""``kubeferry upgrade``: a running cluster to the bundle's release, one minor at a time.

Which release the site runs is read from the nodes before anything changes: each node's
kubelet (``kubelet --version``, as preflight reads it) and each control plane's API server
(the image tag of its static pod manifest). ``check`` then refuses, in one line, what
kubeadm's version skew policy forbids or what cannot be meant: a bundle for another OS or
architecture, an older release than the cluster's, a jump of two minors (the path to
follow is named), nodes at releases that no single upgrade explains.

The phases reuse the install's where the work is the same (distribute, images, registry,
cni: each installs only what is new, as it does for an install) and add kubeadm's own
order (kubernetes.io/docs/tasks/administer-cluster/kubeadm/kubeadm-upgrade/):

- ``repository``: the node's package source points at the new bundle's repository;
- ``control-plane``: the first control plane's kubeadm package, ``kubeadm upgrade plan``
  (which must name the target), ``kubeadm upgrade apply``; then each other control plane's
  kubeadm package and ``kubeadm upgrade node``, one at a time;
- ``kubelet``: every node, control planes one at a time, then workers ``--forks`` at a
  time: (workers: kubeadm package, ``kubeadm upgrade node``), drain, kubelet and kubectl
  (version locks moved), daemon-reload, restart kubelet, wait Ready at the new release,
  uncordon;
- ``cni`` (calico applied again: kubectl changes only what the new bundle's calico.yaml
  changes) and ``verify`` (the install's checks, and every kubelet and control-plane
  component at the new release).

Each phase's steps are computed from what the node says now (package versions, the static
pod manifests' images, the Node's version and ``spec.unschedulable``), so a run cut anywhere resumes
at the step it was on, and a finished phase leaves its marker: a re-run changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubeferry import manifests
from kubeferry.errors import InputError, KubeferryError, OperationError
from kubeferry.installer import facts, operations, versionlock
from kubeferry.installer import kube_commands as kube
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.operations import Step
from kubeferry.installer.phases import cni, containerd, distribute, images, packages, registry, verify
from kubeferry.installer.platform import data, describe, platform
from kubeferry.installer.workflow import HostGroup, Phase
from kubeferry.versions import release_in, release_key

APISERVER_MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def settings() -> dict[str, Any]:
    return manifests.load("upgrade")


# -- what the site runs --------------------------------------------------------------------------


@dataclass
class NodeRelease:
    """What one node runs, read before anything changes."""

    host: Host
    kubelet: str | None = None  # the installed kubelet's release; None: not in a cluster
    apiserver: str | None = None  # control planes: the API server's release (manifest image)
    os_release: dict[str, str] = field(default_factory=dict)
    arch: str = ""
    error: str = ""

    def releases(self) -> list[str]:
        return [r for r in (self.kubelet, self.apiserver) if r]


def _image_release(out: str) -> str | None:
    """``1.25.0`` of ``image: harbor.site/google_containers/kube-apiserver:v1.25.0`` (the tag:
    a registry address holds numbers too)."""
    if "image:" not in out:
        return None
    return release_in(out.split("image:", 1)[1].strip().rpartition(":")[2])


APISERVER_IMAGE: facts.Fact[str | None] = facts.Fact(
    "apiserver-image", f"grep -m1 -E '^ *image: ' {APISERVER_MANIFEST} 2>/dev/null || true", _image_release)


def _manifest_tags(out: str) -> dict[str, str]:
    """component -> image tag, from ``grep -H`` lines (``.../manifests/etcd.yaml:    image: REF``)."""
    tags = {}
    for line in out.splitlines():
        path, _, image = line.partition(":")
        if "image:" in image:
            component = path.rsplit("/", 1)[-1].removesuffix(".yaml")
            tags[component] = image.split("image:", 1)[1].strip().rpartition(":")[2]
    return tags


STATIC_POD_TAGS: facts.Fact[dict[str, str]] = facts.Fact(
    "static-pod-tags", "grep -H -m1 -E '^ *image: ' /etc/kubernetes/manifests/*.yaml 2>/dev/null || true",
    _manifest_tags)


def _etcd_key(tag: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", tag))


def control_plane_at_target(ctx: InstallContext, host: Host) -> bool:
    """Every static pod manifest at the bundle's release (etcd at its etcd, or newer: kubeadm
    never downgrades etcd). kubeadm rewrites etcd first: a run cut inside ``upgrade apply``
    or ``upgrade node`` leaves a manifest behind, and the command runs again."""
    tags = STATIC_POD_TAGS.read(ctx.conn(host))
    if any(tags.get(component) != _version(ctx) for component in COMPONENTS):
        return False
    etcd = tags.get("etcd")
    return etcd is None or _etcd_key(etcd) >= _etcd_key(ctx.bundle.image_set.etcd)


def _read(ctx: InstallContext, host: Host) -> NodeRelease:
    node = NodeRelease(host)
    try:
        conn = ctx.conn(host)
        node.os_release = facts.OS_RELEASE.read(conn)
        node.arch = facts.ARCH.read(conn)
        node.kubelet = facts.CLUSTER_MEMBER.read(conn)
        if host.is_control_plane:
            node.apiserver = APISERVER_IMAGE.read(conn)
    except KubeferryError as error:
        node.error = str(error)
    return node


def read_site(ctx: InstallContext) -> list[NodeRelease]:
    """Every Kubernetes node's releases and platform, read in parallel."""
    hosts = list(ctx.inventory.kubernetes_nodes)
    with ThreadPoolExecutor(max_workers=max(1, min(10, len(hosts)))) as pool:
        return list(pool.map(lambda host: _read(ctx, host), hosts))


def _minor(release: str) -> tuple[int, int]:
    return release_key(release)[:2]


def check(ctx: InstallContext, nodes: list[NodeRelease]) -> str:
    """The release the site upgrades from; InputError (one line) for an upgrade that cannot be."""
    bundle = ctx.bundle
    target = bundle.kubernetes
    unreachable = [node for node in nodes if node.error]
    if unreachable:
        raise OperationError(f"{unreachable[0].host.name}: {unreachable[0].error}")
    wanted = platform(bundle.os)
    arch = wanted.uname_arch(bundle.arch)
    for node in nodes:
        if not wanted.matches(node.os_release) or node.arch != arch:
            raise InputError(f"{bundle.path}: the bundle is for {bundle.os} {bundle.arch}, {node.host.name}"
                             f" runs {describe(node.os_release)} {node.arch}: use the bundle built for"
                             " the site's OS and architecture")
    missing = [node.host.name for node in nodes if node.kubelet is None]
    if missing:
        raise InputError(f"{', '.join(missing)}: not part of a cluster (no kubelet.conf): upgrade"
                         " works on an installed cluster; install these nodes first")
    runs: dict[str, list[str]] = {}
    for node in nodes:
        for release in node.releases():
            runs.setdefault(release, [])
            if node.host.name not in runs[release]:
                runs[release].append(node.host.name)
    newer = sorted((r for r in runs if release_key(r) > release_key(target)), key=release_key)
    if newer:
        raise InputError(f"{bundle.path}: the bundle is Kubernetes {target}, older than the cluster's"
                         f" {newer[-1]} (on {', '.join(runs[newer[-1]])}): kubeadm does not downgrade;"
                         " use a bundle of a newer release")
    older = sorted((r for r in runs if r != target), key=release_key)
    if len(older) > 1:
        spread = "; ".join(f"{r} on {', '.join(runs[r])}" for r in sorted(runs, key=release_key))
        raise InputError(f"the nodes run different releases ({spread}): bring them to one release"
                         " (upgrade with the bundle of the newest one) before this upgrade")
    source = older[0] if older else target
    (major, minor), (to_major, to_minor) = _minor(source), _minor(target)
    if major != to_major or to_minor - minor > 1:
        path = " -> ".join(f"{major}.{m}" for m in range(minor, to_minor + 1)) if major == to_major else ""
        steps = f" ({path})" if path else ""
        raise InputError(f"the cluster runs {source}, the bundle is {target}: kubeadm upgrades one minor"
                         f" release at a time; upgrade with a bundle of each minor in turn{steps},"
                         f" then this one")
    return source


# -- packages --------------------------------------------------------------------------------------


def _rows(ctx: InstallContext, host: Host, names: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = [row for row in packages.requested_rows(packages.section(ctx), host) if row["name"] in names]
    found = {row["name"] for row in rows}
    lacking = [name for name in names if name not in found]
    if lacking:
        raise InputError(f"{ctx.bundle.path}: the bundle's packages lack {', '.join(lacking)}")
    return rows


def package_steps(ctx: InstallContext, host: Host, names: tuple[str, ...]) -> list[Step]:
    """``names`` at the bundle's version from its repository, version locks moved along."""
    rows = _rows(ctx, host, names)
    specs = packages.to_install(ctx, host, rows)
    if not specs:
        return []
    target = platform(ctx.bundle.os)
    conn = ctx.conn(host)
    if not target.is_rpm:
        return [Step(f"apt-get install {' '.join(specs)} (the bundle's repository only)",
                     packages.apt_install_command(specs)),
                Step(f"apt-mark hold {' '.join(sorted(packages.locked_rows(target, rows)))}",
                     run=lambda: operations.apply(conn, packages.hold_steps(conn, rows)))]
    locked = packages.locked_rows(target, rows)
    command = packages.rpm_install_command(target, [data()["packages"]["rpm_repo_id"]], specs)
    return [*versionlock.unlock_steps(conn, target.packager, locked), Step(command, command),
            Step(f"{target.packager} versionlock add {' '.join(sorted(locked))}",
                 run=lambda: operations.apply(conn, versionlock.lock_steps(conn, target.packager, locked)))]


def repository_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """The package source pointing at the (new) bundle's repository, its keys known (EL)."""
    part = packages.section(ctx)
    conn = ctx.conn(host)
    settings_ = data()["packages"]
    if platform(ctx.bundle.os).is_rpm:
        return packages.rpm_repo_steps(ctx, conn, settings_["rpm_repo_id"], settings_["rpm_repo_file"], part)
    source = f"deb [trusted=yes] file:{packages.repo_dir(part)} ./\n"
    return operations.file(conn, settings_["apt_source_file"], "# written by kubeferry\n" + source)


# -- the control plane ------------------------------------------------------------------------------


def _version(ctx: InstallContext) -> str:
    return f"v{ctx.bundle.kubernetes}"


def _command(name: str, ctx: InstallContext) -> str:
    return settings()["commands"][name].format(version=shlex.quote(_version(ctx)))


def control_plane_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """First control plane: kubeadm package, upgrade plan, upgrade apply; the others: kubeadm
    package, upgrade node. Nothing where the API server already runs the target."""
    if control_plane_at_target(ctx, host):
        return []
    steps = package_steps(ctx, host, ("kubeadm",))
    if host.name == ctx.inventory.first_control_plane.name:
        plan = _command("plan", ctx)
        steps.append(Step(f"{plan} (it must name {_version(ctx)})", run=lambda: _plan(ctx, host)))
        steps.append(Step(_command("apply", ctx), _command("apply", ctx),
                          timeout=settings()["kubeadmApplyTimeout"]))
    else:
        steps.append(_node_step(ctx))
    return steps


def _node_step(ctx: InstallContext) -> Step:
    return Step(_command("node", ctx), _command("node", ctx), timeout=settings()["kubeadmNodeTimeout"])


def _plan(ctx: InstallContext, host: Host) -> str:
    result = operations.run(ctx.conn(host), _command("plan", ctx), timeout=300)
    target = _version(ctx)
    if not re.search(rf"kubeadm upgrade apply {re.escape(target)}\b", result.stdout):
        lines = [line.strip() for line in result.stdout.splitlines() if line.strip()]
        raise OperationError(f"{host.name}: `kubeadm upgrade plan` does not offer {target}"
                             f" (last line: {lines[-1] if lines else 'no output'})")
    return ""


# -- every node's kubelet --------------------------------------------------------------------------


def _node(ctx: InstallContext, name: str) -> dict[str, Any] | None:
    """The Node object, read on the first control plane (None when it is not registered)."""
    conn = ctx.conn(ctx.inventory.first_control_plane)
    result = conn.run(f"{kube.KUBECTL} get node {shlex.quote(name)} -o json", timeout=60, check=False)
    if not result.ok:
        return None
    try:
        found = json.loads(result.stdout)
    except ValueError:
        raise OperationError(f"`kubectl get node {name} -o json` printed no JSON") from None
    if found.get("kind") == "List":  # a kubectl that lists even one object
        found = (found.get("items") or [None])[0]
    return found


def _reported(node: dict[str, Any] | None) -> str | None:
    info = ((node or {}).get("status") or {}).get("nodeInfo") or {}
    return release_in(info.get("kubeletVersion") or "")


def _ready(node: dict[str, Any] | None) -> bool:
    conditions = ((node or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def _cordoned(node: dict[str, Any] | None) -> bool:
    return bool(((node or {}).get("spec") or {}).get("unschedulable"))


def kubelet_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """Drain, containerd's sandbox image, kubelet + kubectl, restart, Ready at the target,
    uncordon: from where it stands."""
    target = ctx.bundle.kubernetes
    node = _node(ctx, host.name)
    upgrade = package_steps(ctx, host, ("kubelet", "kubectl"))
    runtime = containerd.runtime_steps(ctx, host)
    steps: list[Step] = []
    if upgrade:
        if not host.is_control_plane:
            steps += package_steps(ctx, host, ("kubeadm",))
            steps.append(_node_step(ctx))
        steps.append(_drain(ctx, host))
        steps += runtime + upgrade
    else:
        steps += runtime  # packages moved before (by hand, or an older kubeferry): containerd still to move
    if upgrade or _reported(node) != target:
        steps.append(Step("systemctl daemon-reload && systemctl restart kubelet",
                          "systemctl daemon-reload && systemctl restart kubelet"))
    if upgrade or _reported(node) != target or not _ready(node):
        steps.append(Step(f"wait until {host.name} is Ready at v{target}",
                          run=lambda: _wait_ready(ctx, host)))
    if upgrade or _cordoned(node):
        steps.append(_kubectl_step(ctx, f"uncordon {shlex.quote(host.name)}"))
    return steps


def _drain(ctx: InstallContext, host: Host) -> Step:
    drain = settings()["drain"]
    flags = " ".join([*drain["flags"], f"--timeout={int(drain['timeout'])}s"])
    return _kubectl_step(ctx, f"drain {shlex.quote(host.name)} {flags}", timeout=drain["timeout"] + 60)


def _kubectl_step(ctx: InstallContext, args: str, timeout: float = 120) -> Step:
    """``kubectl ARGS`` on the first control plane, with the admin kubeconfig."""
    first = ctx.inventory.first_control_plane

    def run() -> str:
        kube.kubectl(ctx.conn(first), args, timeout=timeout)
        return f"kubectl {args}"

    return Step(f"kubectl {args} (on {first.name})", run=run)


def _wait_ready(ctx: InstallContext, host: Host) -> str:
    target = ctx.bundle.kubernetes
    limit, interval = settings()["nodeReadyTimeout"], settings()["pollInterval"]
    deadline = time.monotonic() + limit
    while True:
        node = _node(ctx, host.name)
        if _ready(node) and _reported(node) == target:
            return f"{host.name} Ready at v{target}"
        if time.monotonic() >= deadline:
            state = "Ready" if _ready(node) else "not Ready"
            raise OperationError(f"{host.name}: {state}, kubelet v{_reported(node) or '?'} after {limit} s"
                                 f" (wanted Ready at v{target}); `journalctl -u kubelet` there says why")
        time.sleep(interval)


def _kubelet_groups(ctx: InstallContext) -> list[HostGroup]:
    """Control planes one at a time, then workers ``--forks`` at a time: a batch with a failed
    node stops the phase (the next batch would drain more of the cluster)."""
    workers, forks = list(ctx.inventory.workers), max(1, ctx.options.drain_batch)
    return [HostGroup(ctx.inventory.control_planes, parallel=False),
            *(HostGroup(workers[i:i + forks], parallel=True) for i in range(0, len(workers), forks))]


# -- verify ------------------------------------------------------------------------------------------


def at_release(ctx: InstallContext) -> str:
    """Every node's kubelet and every control plane's components at the bundle's release."""
    target = _version(ctx)
    tags = {**{component: target for component in COMPONENTS}, "etcd": ctx.bundle.image_set.etcd}
    first = ctx.inventory.first_control_plane
    wrong: list[str] = []
    for host in ctx.inventory.kubernetes_nodes:
        reported = _reported(_node(ctx, host.name))
        if f"v{reported}" != target:
            wrong.append(f"{host.name} kubelet v{reported}")
    listing = "get pods -n kube-system -l tier=control-plane -o json"
    pods = json.loads(kube.kubectl(ctx.conn(first), listing, timeout=60).stdout).get("items", [])
    for host in ctx.inventory.control_planes:
        running = {pod["metadata"]["labels"].get("component"): pod["spec"]["containers"][0]["image"]
                   for pod in pods if (pod.get("spec") or {}).get("nodeName") == host.name}
        for component, tag in tags.items():
            image = running.get(component, "")
            if tag and (component != "etcd" or image) and not image.endswith(f":{tag}"):
                wrong.append(f"{host.name} {component} {image.rpartition(':')[2] or 'missing'}")
    if wrong:
        raise OperationError(f"not at {target}: {', '.join(wrong)}")
    return (f"{len(ctx.inventory.kubernetes_nodes)} kubelets and {len(ctx.inventory.control_planes)}"
            f" control planes at {target}")


def verify_steps(ctx: InstallContext, host: Host) -> list[Step]:
    return [*verify.steps(ctx, host),
            Step(f"check: every kubelet and control-plane component at {_version(ctx)}",
                 run=lambda: at_release(ctx))]


def _first(ctx: InstallContext) -> list[Host]:
    return [ctx.inventory.first_control_plane]


def _calico_host(ctx: InstallContext) -> list[Host]:
    """Where calico is applied again: nowhere when the bundle carries no calico.yaml (built
    without ``files``), so the cluster keeps the calico it runs."""
    try:
        cni.calico_member(ctx)
    except InputError:
        ctx.echo(f"cni: {ctx.bundle.path} carries no calico.yaml: calico stays as it runs")
        return []
    return _first(ctx)


def phases() -> list[Phase]:
    """The upgrade, phase by phase, in the order they run."""
    return [
        distribute.PHASE,
        Phase(name="repository", short="the package source points at the new bundle's repository",
              hosts=lambda ctx: ctx.inventory.hosts, steps=repository_steps),
        images.PHASE,
        registry.PHASE,
        Phase(name="control-plane",
              short="kubeadm upgrade plan/apply on the first control plane, upgrade node on the others",
              groups=lambda ctx: [HostGroup(_first(ctx), parallel=False),
                                  HostGroup(ctx.inventory.control_planes[1:], parallel=False)],
              steps=control_plane_steps),
        Phase(name="kubelet",
              short="each node: drain, containerd's pause image, kubelet + kubectl, restart, Ready, uncordon",
              groups=_kubelet_groups, steps=kubelet_steps),
        dataclasses.replace(cni.PHASE, hosts=_calico_host),
        Phase(name="upgrade-verify",
              short="the install's checks, and every kubelet and control-plane component at the release",
              hosts=_first, steps=verify_steps, parallel=False, marker=False, changes=False),
    ]


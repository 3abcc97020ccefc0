"""The kubeadm double's ``upgrade plan|apply|node``, with kubeadm 1.25's rules.

- version policy (cmd/kubeadm/app/phases/upgrade/policy.go): no downgrade, one minor at a
  time, never past kubeadm's own release (upgrade the kubeadm package first), kubelets at
  most two minors behind the target (skippable with ``--force``, as in kubeadm);
- ``apply``: the images pulled first (through containerd's registry configuration, as
  kubeadm's prepull does: missing ones fail it), then each static pod manifest rewritten
  with the target's image (etcd per the target's etcd, never downgraded), kubeadm waiting
  for the kubelet to run each and for the API server's /healthz; the cluster's recorded
  configuration (``kubeadm-config``) and its addons (kube-proxy, CoreDNS) move to the target;
- ``node``: on another control plane, its manifests rewritten to the cluster's release
  (kubeadm must not be older than the cluster); on a worker, the kubelet configuration only.
"""

from __future__ import annotations

import re
import shutil
import time
from typing import Any

import yaml
from doublelib import (
    Containerd,
    Env,
    Fail,
    kubeadm_images,
    normalize_version,
    parse_flags,
    read_text,
    write_atomic,
)
from kubeadm_double import (
    MANIFESTS,
    STACK_HINT,
    admin_guard,
    image_pull_check,
    out,
    publish_addons,
    run_checks,
    wait_for_apiserver,
    wait_for_kubelet,
)

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")  # kubeadm's order
KUBELET_SKEW = 2  # minors a kubelet may be behind the control plane (1.25's skew policy)
FLAGS = {
    "--yes": "bool",
    "-y": "bool",
    "--force": "bool",
    "-f": "bool",
    "--etcd-upgrade": "str",
    "--certificate-renewal": "str",
    "--ignore-preflight-errors": "list",
    "--kubeconfig": "str",
    "--config": "str",
    "--dry-run": "bool",
    "--v": "str",
    "--allow-experimental-upgrades": "bool",
    "--allow-release-candidate-upgrades": "bool",
}


def _key(version: str) -> tuple[int, ...]:
    """(1, 25, 4) of ``v1.25.4``; (3, 5, 6, 0) of etcd's ``3.5.6-0``."""
    return tuple(int(part) for part in re.findall(r"\d+", version))


def node_name(env: Env) -> str:
    """This node's name as kubeadm wrote it into the kubelet's flags (reset reads it the same way)."""
    flags = read_text(env.path("/var/lib/kubelet/kubeadm-flags.env")) or ""
    match = re.search(r"--hostname-override=([^\s\"]+)", flags)
    return match.group(1) if match else env.hostname


def policy_errors(env: Env, state: dict[str, Any], cluster: str, target: str) -> tuple[list[str], list[str]]:
    """(fatal, skippable) version policy violations, in kubeadm's words."""
    own = f"v{env.version}"
    fatal, skippable = [], []
    if _key(target)[:2] > _key(own)[:2]:
        fatal.append(f'Specified version to upgrade to "{target}" is at least one minor release higher than the '
                     f"kubeadm minor release ({_key(target)[1]} > {_key(own)[1]}). Such an upgrade is not supported")
    elif _key(target) > _key(own):
        skippable.append(f'Specified version to upgrade to "{target}" is higher than the kubeadm version "{own}". '
                         "Upgrade kubeadm first using the tool you used to install kubeadm")
    if _key(target)[:2] > (_key(cluster)[0], _key(cluster)[1] + 1):
        skippable.append(f'Specified version to upgrade to "{target}" is too high; kubeadm can upgrade only 1 '
                         "minor version at a time")
    if _key(target) < _key(cluster):
        skippable.append(f'Specified version to upgrade to "{target}" is lower than the cluster version '
                         f'"{cluster}". Downgrades are not supported yet')
    beats = env.state.heartbeats()
    old = sorted({beat.get("version", "") for beat in beats.values()
                  if beat.get("version") and _key(target)[1] - _key(beat["version"])[1] > KUBELET_SKEW})
    if old:
        skippable.append(f"There are kubelets in this cluster that are too old that have these versions {old}")
    return fatal, skippable


def enforce(fatal: list[str], skippable: list[str], force: bool) -> None:
    if fatal:
        raise Fail("[upgrade/version] FATAL: the --version argument is invalid due to these fatal errors:\n\n"
                   + "".join(f"- {e}\n" for e in fatal)
                   + "\nPlease fix the misalignments highlighted above and try upgrading again\n" + STACK_HINT)
    if skippable and not force:
        raise Fail("[upgrade/version] FATAL: the --version argument is invalid due to these errors:\n\n"
                   + "".join(f"- {e}\n" for e in skippable)
                   + "\nCan be bypassed if you pass the --force flag\n" + STACK_HINT)
    for error in skippable:
        out(f"[upgrade/version] Found {len(skippable)} potential version compatibility errors but skipping since"
            f" the --force flag is set:\n\n\t- {error}")


def target_images(env: Env, state: dict[str, Any], target: str) -> dict[str, str]:
    """kubeadm's images for ``target`` under the cluster's imageRepository (this kubeadm's etcd/CoreDNS)."""
    cluster = dict((state["init"].get("config") or {}).get("cluster") or {})
    cluster["kubernetesVersion"] = target
    return kubeadm_images(env, cluster)


def manifest_images(env: Env) -> dict[str, str]:
    found = {}
    for component in COMPONENTS:
        text = read_text(env.path(f"{MANIFESTS}/{component}.yaml"))
        if text:
            found[component] = yaml.safe_load(text)["spec"]["containers"][0]["image"]
    return found


def rewrite_manifests(env: Env, images: dict[str, str], etcd_upgrade: bool) -> dict[str, str]:
    """Each static pod manifest with the target's image (etcd never downgraded); what it now runs."""
    backup = env.path(f"/etc/kubernetes/tmp/kubeadm-backup-manifests-{time.strftime('%Y-%m-%d-%H-%M-%S')}")
    running = manifest_images(env)
    for component, current in running.items():
        wanted = images[component]
        if component == "etcd":
            have, want = current.rpartition(":")[2], wanted.rpartition(":")[2]
            if not etcd_upgrade or _key(want) < _key(have):
                if etcd_upgrade:
                    out(f'[upgrade/etcd] Non fatal issue encountered during upgrade: the desired etcd version "{want}"'
                        f' is older than the currently installed "{have}". Skipping etcd upgrade')
                continue
        if wanted == current:
            continue
        path = env.path(f"{MANIFESTS}/{component}.yaml")
        doc = yaml.safe_load(path.read_text())
        doc["spec"]["containers"][0]["image"] = wanted
        out(f'[upgrade/staticpods] Preparing for "{component}" upgrade')
        backup.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, backup / path.name)
        write_atomic(path, yaml.safe_dump(doc, sort_keys=False).encode(), 0o600)
        out(f'[upgrade/staticpods] Moved new manifest to "{MANIFESTS}/{component}.yaml" and backed up old manifest '
            f'to "{backup}/{path.name}"')
        out("[upgrade/staticpods] Waiting for the kubelet to restart the component")
        running[component] = wanted
    return running


def pull(env: Env, images: dict[str, str], ignored: set[str]) -> None:
    out("[upgrade/prepull] Pulling images required for setting up a Kubernetes cluster")
    runtime = Containerd(env, "")
    run_checks([("ImagePull", image_pull_check(runtime, sorted(set(images.values())), "IfNotPresent"))], ignored)


def upgrade_control_plane(env: Env, state: dict[str, Any], node: str, images: dict[str, str],
                          etcd_upgrade: bool, phase: str) -> dict[str, str]:
    """Manifests rewritten, the kubelet running them, the API server healthy again."""
    record = next((n for n in state.get("nodes", []) if n["name"] == node and not n.get("reset")), None)
    if record is None or record.get("role") != "control-plane":
        raise Fail(f"lab double: {node} is not a control plane of this cluster")
    since = time.time()
    running = rewrite_manifests(env, images, etcd_upgrade)
    wait_for_kubelet(env, node, running, since, phase)
    wait_restarted(env, node, running, since, phase)
    wait_for_apiserver(env, record["address"], int(record.get("bind_port") or 6443), phase)
    with env.state.update() as data:
        for item in data.get("nodes", []):
            if item["name"] == node:
                item["static_pods"] = running
    return running


def wait_restarted(env: Env, node: str, running: dict[str, str], since: float, phase: str) -> None:
    """Until the kubelet read the new manifests and runs each runnable pod again (kubeadm
    waits for the mirror pod's hash to change), bounded."""
    deadline = time.time() + float(env.setting("wait_timeout", 240))
    beat: dict[str, Any] = {}
    while time.time() < deadline:
        beat = env.state.heartbeats().get(node) or {}
        states = beat.get("control_plane") or {}
        if (float(beat.get("time", 0)) >= since and beat.get("static_pods") == running
                and all(state == "Running" for state in states.values())):
            return
        time.sleep(0.5)
    raise Fail(f"[upgrade/staticpods] timed out waiting for the kubelet to restart the static pods: "
               f"{beat.get('control_plane') or 'no heartbeat'}\nerror execution phase {phase}: couldn't upgrade "
               f"control plane. kubeadm has tried to recover everything into the earlier state\n{STACK_HINT}")


def _target(argv: list[str], env: Env) -> str:
    if not argv:
        return f"v{env.version}"
    try:
        _key(argv[0])[2]
    except IndexError:
        raise Fail(f'couldn\'t parse version "{argv[0]}"\n{STACK_HINT}') from None
    return normalize_version(argv[0])


def cmd_plan(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(argv, FLAGS)
    state = admin_guard(env, flags)
    cluster = normalize_version(state["init"]["kubernetesVersion"])
    target = _target(positional, env)
    extra["command"] = "upgrade plan"
    out("[upgrade/config] Making sure the configuration is correct:")
    out("[upgrade/config] Reading configuration from the cluster...")
    out("[preflight] Running pre-flight checks.")
    out("[upgrade] Running cluster health checks")
    out("[upgrade] Fetching available versions to upgrade to")
    out(f"[upgrade/versions] Cluster version: {cluster}")
    out(f"[upgrade/versions] kubeadm version: v{env.version}")
    out(f"[upgrade/versions] Target version: {target}")
    if _key(target) <= _key(cluster):
        out("\nAwesome, you're up-to-date! Enjoy!")
        return
    images = target_images(env, state, target)
    current = state["init"]["images"]
    kubelets = {}
    for beat in env.state.heartbeats().values():
        kubelets[beat.get("version", "?")] = kubelets.get(beat.get("version", "?"), 0) + 1
    out("\nComponents that must be upgraded manually after you have upgraded the control plane with "
        "'kubeadm upgrade apply':")
    out("COMPONENT   CURRENT       TARGET")
    for version, count in sorted(kubelets.items()):
        out(f"kubelet     {count} x {version}   {target}")
    out(f"\nUpgrade to the latest version in the v{_key(target)[0]}.{_key(target)[1]} series:\n")
    out("COMPONENT                 CURRENT   TARGET")
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy"):
        out(f"{component:<26}{cluster:<10}{target}")
    tag = lambda image: image.rpartition(":")[2]  # noqa: E731
    out(f"{'CoreDNS':<26}{tag(current['coredns']):<10}{tag(images['coredns'])}")
    if "etcd" in images:
        out(f"{'etcd':<26}{tag(current.get('etcd', '')):<10}{tag(images['etcd'])}")
    out("\nYou can now apply the upgrade by executing the following command:\n")
    out(f"\tkubeadm upgrade apply {target}\n")
    if _key(target) > _key(f"v{env.version}"):
        out(f"Note: Before you can perform this upgrade, you have to update kubeadm to {target}.\n")
    out("_" * 69)


def cmd_apply(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(argv, FLAGS)
    if not positional:
        raise Fail(f"missing one or more required arguments. Required arguments: [version]\n{STACK_HINT}")
    state = admin_guard(env, flags)
    node = node_name(env)
    extra.update(command="upgrade apply", node_name=node)
    cluster = normalize_version(state["init"]["kubernetesVersion"])
    target = _target(positional, env)
    out("[upgrade/config] Making sure the configuration is correct:")
    out("[upgrade/config] Reading configuration from the cluster...")
    out("[preflight] Running pre-flight checks.")
    out("[upgrade] Running cluster health checks")
    out(f'[upgrade/version] You have chosen to change the cluster version to "{target}"')
    out(f"[upgrade/versions] Cluster version: {cluster}")
    out(f"[upgrade/versions] kubeadm version: v{env.version}")
    force = bool(flags.get("--force") or flags.get("-f"))
    enforce(*policy_errors(env, state, cluster, target), force)
    if not (flags.get("--yes") or flags.get("-y") or force):
        raise Fail("lab double: kubeadm upgrade apply asks for confirmation: pass --yes", 1)
    images = target_images(env, state, target)
    pull(env, images, set(flags.get("--ignore-preflight-errors") or []))
    out(f'[upgrade/apply] Upgrading your Static Pod-hosted control plane to version "{target}" (timeout: 5m0s)...')
    etcd_upgrade = str(flags.get("--etcd-upgrade", "true")).lower() != "false"
    running = upgrade_control_plane(env, state, node, images, etcd_upgrade, "upgrade/apply")
    out('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace')
    with env.state.update() as data:
        init = data["init"]
        init["kubernetesVersion"] = target
        init["images"] = {**images, **({"etcd": running["etcd"]} if "etcd" in running else {})}
        ((init.get("config") or {}).get("cluster") or {})["kubernetesVersion"] = target
        init.setdefault("upgrades", []).append({"from": cluster, "to": target, "node": node, "time": time.time()})
    out('[kubelet] Creating a ConfigMap "kubelet-config" in namespace kube-system with the configuration for the '
        "kubelets in the cluster")
    problem = publish_addons(env)
    if problem:
        raise Fail(f"[upgrade/postupgrade] FATAL post-upgrade error: unable to update the addons: {problem}")
    if state["init"].get("addons", {}).get("coredns", True):
        out("[addons] Applied essential addon: CoreDNS")
    if state["init"].get("addons", {}).get("kube-proxy", True):
        out("[addons] Applied essential addon: kube-proxy")
    out(f'\n[upgrade/successful] SUCCESS! Your cluster was upgraded to "{target}". Enjoy!\n')
    out("[upgrade/kubelet] Now that your control plane is upgraded, please proceed with upgrading your kubelets "
        "if you haven't already done so.")


def cmd_node(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(argv, FLAGS)
    if positional:
        raise Fail(f'unknown command "{positional[0]}" for "kubeadm upgrade node"', 2)
    conf = env.path("/etc/kubernetes/kubelet.conf")
    if not conf.exists():
        raise Fail(f"open /etc/kubernetes/kubelet.conf: no such file or directory\n{STACK_HINT}")
    state = env.state.read()
    if not state.get("init"):
        raise Fail("lab double: the cluster has no API server (not initialised)")
    node = node_name(env)
    extra.update(command="upgrade node", node_name=node)
    cluster = normalize_version(state["init"]["kubernetesVersion"])
    out("[upgrade] Reading configuration from the cluster...")
    out("[upgrade] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    if _key(f"v{env.version}")[:3] < _key(cluster)[:3]:
        raise Fail(f'[upgrade] the kubeadm version "v{env.version}" is lower than the cluster version "{cluster}": '
                   f"upgrade kubeadm first using the tool you used to install kubeadm\n{STACK_HINT}")
    record = next((n for n in state.get("nodes", []) if n["name"] == node and not n.get("reset")), {})
    if record.get("role") == "control-plane" and env.path(f"{MANIFESTS}/kube-apiserver.yaml").exists():
        out("[preflight] Running pre-flight checks")
        images = state["init"]["images"]
        pull(env, images, set(flags.get("--ignore-preflight-errors") or []))
        out(f'[upgrade] Upgrading your Static Pod-hosted control plane instance to version "{cluster}"...')
        etcd_upgrade = str(flags.get("--etcd-upgrade", "true")).lower() != "false"
        upgrade_control_plane(env, state, node, images, etcd_upgrade, "control-plane")
    else:
        out("[preflight] Skipping prepull. Not a control plane node.")
        out("[upgrade] Skipping phase. Not a control plane node.")
    out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    out("[upgrade] The configuration for this node was successfully updated!")
    out("[upgrade] Now you should go ahead and upgrade the kubelet package using your package manager.")


COMMANDS = {"plan": cmd_plan, "apply": cmd_apply, "node": cmd_node}


def handle(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if not argv or argv[0] not in COMMANDS:
        raise Fail(f"lab double: kubeadm upgrade {argv[0] if argv else ''} is not modelled; "
                   "supported: plan, apply, node", 2)
    COMMANDS[argv[0]](env, argv[1:], extra)

"""What the doubles' cluster runs: nodes, pods and their status, derived from the shared state.

kubeadm records nodes and addons; the workloads (DaemonSets, Deployments, bare Pods) are
what the API server stand-in stores, read by each kubelet double into ``state["objects"]``
(kubelet_pods.workloads); each kubelet double writes a heartbeat (images present in its
containerd, pull errors, static pods). Every kubelet double uses these functions, so they
agree on which pod lands on which node (the model is also the scheduler).
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

HEARTBEAT_STALE = 20.0  # seconds without a heartbeat before a node is NotReady


def _suffix(*parts: str, length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"  # the alphabet Kubernetes uses for generated names
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def nodes(state: dict[str, Any]) -> list[dict[str, Any]]:
    """Registered nodes in join order (the init node first)."""
    return sorted(state.get("nodes", []), key=lambda n: n["order"])


def members(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The registered nodes (until ``kubectl delete node``: as in a real cluster, a node that
    ran ``kubeadm reset`` keeps its Node object, NotReady), in join order."""
    return [n for n in nodes(state) if not n.get("deleted")]


def schedulable(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The members new pods may land on: not cordoned (``kubectl cordon``/``drain``); all of
    them when every one is cordoned (the pods are then Pending in a real cluster)."""
    in_cluster = members(state)
    return [n for n in in_cluster if not n.get("unschedulable")] or in_cluster


def workloads(state: dict[str, Any]) -> list[dict[str, Any]]:
    """kube-system addons kubeadm installed plus every stored DaemonSet/Deployment/Pod."""
    result: list[dict[str, Any]] = []
    init = state.get("init")
    stored = state.get("objects", {})
    if init and not {"DaemonSet/kube-system/kube-proxy", "Deployment/kube-system/coredns"} & set(stored):
        # kubeadm's addons until the kubelet has read them from the API (kubeadm_addons.py)
        addons = init.get("addons", {})
        images = init.get("images", {})
        if addons.get("kube-proxy", True):
            result.append(
                {
                    "kind": "DaemonSet",
                    "namespace": "kube-system",
                    "name": "kube-proxy",
                    "containers": [{"name": "kube-proxy", "image": images["kube-proxy"]}],
                    "hostNetwork": True,
                    "replicas": 0,
                    "labels": {"k8s-app": "kube-proxy"},
                }
            )
        if addons.get("coredns", True):
            result.append(
                {
                    "kind": "Deployment",
                    "namespace": "kube-system",
                    "name": "coredns",
                    "containers": [{"name": "coredns", "image": images["coredns"]}],
                    "hostNetwork": False,
                    "replicas": 2,
                    "labels": {"k8s-app": "kube-dns"},
                }
            )
    for key in sorted(state.get("objects", {})):
        obj = state["objects"][key]
        if obj["kind"] in ("DaemonSet", "Deployment", "Pod") and obj.get("containers"):
            result.append(obj)
    return result


def pods(state: dict[str, Any], beats: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pod the cluster would run, each with the node it is on (no status yet)."""
    in_cluster = members(state)
    placeable = schedulable(state)
    result: list[dict[str, Any]] = []
    for node in in_cluster:
        static = (beats.get(node["name"]) or {}).get("static_pods")
        if static is None:
            static = node.get("static_pods", {})
        for component in sorted(static):
            result.append(
                {
                    "namespace": "kube-system",
                    "name": f"{component}-{node['name']}",
                    "node": node["name"],
                    "containers": [{"name": component, "image": static[component]}],
                    "hostNetwork": True,
                    "owner": "Node",
                    "owner_name": node["name"],
                    "labels": {"component": component, "tier": "control-plane"},
                }
            )
    for load in workloads(state):
        base = {
            "namespace": load["namespace"],
            "containers": load["containers"],
            "hostNetwork": bool(load.get("hostNetwork")),
            "owner": load["kind"],
            "owner_name": load["name"],
            "owner_uid": load.get("uid") or "",
            "labels": dict(load.get("labels") or {}),
        }
        if load["kind"] == "DaemonSet":
            for node in in_cluster:
                name = f"{load['name']}-{_suffix(load['name'], node['name'])}"
                result.append(dict(base, name=name, node=node["name"]))
        elif load["kind"] == "Deployment" and in_cluster:
            template = _suffix(load["name"], *[c["image"] for c in load["containers"]], length=10)
            for i in range(int(load.get("replicas", 1))):
                node = placeable[i % len(placeable)]
                name = f"{load['name']}-{template}-{_suffix(load['name'], str(i))}"
                result.append(dict(base, name=name, node=node["name"], owner="ReplicaSet",
                                   owner_name=f"{load['name']}-{template}"))
        elif load["kind"] == "Pod" and in_cluster:
            bound = ((load.get("object") or {}).get("spec") or {}).get("nodeName")
            result.append(dict(base, name=load["name"], node=bound or placeable[0]["name"],
                               object=load.get("object")))
    return result


def is_fresh(beat: dict[str, Any] | None, now: float) -> bool:
    return bool(beat) and now - float(beat.get("time", 0)) < HEARTBEAT_STALE


def cni_ready(state: dict[str, Any], beats: dict[str, dict[str, Any]], node: str, now: float) -> bool:
    """Calico is applied and its calico-node pod on ``node`` has all its images."""
    if "DaemonSet/kube-system/calico-node" not in state.get("objects", {}):
        return False
    beat = beats.get(node)
    if not is_fresh(beat, now) or not beat.get("sandbox_ok"):
        return False
    calico = state["objects"]["DaemonSet/kube-system/calico-node"]
    present = set(beat.get("images", []))
    return all(c["image"] in present for c in calico["containers"])


def pod_status(
    pod: dict[str, Any], state: dict[str, Any], beats: dict[str, dict[str, Any]], now: float
) -> tuple[str, str]:
    """(phase as kubectl shows STATUS, reason) of one pod, like a real node would report it."""
    beat = beats.get(pod["node"])
    if not beat:
        return "Pending", "the node's kubelet has not reported yet"
    if not is_fresh(beat, now):
        return "Unknown", "the node's kubelet stopped reporting"
    if not beat.get("sandbox_ok"):
        return "ContainerCreating", f"sandbox image {beat.get('sandbox_image')} not available"
    if not pod["hostNetwork"] and not cni_ready(state, beats, pod["node"], now):
        return "Pending", "network plugin not ready: cni config uninitialized"
    present = set(beat.get("images", []))
    errors = beat.get("pull_errors", {})
    for container in pod["containers"]:
        if container["image"] not in present:
            if container["image"] in errors:
                return "ErrImagePull", errors[container["image"]]
            return "ContainerCreating", f"pulling image {container['image']}"
    return "Running", ""


def node_ready(
    state: dict[str, Any], beats: dict[str, dict[str, Any]], node: str, now: float
) -> tuple[bool, str]:
    beat = beats.get(node)
    if not is_fresh(beat, now):
        return False, "Kubelet stopped posting node status."
    if not cni_ready(state, beats, node, now):
        return (
            False,
            "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady",
        )
    return True, "kubelet is posting ready status"


def node_object(state: dict[str, Any], beats: dict[str, dict[str, Any]], node: dict[str, Any],
                now: float) -> dict[str, Any]:
    """The v1 Node of a registered node, as its kubelet reports it."""
    ready, message = node_ready(state, beats, node["name"], now)
    beat = beats.get(node["name"]) or {}
    labels = {"kubernetes.io/hostname": node["name"], "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
    if node["role"] == "control-plane":
        labels["node-role.kubernetes.io/control-plane"] = ""
    spec: dict[str, Any] = {}
    if node.get("unschedulable"):
        spec = {"unschedulable": True,
                "taints": [{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": node["name"], "labels": labels,
                     "creationTimestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(node["joined"]))},
        "spec": spec,
        "status": {
            "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                            "reason": "KubeletReady" if ready else "KubeletNotReady", "message": message}],
            "addresses": [{"type": "InternalIP", "address": node.get("address") or ""},
                          {"type": "Hostname", "address": node["name"]}],
            "nodeInfo": {"kubeletVersion": beat.get("version", ""), "containerRuntimeVersion": "containerd://1.6",
                         "kubeProxyVersion": beat.get("version", "")},
            "images": [{"names": [i]} for i in beat.get("images", [])],
        },
    }


def pod_object(pod: dict[str, Any], state: dict[str, Any], beats: dict[str, dict[str, Any]],
               now: float) -> tuple[dict[str, Any], str]:
    """The v1 Pod of one modelled pod and its status word (Running, Pending, ErrImagePull, ...)."""
    status, reason = pod_status(pod, state, beats, now)
    running = status == "Running"
    phase = {"Running": "Running", "Unknown": "Unknown"}.get(status, "Pending")
    obj = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": pod["name"], "namespace": pod["namespace"], "labels": pod["labels"],
                     **owner_metadata(pod)},
        "spec": {"nodeName": pod["node"], "hostNetwork": pod["hostNetwork"],
                 "containers": [{"name": c["name"], "image": c["image"]} for c in pod["containers"]]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if running else "False"}],
            "containerStatuses": [
                {"name": c["name"], "image": c["image"], "ready": running, "restartCount": 0,
                 "state": {"running": {}} if running else {"waiting": {"reason": status, "message": reason}}}
                for c in pod["containers"]],
        },
    }
    return obj, status


def owner_metadata(pod: dict[str, Any]) -> dict[str, Any]:
    """ownerReferences (and a mirror pod's annotations) as the real controllers / kubelet set them."""
    owner = pod.get("owner")
    if owner not in ("Node", "DaemonSet", "ReplicaSet"):
        return {}
    name = pod.get("owner_name", "")
    uid = pod.get("owner_uid") or "-".join(_suffix(owner, name, str(i), length=8) for i in range(2))
    reference = {"apiVersion": "v1" if owner == "Node" else "apps/v1", "kind": owner, "name": name,
                 "uid": uid, "controller": True}
    meta: dict[str, Any] = {"ownerReferences": [reference]}
    if owner == "Node":
        digest = hashlib.sha256(repr(pod["containers"]).encode()).hexdigest()[:32]
        meta["annotations"] = {"kubernetes.io/config.mirror": digest, "kubernetes.io/config.source": "file"}
    return meta


def service_ip(subnet: str, index: int) -> str:
    import ipaddress

    network = ipaddress.ip_network(subnet.split(",")[0], strict=False)
    return str(network.network_address + index)

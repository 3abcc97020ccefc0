"""kubeadm's essential addons as API objects: the kube-proxy DaemonSet and the CoreDNS Deployment.

kubeadm's addon phase (init, and ``upgrade apply`` moving them to the target's images)
creates or updates them through admin.conf (``apiclient.CreateOrUpdateDaemonSet`` /
``CreateOrUpdateDeployment``). Clients find them there: real kubectl's drain looks up the
DaemonSet a pod's ownerReference names before it ignores the pod, and fails when it is
missing. Only what the lab's clients read is written (names, labels, selector, images,
hostNetwork, replicas); clustermodel places their pods from the stored objects.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from apiclient import ApiClient, ApiUnavailable

NAMESPACE = "kube-system"
DAEMONSETS = f"/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments"


def _workload(kind: str, name: str, app: str, container: str, image: str, host_network: bool,
              replicas: int | None) -> dict[str, Any]:
    pod_spec: dict[str, Any] = {"containers": [{"name": container, "image": image}],
                                "priorityClassName": "system-node-critical"}
    if host_network:
        pod_spec["hostNetwork"] = True
    spec: dict[str, Any] = {"selector": {"matchLabels": {"k8s-app": app}},
                            "template": {"metadata": {"labels": {"k8s-app": app}}, "spec": pod_spec}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": kind,
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"k8s-app": app}}, "spec": spec}


def objects(init: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(collection, object) of each addon the recorded init installed, at its recorded images."""
    addons, images = init.get("addons", {}), init.get("images", {})
    result = []
    if addons.get("kube-proxy", True):
        result.append((DAEMONSETS, _workload("DaemonSet", "kube-proxy", "kube-proxy", "kube-proxy",
                                             images["kube-proxy"], True, None)))
    if addons.get("coredns", True):
        result.append((DEPLOYMENTS, _workload("Deployment", "coredns", "kube-dns", "coredns",
                                              images["coredns"], False, 2)))
    return result


def publish(admin_conf: Path, credentials: Path, init: dict[str, Any]) -> str:
    """Create or update the addons in the API; "" or why it failed."""
    try:
        client = ApiClient(admin_conf, credentials)
        for collection, obj in objects(init):
            code = client.upsert(collection, obj)
            if code >= 300:
                return f"{obj['kind']} {obj['metadata']['name']}: HTTP {code}"
    except (ApiUnavailable, OSError, KeyError, ValueError) as error:
        return str(error)
    return ""

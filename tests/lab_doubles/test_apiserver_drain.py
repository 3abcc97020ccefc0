"""Real kubectl's cordon, drain and uncordon against the API server stand-in: the Node's
spec.unschedulable PATCHed, the node's pods listed by fieldSelector, each evicted through the
pods/eviction subresource (policy/v1), DaemonSet pods left alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_apiserver import Cluster, cluster  # noqa: F401 - the module's API server, etcd and kubectl

OBJECTS = [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "w9"}},
    {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent", "namespace": "default"},
     "spec": {"selector": {"matchLabels": {"app": "agent"}},
              "template": {"metadata": {"labels": {"app": "agent"}},
                           "spec": {"containers": [{"name": "a", "image": "example/agent:1"}]}}}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "agent-w9", "namespace": "default", "labels": {"app": "agent"},
                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "agent",
                                       "uid": "00000000-0000-0000-0000-000000000001", "controller": True}]},
     "spec": {"nodeName": "w9", "containers": [{"name": "a", "image": "example/agent:1"}]}},
    {"apiVersion": "v1", "kind": "Pod",
     "metadata": {"name": "web-w9", "namespace": "default",
                  "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d4f",
                                       "uid": "00000000-0000-0000-0000-000000000002", "controller": True}]},
     "spec": {"nodeName": "w9", "containers": [{"name": "w", "image": "example/web:1"}]}},
]


@pytest.mark.parametrize("minor", ["1.26"])
def test_real_kubectl_drains_a_node(cluster: Cluster, minor: str, tmp_path: Path) -> None:  # noqa: F811
    manifest = tmp_path / "objects.yaml"
    manifest.write_text(yaml.safe_dump_all(OBJECTS))
    created = cluster.kubectl(minor, "create", "-f", str(manifest))
    assert created.returncode == 0, created.stderr

    drained = cluster.kubectl(minor, "drain", "w9", "--ignore-daemonsets", "--delete-emptydir-data",
                              "--timeout=60s")
    assert drained.returncode == 0, drained.stderr
    assert "node/w9 cordoned" in drained.stdout and "node/w9 drained" in drained.stdout
    assert "evicting pod default/web-w9" in drained.stderr + drained.stdout
    assert "ignoring DaemonSet-managed Pods: default/agent-w9" in drained.stderr
    node = json.loads(cluster.kubectl(minor, "get", "node", "w9", "-o", "json").stdout)
    assert node["spec"]["unschedulable"] is True
    pods = cluster.kubectl(minor, "get", "pods", "-o", "name").stdout.split()
    assert pods == ["pod/agent-w9"]

    uncordoned = cluster.kubectl(minor, "uncordon", "w9")
    assert uncordoned.returncode == 0 and "node/w9 uncordoned" in uncordoned.stdout, uncordoned.stderr
    node = json.loads(cluster.kubectl(minor, "get", "node", "w9", "-o", "json").stdout)
    assert not node["spec"].get("unschedulable")

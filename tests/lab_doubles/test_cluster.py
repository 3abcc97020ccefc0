"""A whole cluster on the doubles: HA init, control-plane and worker joins, calico, verify.

Every node's kubelet double runs the control plane (real etcd, the API server stand-in), and
``kubectl`` is the stand-in kubectl package's program: the real, official kubectl."""

from __future__ import annotations

import json
import time

from doubles_configs import CERT_KEY, calico, dump, init_docs, join_docs
from doubles_harness import ENDPOINT, Lab, Node, api_node


def kubectl(node: Node, *args: str, stdin: str | None = None):
    return node.run(
        "kubectl", "--kubeconfig", str(node.root / "etc/kubernetes/admin.conf"), *args, stdin=stdin
    )


def init_cluster(lab: Lab, control_plane: bool = True) -> Node:
    """cp1 initialised; with ``control_plane`` its kubelet double runs etcd and the API server."""
    cp1 = api_node(lab, "cp1", kubelet_port=10252) if control_plane else lab.node("cp1")
    cp1.start_kubelet()
    result = cp1.run(
        "kubeadm", "init", "--config", cp1.config("init.yaml", dump(init_docs(endpoint=ENDPOINT))), "--upload-certs"
    )
    assert result.returncode == 0, result.stderr
    return cp1


def test_ha_cluster_from_init_to_verify(lab: Lab) -> None:
    cp1 = init_cluster(lab)
    init = lab.record.init_config()
    assert init["podSubnet"] == "10.244.0.0/16" and init["controlPlaneEndpoint"] == ENDPOINT
    assert init["images"]["coredns"] == "127.0.0.1:5000/google_containers/coredns:v1.9.3"
    assert lab.record.certificate_key()["key"] == CERT_KEY
    admin = (cp1.root / "etc/kubernetes/admin.conf").read_text()
    assert f"server: https://{ENDPOINT}" in admin and "client-key-data" in admin
    assert (cp1.root / "etc/kubernetes/admin.conf").stat().st_mode & 0o777 == 0o600
    manifest = (cp1.root / "etc/kubernetes/manifests/kube-apiserver.yaml").read_text()
    assert "image: 127.0.0.1:5000/google_containers/kube-apiserver:v1.25.0" in manifest
    assert "cgroupDriver: systemd" in (cp1.root / "var/lib/kubelet/config.yaml").read_text()

    token = lab.record.tokens()[0]["token"]

    created = cp1.run("kubeadm", "token", "create", "--print-join-command")
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(f"kubeadm join {ENDPOINT} --token ")
    worker = api_node(lab, "w1", kubelet_port=10251)
    worker.start_kubelet()
    joined = worker.run("kubeadm", "join", *created.stdout.split()[2:])
    assert joined.returncode == 0, joined.stderr
    assert lab.record.join_order() == [("cp1", "control-plane"), ("w1", "worker")]

    deadline = time.time() + 30
    nodes: list = []
    while time.time() < deadline and len(nodes) < 2:
        time.sleep(1)
        nodes = json.loads(kubectl(cp1, "get", "nodes", "-o", "json").stdout)["items"]
    assert [n["metadata"]["name"] for n in nodes] == ["cp1", "w1"]
    assert all(n["status"]["conditions"][0]["status"] == "False" for n in nodes), (
        "NotReady until the CNI is up"
    )

    applied = kubectl(cp1, "apply", "-f", "-", stdin=calico("10.244.0.0/16"))
    assert applied.returncode == 0, applied.stderr
    assert "daemonset.apps/calico-node created" in applied.stdout
    again = kubectl(cp1, "apply", "-f", "-", stdin=calico("10.244.0.0/16"))
    # as on a real cluster: a PodDisruptionBudget's selector (patch strategy "replace") is
    # patched on every apply, so kubectl says "configured" though nothing differs
    changed = [line for line in again.stdout.splitlines() if not line.endswith(" unchanged")]
    assert changed == ["poddisruptionbudget.policy/calico-kube-controllers configured"], again.stdout
    stored = json.loads(kubectl(cp1, "get", "daemonset", "calico-node", "-n", "kube-system", "-o", "json").stdout)
    env = {e["name"]: e.get("value") for e in stored["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["CALICO_IPV4POOL_CIDR"] == "10.244.0.0/16"

    waited = kubectl(cp1, "wait", "--for=condition=Ready", "nodes", "--all", "--timeout=90s")
    assert waited.returncode == 0, waited.stderr
    waited = kubectl(
        cp1, "wait", "--for=condition=Ready", "pods", "--all", "-n", "kube-system", "--timeout=60s"
    )
    assert waited.returncode == 0, waited.stderr
    pods = json.loads(kubectl(cp1, "get", "pods", "-A", "-o", "json").stdout)["items"]
    names = sorted(p["metadata"]["name"].rsplit("-", 1)[0] for p in pods)
    assert names.count("calico-node") == 2 and names.count("kube-proxy") == 2
    assert len([p for p in pods if p["metadata"]["name"].startswith("coredns-")]) == 2
    for static in ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        assert f"{static}-cp1" in {p["metadata"]["name"] for p in pods}
    images = {c["image"] for p in pods for c in p["spec"]["containers"]}
    assert images and all(i.startswith("127.0.0.1:5000/") for i in images)
    assert all(p["status"]["phase"] == "Running" for p in pods)
    dns_pods = kubectl(
        cp1,
        "wait",
        "--for=condition=Ready",
        "pods",
        "-l",
        "k8s-app=kube-dns",
        "-n",
        "kube-system",
        "--timeout=30s",
    )
    assert dns_pods.returncode == 0 and len(dns_pods.stdout.splitlines()) == 2, dns_pods.stdout
    calico_pods = kubectl(cp1, "get", "pods", "-A", "-l", "k8s-app=calico-node", "-o", "name").stdout.split()
    assert len(calico_pods) == 2 and all(p.startswith("pod/calico-node-") for p in calico_pods)
    table = kubectl(cp1, "get", "nodes").stdout
    assert table.splitlines()[1].split()[:2] == ["cp1", "Ready"]

    dns = kubectl(
        cp1,
        "run",
        "dnscheck",
        "--image",
        "127.0.0.1:5000/library/busybox:1.28",
        "--rm",
        "-i",
        "--restart=Never",
        "--",
        "nslookup",
        "kubernetes.default",
    )
    assert dns.returncode == 0, dns.stderr
    assert "Address 1: 10.96.0.1 kubernetes.default.svc.cluster.local" in dns.stdout
    assert 'pod "dnscheck" deleted' in dns.stdout
    assert "dnscheck" not in kubectl(cp1, "get", "pods", "-o", "name").stdout
    unknown = kubectl(cp1, "run", "dnscheck", "--image", "127.0.0.1:5000/library/busybox:1.28", "--rm", "-i",
                      "--restart=Never", "--", "nslookup", "nosuch.default")
    assert unknown.returncode == 1 and "nslookup: can't resolve 'nosuch.default'" in unknown.stdout
    assert "pod default/dnscheck terminated (Error)" in unknown.stderr
    outside = kubectl(cp1, "run", "dnscheck", "--image", "docker.io/library/busybox:1.28", "--rm", "-i",
                      "--restart=Never", "--pod-running-timeout=8s", "--", "nslookup", "kubernetes.default")
    assert outside.returncode == 1 and "timed out waiting for the condition" in outside.stderr, outside.stderr

    calls = lab.record.invocations(program="kubeadm")
    assert [(c["node"], c["argv"][1], c["exit_code"]) for c in calls] == [
        ("cp1", "init", 0),
        ("cp1", "token", 0),
        ("w1", "join", 0),
    ]
    flag_join = calls[-1]
    assert flag_join["secret_flags"] == ["--token"], "the printed join command puts the token on argv"
    assert token not in json.dumps(lab.record.invocations())
    assert calls[0]["secret_flags"] == []
    beats = lab.record.heartbeats()
    assert set(beats) == {"cp1", "w1"} and all(b["sandbox_ok"] for b in beats.values())


def test_join_before_init_fails(lab: Lab) -> None:
    worker = lab.node("w1")
    docs = join_docs("w1", "abcdef.0123456789abcdef", "sha256:" + "0" * 64)
    result = worker.run("kubeadm", "join", "--config", worker.config("join.yaml", dump(docs)))
    assert result.returncode == 1
    assert "couldn't validate the identity of the API Server" in result.stderr
    assert "dial tcp cp.lab.test:6443: connect: connection refused" in result.stderr
    assert lab.record.nodes() == []
    assert lab.record.invocations()[-1]["exit_code"] == 1


def test_discovery_validates_the_api_server_over_the_network(lab: Lab) -> None:
    """kubeadm join fetches cluster-info from the endpoint: JWS signed with the token, CA pinned,
    the serving certificate checked against the endpoint; each fault fails as kubeadm fails."""
    cp1 = init_cluster(lab)
    init = lab.record.init_config()
    worker = api_node(lab, "w1", kubelet_port=10251)
    token = lab.record.tokens()[0]["token"]

    def join(name: str, token: str = token, ca_hash: str = init["ca_hash"], endpoint: str = ENDPOINT):
        docs = join_docs("w1", token, ca_hash, endpoint=endpoint)
        return worker.run("kubeadm", "join", "--config", worker.config(name, dump(docs)))

    identity = "couldn't validate the identity of the API Server: "
    unknown = join("a.yaml", token="abcdef.0123456789abcdef")
    assert unknown.returncode == 1
    assert identity + 'could not find a JWS signature in the cluster-info ConfigMap for token ID "abcdef"' \
        in unknown.stderr
    forged = join("b.yaml", token=token.split(".")[0] + ".0123456789abcdef")
    assert forged.returncode == 1 and "failed to verify JWS signature of received cluster info object" \
        in forged.stderr
    wrong_hash = join("c.yaml", ca_hash="sha256:" + "1" * 64)
    assert wrong_hash.returncode == 1 and "cluster CA found in cluster-info ConfigMap is invalid: none of the" \
        f' public keys "{init["ca_hash"]}" are pinned' in wrong_hash.stderr
    malformed = join("d.yaml", token="not-a-token")
    assert malformed.returncode == 1 and "the bootstrap token is invalid" in malformed.stderr
    nobody = join("e.yaml", endpoint="127.0.0.11:6449")
    assert nobody.returncode == 1 and "dial tcp 127.0.0.11:6449: connect: connection refused" in nobody.stderr
    # the API server answers on every address (0.0.0.0:6443), but its certificate names only
    # kubeadm's SANs: 127.0.0.1 is not one of them
    no_san = join("f.yaml", endpoint="127.0.0.1:6443")
    assert no_san.returncode == 1 and "x509: certificate is valid for " in no_san.stderr
    assert ", not 127.0.0.1" in no_san.stderr and "127.0.0.11" in no_san.stderr
    short = cp1.run("kubeadm", "token", "create", "--ttl", "1s")
    assert short.returncode == 0, short.stderr
    time.sleep(2)
    expired = join("g.yaml", token=short.stdout.strip())
    assert expired.returncode == 1 and "could not find a JWS signature" in expired.stderr
    deleted = cp1.run("kubeadm", "token", "delete", token)
    assert deleted.returncode == 0, deleted.stderr
    gone = join("h.yaml")
    assert gone.returncode == 1 and "could not find a JWS signature" in gone.stderr
    assert [n["name"] for n in lab.record.nodes()] == ["cp1"]
    info = json.loads(kubectl(cp1, "get", "configmap", "cluster-info", "-n", "kube-public", "-o", "json").stdout)
    assert f"server: https://{ENDPOINT}" in info["data"]["kubeconfig"]
    fresh = cp1.run("kubeadm", "token", "create")
    worker.start_kubelet()
    joined = join("i.yaml", token=fresh.stdout.strip())
    assert joined.returncode == 0, joined.stderr


def test_control_plane_join_needs_the_current_certificate_key(lab: Lab) -> None:
    cp1 = init_cluster(lab, control_plane=False)  # cp2's preflight would find cp1's ports taken
    init = lab.record.init_config()
    token = lab.record.tokens()[0]["token"]
    cp2 = lab.node("cp2")
    cp2.start_kubelet()

    def join(key: str, name: str):
        docs = join_docs("cp2", token, init["ca_hash"], endpoint=ENDPOINT, control_plane="127.0.0.12", key=key)
        return cp2.run("kubeadm", "join", "--config", cp2.config(name, dump(docs)))

    wrong = join("f" * 64, "wrong.yaml")
    assert wrong.returncode == 1 and "cipher: message authentication failed" in wrong.stderr
    lab.record.expire_certificate_key()
    expired = join(CERT_KEY, "expired.yaml")
    assert expired.returncode == 1
    assert (
        'Secret "kubeadm-certs" was not found in the "kube-system" Namespace. This Secret might have expired'
        in expired.stderr
    )
    mixed = cp2.run(
        "kubeadm", "join", "--config", str(cp2.root / "root/expired.yaml"), "--certificate-key", CERT_KEY
    )
    assert mixed.returncode == 1 and "can not mix '--config' with arguments [certificate-key]" in mixed.stderr
    uploaded = cp1.run("kubeadm", "init", "phase", "upload-certs", "--upload-certs")
    assert uploaded.returncode == 0, uploaded.stderr
    new_key = uploaded.stdout.strip().splitlines()[-1]
    assert len(new_key) == 64 and new_key != CERT_KEY
    fine = join(new_key, "fresh.yaml")
    assert fine.returncode == 0, fine.stderr
    shared = cp1.root / "etc/kubernetes/pki/ca.key"
    assert (cp2.root / "etc/kubernetes/pki/ca.key").read_bytes() == shared.read_bytes()
    assert lab.record.join_order() == [("cp1", "control-plane"), ("cp2", "control-plane")]
    assert "--certificate-key" in lab.record.invocations(program="kubeadm", node="cp2")[-2]["secret_flags"]


def join_worker(lab: Lab) -> tuple[Node, str]:
    """Worker w1 joined to the cluster; with the path of its join configuration."""
    init = lab.record.init_config()
    token = lab.record.tokens()[0]["token"]
    worker = api_node(lab, "w1", kubelet_port=10251)
    worker.start_kubelet()
    config = worker.config("join.yaml", dump(join_docs("w1", token, init["ca_hash"], endpoint=ENDPOINT)))
    assert worker.run("kubeadm", "join", "--config", config).returncode == 0
    return worker, config


def test_reset_removes_the_node_files_and_a_rejoin_works(lab: Lab) -> None:
    cp1 = init_cluster(lab)
    worker, config = join_worker(lab)
    again = worker.run("kubeadm", "join", "--config", config)
    assert again.returncode == 1 and "[ERROR FileAvailable--etc-kubernetes-kubelet.conf]" in again.stderr
    reset = worker.run("kubeadm", "reset", "-f")
    assert reset.returncode == 0, reset.stderr
    assert not (worker.root / "etc/kubernetes/kubelet.conf").exists()
    assert not (worker.root / "var/lib/kubelet/config.yaml").exists()
    rejoined = worker.run("kubeadm", "join", "--config", config)
    assert rejoined.returncode == 0, rejoined.stderr
    assert [n["name"] for n in lab.record.nodes()] == ["cp1", "w1"]
    assert kubectl(cp1, "get", "nodes", "-o", "name").stdout.split() == ["node/cp1", "node/w1"]


def test_resetting_the_last_control_plane_ends_the_cluster(lab: Lab) -> None:
    cp1 = init_cluster(lab)
    admin = cp1.root / "root/admin.conf"
    admin.write_bytes((cp1.root / "etc/kubernetes/admin.conf").read_bytes())
    reset = cp1.run("kubeadm", "reset", "-f")
    assert reset.returncode == 0, reset.stderr
    assert lab.record.init_config() is None and lab.record.nodes() == []
    deadline = time.time() + 30  # the kubelet double stops the static pods whose manifests reset removed
    stale = cp1.run("kubectl", "--kubeconfig", str(admin), "get", "nodes")
    while time.time() < deadline and "was refused" not in stale.stderr:
        time.sleep(1)
        stale = cp1.run("kubectl", "--kubeconfig", str(admin), "get", "nodes")
    assert stale.returncode == 1 and f"The connection to the server {ENDPOINT} was refused" in stale.stderr
    again = cp1.run("kubeadm", "init", "--config", str(cp1.root / "root/init.yaml"), "--upload-certs")
    assert again.returncode == 0, again.stderr
    old_ca = cp1.run("kubectl", "--kubeconfig", str(admin), "get", "nodes")
    assert old_ca.returncode == 1 and "x509: certificate signed by unknown authority" in old_ca.stderr
    assert [c["exit_code"] for c in lab.record.invocations(program="kubeadm")] == [0, 0, 0]


def test_a_worker_without_registry_config_stays_not_ready(lab: Lab) -> None:
    """The mistake a real air-gapped cluster shows late: one node cannot pull from the site registry.

    (Removing hosts.toml would not do here: containerd falls back to plain HTTP for 127.0.0.1.)
    """
    cp1 = init_cluster(lab)
    init = lab.record.init_config()
    worker = api_node(lab, "w1", kubelet_port=10251)
    hosts = worker.root / "etc/containerd/certs.d/127.0.0.1:5000/hosts.toml"
    hosts.write_text(hosts.read_text().replace("127.0.0.1:5000", "127.0.0.1:5999"))  # a wrong mirror address
    worker.start_kubelet()
    joined = worker.run(
        "kubeadm",
        "join",
        "--config",
        worker.config("join.yaml", dump(join_docs("w1", lab.record.tokens()[0]["token"], init["ca_hash"], endpoint=ENDPOINT))),
    )
    assert joined.returncode == 0, joined.stderr
    assert kubectl(cp1, "apply", "-f", "-", stdin=calico("10.244.0.0/16")).returncode == 0
    assert kubectl(cp1, "wait", "--for=condition=Ready", "node/cp1", "--timeout=30s").returncode == 0
    late = kubectl(cp1, "wait", "--for=condition=Ready", "node/w1", "--timeout=5s")
    assert late.returncode == 1 and "timed out waiting for the condition on nodes/w1" in late.stderr
    pods = json.loads(kubectl(cp1, "get", "pods", "-A", "-o", "json").stdout)["items"]
    on_worker = [p for p in pods if p["spec"]["nodeName"] == "w1"]
    assert on_worker and all(p["status"]["phase"] == "Pending" for p in on_worker)
    reasons = {p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] for p in on_worker}
    assert reasons == {"ContainerCreating"}
    beat = lab.record.heartbeats()["w1"]
    assert not beat["sandbox_ok"] and "127.0.0.1:5000/google_containers/pause:3.8" in beat["pull_errors"]


def test_drain_refuses_daemonset_pods_unless_told_and_delete_node_removes_it(lab: Lab) -> None:
    cp1 = init_cluster(lab)
    worker, _ = join_worker(lab)

    refused = kubectl(cp1, "drain", "w1")
    assert refused.returncode == 1 and refused.stdout.startswith("node/w1 cordoned")
    assert ('error: unable to drain node "w1" due to error:cannot delete DaemonSet-managed Pods'
            " (use --ignore-daemonsets to ignore): kube-system/kube-proxy-") in refused.stderr
    drained = kubectl(cp1, "drain", "w1", "--ignore-daemonsets", "--delete-emptydir-data", "--force",
                      "--timeout=60s")
    assert drained.returncode == 0, drained.stderr
    assert drained.stdout.startswith("node/w1 already cordoned")
    assert drained.stdout.rstrip().endswith("node/w1 drained")
    assert "Warning: ignoring DaemonSet-managed Pods: kube-system/kube-proxy-" in drained.stderr
    pods = kubectl(cp1, "get", "pods", "-n", "kube-system", "-o", "wide").stdout
    assert not [line for line in pods.splitlines() if line.startswith("coredns") and " w1 " in line]

    assert worker.run("kubeadm", "reset", "-f").returncode == 0
    assert "node/w1" in kubectl(cp1, "get", "nodes", "-o", "name").stdout  # reset keeps the Node
    deleted = kubectl(cp1, "delete", "node", "w1")
    assert deleted.returncode == 0 and deleted.stdout.strip() == 'node "w1" deleted'
    assert kubectl(cp1, "get", "nodes", "-o", "name").stdout.split() == ["node/cp1"]
    gone = kubectl(cp1, "delete", "node", "w1")
    assert gone.returncode == 1 and 'Error from server (NotFound): nodes "w1" not found' in gone.stderr


def test_a_changed_manifest_is_merged_as_the_api_server_merges_it(lab: Lab) -> None:
    """kubectl apply sends a strategic merge patch: containers merge by name, nothing else is lost."""
    cp1 = init_cluster(lab)
    manifest = calico("10.244.0.0/16")
    assert kubectl(cp1, "apply", "-f", "-", stdin=manifest).returncode == 0
    same = kubectl(cp1, "diff", "-f", "-", stdin=manifest)
    assert same.returncode == 0 and same.stdout == "", same.stdout + same.stderr
    newer = manifest.replace("v3.24.5", "v3.24.6")
    differs = kubectl(cp1, "diff", "-f", "-", stdin=newer)
    assert differs.returncode == 1 and "+        image: 127.0.0.1:5000/calico/node:v3.24.6" in differs.stdout
    applied = kubectl(cp1, "apply", "-f", "-", stdin=newer)
    assert "daemonset.apps/calico-node configured" in applied.stdout, applied.stderr
    stored = json.loads(kubectl(cp1, "get", "daemonset", "calico-node", "-n", "kube-system", "-o", "json").stdout)
    container = stored["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "127.0.0.1:5000/calico/node:v3.24.6"
    assert {"CALICO_IPV4POOL_CIDR", "DATASTORE_TYPE"} <= {e["name"] for e in container["env"]}
    assert container["livenessProbe"] and container["volumeMounts"]
    assert kubectl(cp1, "diff", "-f", "-", stdin=newer).returncode == 0

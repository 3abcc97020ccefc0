"""The lab's kubelet double: crash-loops until kubeadm wrote its config, then heartbeats.

Each beat it reads its static pods, works out (like kubectl does) which cluster pods land
on this node, pulls missing images through containerd's registry config as the CRI would,
and writes a heartbeat to the shared state: images present, pull errors, sandbox image.
With ``run_control_plane`` it also runs etcd and the API server stand-in from the static pod
manifests (static_pods.py), reads the workloads stored in the API, reports its Node and pods
to the API through kubelet.conf, runs the user pods placed on it and serves their logs on
:10250 (kubelet_pods.py).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any

import clustermodel
import kubelet_flags
import kubelet_pods
import yaml
from apiclient import ApiClient, ApiUnavailable
from doublelib import Containerd, Env, Fail, read_text, write_atomic
from static_pods import StaticPods
from static_pods import enabled as static_runner_enabled

PULL_RETRY = 15.0  # seconds before a failed pull is tried again (kubelet's back-off, shortened)

def log(message: str) -> None:
    stamp = time.strftime("%m%d %H:%M:%S", time.gmtime())
    sys.stderr.write(f"I{stamp} kubelet-double] {message}\n")
    sys.stderr.flush()


def static_pod_docs(env: Env, manifests: str) -> dict[str, dict[str, Any]]:
    """Pod name -> manifest, for every readable pod manifest in staticPodPath."""
    result = {}
    folder = env.path(manifests)
    if folder.is_dir():
        for item in sorted(folder.glob("*.yaml")):
            try:
                doc = yaml.safe_load(item.read_text()) or {}
                if doc["spec"]["containers"][0]["image"]:
                    result[doc["metadata"]["name"]] = doc
            except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
                continue
    return result


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def check_skew(env: Env) -> None:
    """Double-only strictness: the version skew policy allows a kubelet at most the API server's
    release (control planes first); a newer one is refused here instead of misbehaving later."""
    cluster = str((env.state.read().get("init") or {}).get("kubernetesVersion") or "")
    if cluster and _release(env.version) > _release(cluster):
        raise Fail(f'E0000 run.go:74] "command failed" err="lab double: kubelet v{env.version} is newer than '
                   f"the cluster's API server {cluster}: the version skew policy allows a kubelet at most the "
                   'API server\'s release; upgrade the control plane first (kubeadm upgrade apply)"')


class ApiReport:
    """This kubelet's Node and its pods in the API (through kubelet.conf), written on change.

    Only where the site runs its control planes (``run_control_plane``); what is reported
    is clustermodel's view of the workloads the API stores (``with_workloads``).
    """

    REFRESH = 20.0

    def __init__(self, env: Env, node: str, node_ip: str = "") -> None:
        self.env, self.node, self.node_ip = env, node, node_ip.split(",")[0]
        self.client: ApiClient | None = None
        self.written: dict[str, tuple[str, float]] = {}
        self.complaint = ""
        self.workloads: dict[str, dict[str, Any]] = {}
        self.logs: kubelet_pods.LogServer | None = None
        self.port = kubelet_pods.PORT

    def connect(self) -> ApiClient | None:
        conf = self.env.path("/etc/kubernetes/kubelet.conf")
        if not conf.exists():
            self.client = None
            return None
        if self.client is None:
            self.client = ApiClient(conf, self.env.path("/var/lib/kubelet/pki"))
        return self.client

    def with_workloads(self, state: dict[str, Any]) -> dict[str, Any]:
        """``state`` with the DaemonSets, Deployments and Pods the API holds as its objects."""
        try:
            client = self.connect()
            if client is not None:
                self.workloads = kubelet_pods.workloads(client)
        except (ApiUnavailable, OSError, KeyError, StopIteration, ValueError) as error:
            self.say(str(error))
        return dict(state, objects=self.workloads)

    def serve_logs(self, state: dict[str, Any], port: int, client_ca: str) -> None:
        """kubelet's :10250 on the node's address, once the node is registered with one."""
        record = next((n for n in state.get("nodes", []) if n["name"] == self.node and not n.get("reset")), None)
        address = self.node_ip or (record or {}).get("address")
        if self.logs is not None or not record or not address:
            return
        try:
            self.logs = kubelet_pods.LogServer(self.env, self.node, address, port, client_ca)
            self.port = port
        except (OSError, subprocess.SubprocessError) as error:
            self.say(f"kubelet server on {address}:{port}: {error}")

    def stop(self) -> None:
        if self.logs is not None:
            self.logs.stop()
            self.logs = None

    def objects(self, state: dict[str, Any], beats: dict[str, dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
        record = next((n for n in state.get("nodes", []) if n["name"] == self.node and not n.get("reset")), None)
        if record is None:
            return []
        now = time.time()
        node_obj = clustermodel.node_object(state, beats, record, now)
        node_obj["status"]["daemonEndpoints"] = {"kubeletEndpoint": {"Port": self.port}}
        if self.node_ip:  # --node-ip, else the address kubeadm recorded
            node_obj["status"]["addresses"][0]["address"] = self.node_ip
        objects = [("/api/v1/nodes", node_obj)]
        for pod in clustermodel.pods(state, beats):
            if pod["node"] == self.node and pod["owner"] != "Pod":
                obj, _ = clustermodel.pod_object(pod, state, beats, now)
                objects.append((f"/api/v1/namespaces/{pod['namespace']}/pods", obj))
        return objects

    def report(self, state: dict[str, Any], beats: dict[str, dict[str, Any]]) -> None:
        try:
            client = self.connect()
            if client is None:
                return
            if self.adopt_cordon(state):
                state = dict(self.env.state.read(), objects=self.workloads)
            for collection, obj in self.objects(state, beats):
                key, text = f"{collection}/{obj['metadata']['name']}", json.dumps(obj, sort_keys=True)
                last, at = self.written.get(key, ("", 0.0))
                if last == text and time.time() - at < self.REFRESH:
                    continue
                code = self.write_node(client, obj) if obj["kind"] == "Node" else client.upsert(collection, obj)
                if code < 300:
                    self.written[key] = (text, time.time())
                else:
                    self.say(f"{key}: HTTP {code}")
            for pod in clustermodel.pods(state, beats):
                if pod["node"] == self.node and pod["owner"] == "Pod" and pod.get("object"):
                    code = kubelet_pods.report_user_pod(self.env, client, self.node, pod, state, beats)
                    if code >= 300 and code != 404:  # 404: deleted meanwhile (kubectl run --rm)
                        self.say(f"pod {pod['namespace']}/{pod['name']}: HTTP {code}")
            self.complaint = ""
        except (ApiUnavailable, OSError, KeyError, StopIteration, ValueError) as error:
            self.say(str(error))

    def write_node(self, client: ApiClient, obj: dict[str, Any]) -> int:
        """The Node registered once, then only its status written, as kubelet does: its spec
        (``unschedulable``: kubectl's cordon, drain and uncordon) is the API's, never
        overwritten from the model (a write racing a cordon is refused on its resourceVersion
        and made again on the next beat)."""
        code, current = client.request("GET", f"/api/v1/nodes/{self.node}")
        if code == 404:
            return client.request("POST", "/api/v1/nodes", obj)[0]
        if code >= 300:
            return code
        current["status"] = obj["status"]
        return client.request("PUT", f"/api/v1/nodes/{self.node}", current)[0]

    def adopt_cordon(self, state: dict[str, Any]) -> bool:
        """The Node's ``spec.unschedulable`` as the API holds it goes into the cluster model, so
        the pods move as the scheduler would move them; whether the model changed."""
        record = next((n for n in state.get("nodes", []) if n["name"] == self.node and not n.get("reset")), None)
        if self.client is None or record is None:
            return False
        code, current = self.client.request("GET", f"/api/v1/nodes/{self.node}")
        if code != 200:
            return False
        value = bool((current.get("spec") or {}).get("unschedulable"))
        if value == bool(record.get("unschedulable")):
            return False
        with self.env.state.update() as data:
            for node in data.get("nodes", []):
                if node["name"] == self.node and not node.get("reset"):
                    node["unschedulable"] = value
        log(f"node {'cordoned' if value else 'uncordoned'} through the API")
        return True

    def say(self, complaint: str) -> None:
        if complaint != self.complaint:
            log(f"E node status not reported: {complaint}")
            self.complaint = complaint


def handle(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if "--version" in argv:
        sys.stdout.write(f"Kubernetes v{env.version}\n")
        return
    extra["command"] = "run"
    flags = kubelet_flags.parse(env, argv)
    config_path = flags.get("--config", "/var/lib/kubelet/config.yaml")
    config_text = read_text(env.path(config_path))
    if config_text is None:
        raise Fail(
            'E0000 run.go:74] "command failed" err="failed to load kubelet config file, error: failed to load Kubelet '
            f'config file {config_path}, error failed to read kubelet config file \\"{config_path}\\", error: open '
            f'{config_path}: no such file or directory, path: {config_path}"'
        )
    config = yaml.safe_load(config_text) or {}
    swaps = read_text(env.path("/proc/swaps")) or ""
    if config.get("failSwapOn", True) and len([ln for ln in swaps.splitlines() if ln.strip()]) > 1:
        raise Fail(
            'E0000 run.go:74] "command failed" err="failed to run Kubelet: running with swap on is not supported, '
            'please disable swap! or set --fail-swap-on flag to false."'
        )
    if flags.get("--node-ip"):
        kubelet_flags.check_node_ip(env, str(flags["--node-ip"]))
    node = str(flags.get("--hostname-override") or env.hostname).lower()
    extra["node_name"] = node
    check_skew(env)
    manifests = str(config.get("staticPodPath") or "/etc/kubernetes/manifests")
    interval = float(env.setting("heartbeat_interval", 2))
    stop = {"now": False}

    def on_signal(signum: int, frame: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log(f"kubelet double running for node {node}")
    runner = StaticPods(env, node) if static_runner_enabled(env) else None
    try:
        beat_until_stopped(env, flags, config_path, manifests, node, interval, stop, runner)
    finally:
        if runner:
            runner.stop_all()
    log("kubelet double stopping")


def beat_until_stopped(env: Env, flags: dict[str, Any], config_path: str, manifests: str, node: str,
                       interval: float, stop: dict[str, bool], runner: StaticPods | None) -> None:
    config = yaml.safe_load(read_text(env.path(config_path)) or "") or {}
    reporter = ApiReport(env, node, str(flags.get("--node-ip") or "")) if runner else None
    try:
        beat_loop(env, flags, config_path, manifests, node, interval, stop, runner, reporter, config)
    finally:
        if reporter:
            reporter.stop()


def beat_loop(env: Env, flags: dict[str, Any], config_path: str, manifests: str, node: str, interval: float,
              stop: dict[str, bool], runner: StaticPods | None, reporter: ApiReport | None,
              config: dict[str, Any]) -> None:
    failed_at: dict[str, float] = {}
    errors: dict[str, str] = {}
    while not stop["now"]:
        if read_text(env.path(config_path)) is None:
            raise Fail(f"E0000 kubelet config {config_path} disappeared (kubeadm reset?): exiting")
        runtime = Containerd(env, str(flags.get("--container-runtime-endpoint") or ""))
        present = runtime.images()
        docs = static_pod_docs(env, manifests)
        static = {name: doc["spec"]["containers"][0]["image"] for name, doc in docs.items()}
        wanted = {runtime.sandbox_image} | set(static.values())
        state = env.state.read()
        if reporter:
            state = reporter.with_workloads(state)
            port = int(env.setting("kubelet_port", config.get("port") or kubelet_pods.PORT))
            reporter.serve_logs(state, port, str(((config.get("authentication") or {}).get("x509") or {})
                                           .get("clientCAFile") or "/etc/kubernetes/pki/ca.crt"))
        if any(n["name"] == node for n in state.get("nodes", [])):
            for pod in clustermodel.pods(state, {node: {"static_pods": static}}):
                if pod["node"] == node:
                    wanted |= {c["image"] for c in pod["containers"]}
        for image in sorted(wanted - present):
            if time.time() - failed_at.get(image, 0) < PULL_RETRY:
                continue
            error = runtime.pull(image)
            if error:
                failed_at[image] = time.time()
                errors[image] = f'Failed to pull image "{image}": {error}'
            else:
                errors.pop(image, None)
        present = runtime.images()
        control_plane = runner.sync(docs, present) if runner else {}
        beat = {
            "node": node,
            "time": time.time(),
            "pid": os.getpid(),
            "version": f"v{env.version}",
            "images": sorted(present),
            "pull_errors": {k: v for k, v in errors.items() if k not in present},
            "sandbox_image": runtime.sandbox_image,
            "sandbox_ok": runtime.sandbox_image in present,
            "static_pods": static,
            "cgroupDriver": config.get("cgroupDriver", "cgroupfs"),
            "containerd_systemd_cgroup": runtime.systemd_cgroup,
            "containerd_running": not runtime.running_error(),
            "control_plane": control_plane,
        }
        write_atomic(env.state.heartbeat_path(node), json.dumps(beat, sort_keys=True).encode())
        if reporter:
            reporter.report(dict(env.state.read(), objects=reporter.workloads), env.state.heartbeats())
        deadline = time.time() + interval
        while not stop["now"] and time.time() < deadline:
            time.sleep(0.1)

"""The lab's strict kubeadm double: checks what kubeadm 1.25 checks, fails like it, records all.

Commands: init, join, token create/list, init phase upload-certs, config images list/pull,
reset, version; certs check-expiration|renew and init phase certs apiserver / upload-config
kubeadm (kubeadm_certs.py); upgrade plan/apply/node (kubeadm_upgrade.py). See
docs/lab-doubles.md for what is modelled and what is not.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import aes_gcm
import clustermodel
import kubeadm_addons
import kubeadm_certs
import kubeadm_discovery
import kubeadm_manifests
import kubeadm_net
import kubeadm_pki
import static_pods
import yaml
from doublelib import (
    Containerd,
    Env,
    Fail,
    decode_strict,
    kubeadm_images,
    load_documents,
    normalize_version,
    parse_duration,
    parse_flags,
    read_text,
    write_atomic,
)

TOKEN = re.compile(r"^([a-z0-9]{6})\.([a-z0-9]{16})$")
CERT_KEY_TTL = 2 * 3600
DEFAULT_TOKEN_TTL = 24 * 3600
STACK_HINT = "To see the stack trace of this error execute with --v=5 or higher"
MANIFESTS = "/etc/kubernetes/manifests"
PKI = "/etc/kubernetes/pki"
SHARED_CERTS = (
    "ca.crt",
    "ca.key",
    "sa.key",
    "sa.pub",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
)
INIT_PHASES = (
    "preflight",
    "certs",
    "kubeconfig",
    "kubelet-start",
    "control-plane",
    "etcd",
    "upload-config",
    "upload-certs",
    "mark-control-plane",
    "bootstrap-token",
    "kubelet-finalize",
    "addon",
    "addon/coredns",
    "addon/kube-proxy",
)
JOIN_PHASES = ("preflight", "control-plane-prepare", "kubelet-start", "control-plane-join")
# Flags kubeadm accepts next to --config (cmd/kubeadm/app/util/config isAllowedFlag).
ALLOWED_WITH_CONFIG = {
    "--config",
    "--ignore-preflight-errors",
    "--dry-run",
    "--kubeconfig",
    "--node-name",
    "--kubeconfig-dir",
    "--upload-certs",
    "--patches",
    "--print-join-command",
    "--rootfs",
    "--v",
    "--log-file",
}


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def err(text: str) -> None:
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def phase_error(phase: str, message: str) -> Fail:
    return Fail(f"error execution phase {phase}: {message}\n{STACK_HINT}")


# ---------------------------------------------------------------- configuration


class Config:
    """The documents of one --config file, decoded strictly, plus kubeadm's defaults."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.init: dict[str, Any] | None = None
        self.cluster: dict[str, Any] | None = None
        self.join: dict[str, Any] | None = None
        self.proxy: dict[str, Any] = {}
        self.kubelet: dict[str, Any] = {}
        self.text = ""

    @classmethod
    def from_file(cls, env: Env, path: str) -> Config:
        config = cls(env)
        try:
            config.text = Path(path).read_text()
        except OSError as error:
            raise Fail(f'unable to read config from "{path}" : {error}\n{STACK_HINT}') from None
        docs = load_documents(config.text, path)
        for doc in docs:
            if not isinstance(doc, dict):
                raise Fail(f"error converting YAML to JSON: {path}: a document is not a mapping")
            _, kind = decode_strict(doc)
            attribute = {
                "InitConfiguration": "init",
                "ClusterConfiguration": "cluster",
                "JoinConfiguration": "join",
                "KubeProxyConfiguration": "proxy",
                "KubeletConfiguration": "kubelet",
            }[kind]
            if getattr(config, attribute):
                raise Fail(f"lab double: {path} holds more than one {kind} document")
            setattr(config, attribute, doc)
        return config

    def node_registration(self) -> dict[str, Any]:
        source = self.join if self.join is not None else (self.init or {})
        return source.get("nodeRegistration") or {}

    def node_name(self) -> str:
        return str(self.node_registration().get("name") or self.env.hostname).lower()

    def cri_socket(self) -> str:
        return str(self.node_registration().get("criSocket") or "unix:///var/run/containerd/containerd.sock")

    def ignored(self, flag: list[str] | None) -> set[str]:
        names = {n.lower() for n in (flag or [])}
        names |= {str(n).lower() for n in self.node_registration().get("ignorePreflightErrors") or []}
        if "all" in names and len(names) > 1:
            raise Fail(
                "ignore-preflight-errors: Invalid value: \"all\": don't specify individual checks if 'all' is used"
            )
        return names

    def cgroup_driver(self) -> str:
        return str(self.kubelet.get("cgroupDriver") or "systemd")  # kubeadm >= 1.22 defaults to systemd


def validate_cluster(env: Env, cluster: dict[str, Any]) -> list[str]:
    """kubeadm's ValidateClusterConfiguration subset: subnets, endpoint, version skew."""
    problems = []
    networking = cluster.setdefault("networking", {})
    networking.setdefault("serviceSubnet", "10.96.0.0/12")
    networking.setdefault("dnsDomain", "cluster.local")
    for field in ("serviceSubnet", "podSubnet"):
        value = networking.get(field)
        if value is None:
            continue
        for part in str(value).split(","):
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                problems.append(f'networking.{field}: Invalid value: "{value}": couldn\'t parse subnet')
    endpoint = cluster.get("controlPlaneEndpoint")
    if endpoint and not re.match(r"^[A-Za-z0-9.\-\[\]:]+$", str(endpoint)):
        problems.append(
            f'controlPlaneEndpoint: Invalid value: "{endpoint}": must be a valid DNS name or IP address with an optional port'
        )
    version = cluster.get("kubernetesVersion")
    if version:
        match = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", str(version))
        if not match:
            problems.append(f'kubernetesVersion: Invalid value: "{version}": invalid version')
        else:
            own = [int(p) for p in env.version.split(".")[:2]]
            minor = [int(match.group(1)), int(match.group(2))]
            if minor < [own[0], own[1] - 1]:
                problems.append(
                    f"this version of kubeadm only supports deploying clusters with the control plane version >= "
                    f"{own[0]}.{own[1] - 1}.0. Current version: {normalize_version(str(version))}"
                )
    return problems


def validate_node_registration(reg: dict[str, Any]) -> list[str]:
    policy = reg.get("imagePullPolicy")
    if policy and policy not in ("Always", "IfNotPresent", "Never"):
        return [
            f'nodeRegistration.imagePullPolicy: Unsupported value: "{policy}": supported values: "Always", "IfNotPresent", "Never"'
        ]
    socket_url = reg.get("criSocket")
    if socket_url and not str(socket_url).startswith(("unix://", "/")):
        return [f'nodeRegistration.criSocket: Invalid value: "{socket_url}": must be a unix socket path']
    return []


def validate_certificate_key(key: str, field: str) -> list[str]:
    if key and not re.match(r"^[0-9a-f]{64}$", key):
        return [
            f'{field}: Invalid value: "{key[:6]}...": the certificate key must be a hex encoded AES key of 32 bytes'
        ]
    return []


def validate_component_configs(config: Config) -> list[str]:
    problems = []
    mode = config.proxy.get("mode")
    if mode not in (None, "", "iptables", "ipvs", "userspace"):
        problems.append(
            f'KubeProxyConfiguration.mode: Unsupported value: "{mode}": supported values: "iptables", "ipvs", "userspace"'
        )
    driver = config.kubelet.get("cgroupDriver")
    if driver not in (None, "systemd", "cgroupfs"):
        problems.append(
            f'KubeletConfiguration.cgroupDriver: Unsupported value: "{driver}": supported values: "systemd", "cgroupfs"'
        )
    return problems


def fail_validation(problems: list[str]) -> None:
    if problems:
        raise Fail("\n".join(problems) + f"\n{STACK_HINT}")


def check_mixed_args(flags: dict[str, Any]) -> None:
    if "--config" not in flags:
        return
    bad = sorted(
        name.lstrip("-")
        for name in flags
        if name not in ALLOWED_WITH_CONFIG and not name.startswith("--skip-")
    )
    if bad:
        raise Fail(f"can not mix '--config' with arguments [{' '.join(bad)}]\n{STACK_HINT}")


# ---------------------------------------------------------------- preflight


Check = Callable[[], "tuple[list[str], list[str]]"]


def run_checks(checks: list[tuple[str, Check]], ignored: set[str]) -> None:
    """kubeadm's RunChecks: warnings printed, errors collected, ignored ones downgraded."""
    errors = []
    for name, check in checks:
        warnings, problems = check()
        if "all" in ignored or name.lower() in ignored:
            warnings, problems = warnings + problems, []
        for warning in warnings:
            err(f"\t[WARNING {name}]: {warning}")
        for problem in problems:
            errors.append(f"\t[ERROR {name}]: {problem}")
    if errors:
        raise phase_error(
            "preflight",
            "[preflight] Some fatal errors occurred:\n" + "\n".join(errors) + "\n"
            "[preflight] If you know what you are doing, you can make a check non-fatal with "
            "`--ignore-preflight-errors=...`",
        )


def ok() -> tuple[list[str], list[str]]:
    return [], []


def port_check(port: int) -> Check:
    def check() -> tuple[list[str], list[str]]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # kubeadm's check is Go's net.Listen, which sets SO_REUSEADDR: a port whose last
        # connections are in TIME_WAIT (an API server just stopped) is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return [], [f"Port {port} is in use"]
        finally:
            sock.close()
        return ok()

    return check


def file_available(env: Env, path: str) -> tuple[str, Check]:
    def check() -> tuple[list[str], list[str]]:
        return ([], [f"{path} already exists"]) if env.path(path).exists() else ok()

    return "FileAvailable-" + path.replace("/", "-"), check


def dir_available(env: Env, path: str) -> tuple[str, Check]:
    def check() -> tuple[list[str], list[str]]:
        target = env.path(path)
        if target.is_dir() and any(target.iterdir()):
            return [], [f"{path} is not empty"]
        return ok()

    return "DirAvailable-" + path.replace("/", "-"), check


def file_content(env: Env, path: str, content: str) -> tuple[str, Check]:
    def check() -> tuple[list[str], list[str]]:
        text = read_text(env.path(path))
        if text is None:
            return [], [f"{path} does not exist"]
        if text[: len(content)] != content:
            return [], [f"{path} contents are not set to {content}"]
        return ok()

    return "FileContent-" + path.replace("/", "-"), check


def swap_check(env: Env) -> Check:
    def check() -> tuple[list[str], list[str]]:
        text = read_text(env.path("/proc/swaps"))
        if text is not None and len([ln for ln in text.splitlines() if ln.strip()]) > 1:
            return [], ["running with swap on is not supported. Please disable swap"]
        return ok()

    return check


def in_path(executable: str, mandatory: bool) -> tuple[str, Check]:
    def check() -> tuple[list[str], list[str]]:
        if shutil.which(executable):
            return ok()
        message = f"{executable} not found in system path"
        return ([], [message]) if mandatory else ([message], [])

    return f"FileExisting-{executable}", check


def systemd_running(env: Env) -> bool:
    return env.path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


def service_check(env: Env) -> Check:
    def check() -> tuple[list[str], list[str]]:
        if not systemd_running(env):
            return ["no supported init systems detected"], []
        result = subprocess.run(
            ["systemctl", "is-enabled", "kubelet.service"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if result.stdout.strip() in ("", "not-found") and result.returncode != 0:
            return ["kubelet service does not exist"], []
        if result.returncode != 0:
            return ["kubelet service is not enabled, please run 'systemctl enable kubelet.service'"], []
        return ok()

    return check


def kubelet_version_check(env: Env, k8s_version: str) -> Check:
    def check() -> tuple[list[str], list[str]]:
        kubelet = shutil.which("kubelet")
        if not kubelet:
            return [], [
                "couldn't get kubelet version: cannot execute 'kubelet --version': executable file not found in $PATH"
            ]
        result = subprocess.run([kubelet, "--version"], capture_output=True, text=True, timeout=30)
        match = re.search(r"v(\d+)\.(\d+)\.(\d+)", result.stdout)
        if result.returncode != 0 or not match:
            return [], [f"couldn't get kubelet version: {result.stderr.strip() or result.stdout.strip()}"]
        if k8s_version:
            want = re.match(r"v?(\d+)\.(\d+)", k8s_version)
            if want and (int(match.group(1)), int(match.group(2))) > (
                int(want.group(1)),
                int(want.group(2)),
            ):
                return [], [
                    "the kubelet version is higher than the control plane version. This is not a supported version "
                    f'skew and may lead to a malfunctional cluster. Kubelet version: "{match.group(0)}" '
                    f'Control plane version: "{normalize_version(k8s_version)}"'
                ]
        return ok()

    return check


def hostname_check(name: str) -> Check:
    def check() -> tuple[list[str], list[str]]:
        try:
            socket.getaddrinfo(name, None)
        except OSError as error:
            return [
                f'hostname "{name}" could not be reached',
                f'hostname "{name}": lookup {name}: {error}',
            ], []
        return ok()

    return check


def cgroup_check(config: Config, runtime: Containerd) -> Check:
    """Double-only: a kubelet/containerd cgroup driver mismatch makes real clusters unstable later."""

    def check() -> tuple[list[str], list[str]]:
        kubelet = config.cgroup_driver()
        containerd = "systemd" if runtime.systemd_cgroup else "cgroupfs"
        if kubelet != containerd:
            return [], [
                f'kubelet cgroupDriver "{kubelet}" does not match containerd\'s runc SystemdCgroup = '
                f"{str(runtime.systemd_cgroup).lower()} in /etc/containerd/config.toml"
            ]
        return ok()

    return check


def common_checks(env: Env, config: Config, runtime: Containerd, k8s_version: str) -> list[tuple[str, Check]]:
    checks: list[tuple[str, Check]] = [
        ("CRI", lambda: ([], [e for e in [runtime.running_error()] if e])),
        ("Swap", swap_check(env)),
    ]
    for executable in ("crictl", "conntrack", "ip", "iptables", "mount", "nsenter"):
        checks.append(in_path(executable, True))
    for executable in ("ebtables", "ethtool", "socat", "tc", "touch"):
        checks.append(in_path(executable, False))
    checks += [
        ("Hostname", hostname_check(config.node_name())),
        ("KubeletVersion", kubelet_version_check(env, k8s_version)),
        ("Service-Kubelet", service_check(env)),
        ("Port-10250", port_check(10250)),
        ("CgroupDriver", cgroup_check(config, runtime)),
    ]
    return checks


def ipv4_checks(env: Env) -> list[tuple[str, Check]]:
    return [
        file_content(env, "/proc/sys/net/bridge/bridge-nf-call-iptables", "1"),
        file_content(env, "/proc/sys/net/ipv4/ip_forward", "1"),
    ]


def control_plane_checks(env: Env, bind_port: int, cluster: dict[str, Any]) -> list[tuple[str, Check]]:
    def root_check() -> tuple[list[str], list[str]]:
        return ([], ["user is not running as root"]) if os.geteuid() != 0 else ok()

    def cpu_check() -> tuple[list[str], list[str]]:
        count = os.cpu_count() or 1
        return (
            ([], [f"the number of available CPUs {count} is less than the required 2"]) if count < 2 else ok()
        )

    def mem_check() -> tuple[list[str], list[str]]:
        text = read_text(env.path("/proc/meminfo")) or ""
        match = re.search(r"MemTotal:\s+(\d+) kB", text)
        if match and int(match.group(1)) // 1024 < 1700:
            return [], [f"the system RAM ({int(match.group(1)) // 1024} MB) is less than the minimum 1700 MB"]
        return ok()

    checks: list[tuple[str, Check]] = [
        ("IsPrivilegedUser", root_check),
        ("NumCPU", cpu_check),
        ("Mem", mem_check),
        (f"Port-{bind_port}", port_check(bind_port)),
        ("Port-10259", port_check(10259)),
        ("Port-10257", port_check(10257)),
    ]
    for component in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd"):
        checks.append(file_available(env, f"{MANIFESTS}/{component}.yaml"))
    etcd = cluster.get("etcd") or {}
    if not etcd.get("external"):
        checks += [
            ("Port-2379", port_check(2379)),
            ("Port-2380", port_check(2380)),
            dir_available(env, (etcd.get("local") or {}).get("dataDir") or "/var/lib/etcd"),
        ]
    return checks


def image_pull_check(runtime: Containerd, images: list[str], policy: str) -> Check:
    def check() -> tuple[list[str], list[str]]:
        if policy == "Never":
            return ok()
        present = runtime.images()
        problems = []
        for image in images:
            if policy == "IfNotPresent" and image in present:
                continue
            error = runtime.pull(image)
            if error:
                problems.append(f"failed to pull image {image}: output: {error}, error: exit status 1")
        return [], problems

    return check


def kubernetes_version_check(env: Env, version: str) -> Check:
    def check() -> tuple[list[str], list[str]]:
        own = tuple(int(p) for p in env.version.split(".")[:2])
        match = re.match(r"v?(\d+)\.(\d+)", version)
        if match and (int(match.group(1)), int(match.group(2))) > own:
            return [
                f"Kubernetes version is greater than kubeadm version. Please consider to upgrade kubeadm. "
                f"Kubernetes version: {version.lstrip('v')}. Kubeadm version: {own[0]}.{own[1]}.x"
            ], []
        return ok()

    return check


# ---------------------------------------------------------------- certificates and kubeconfigs


def openssl(env: Env, *args: str, stdin: bytes | None = None, check: bool = True) -> bytes:
    binary = env.setting("openssl", "openssl")
    try:
        result = subprocess.run([binary, *args], capture_output=True, timeout=60, input=stdin)
    except FileNotFoundError:
        raise Fail(f"lab double: {binary} not found (the lab base root must contain openssl)") from None
    if result.returncode != 0 and check:
        raise Fail(f"lab double: openssl {args[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout


def make_client_cert(env: Env, ca_crt: Path, ca_key: Path, subject: str) -> tuple[bytes, bytes]:
    return kubeadm_pki.sign(lambda *args: openssl(env, *args), ca_crt, ca_key, subject, "clientAuth")


def ca_hash(env: Env, ca_crt: Path) -> str:
    """sha256 of the CA's DER SubjectPublicKeyInfo: what --discovery-token-ca-cert-hash pins."""
    pem = openssl(env, "x509", "-in", str(ca_crt), "-noout", "-pubkey").decode()
    body = "".join(line for line in pem.splitlines() if line and not line.startswith("-----"))
    return "sha256:" + hashlib.sha256(base64.b64decode(body)).hexdigest()


def generate_pki(env: Env, cluster: dict[str, Any], node: str, advertise: str) -> None:
    """The certs phase: the shared CAs and sa key (unless present), then this node's certificates."""
    pki = env.path(PKI)
    run = lambda *args: openssl(env, *args)  # noqa: E731
    if not (pki / "ca.crt").exists():
        kubeadm_pki.make_shared(run, pki)
    kubeadm_pki.make_node_certs(run, pki, cluster, node, advertise)


def kubeconfig(server: str, ca_pem: bytes, user: str, cert: bytes, key: bytes) -> bytes:
    b64 = lambda data: base64.b64encode(data).decode()  # noqa: E731
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": "kubernetes",
                "cluster": {"certificate-authority-data": b64(ca_pem), "server": server},
            }
        ],
        "contexts": [{"name": f"{user}@kubernetes", "context": {"cluster": "kubernetes", "user": user}}],
        "current-context": f"{user}@kubernetes",
        "users": [
            {
                "name": user,
                "user": {"client-certificate-data": b64(cert), "client-key-data": b64(key)},
            }
        ],
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def write_kubeconfigs(env: Env, server: str, names: tuple[str, ...]) -> None:
    pki = env.path(PKI)
    subjects = {
        "admin.conf": ("kubernetes-admin", "/O=system:masters/CN=kubernetes-admin"),
        "controller-manager.conf": (
            "system:kube-controller-manager",
            "/CN=system:kube-controller-manager",
        ),
        "scheduler.conf": ("system:kube-scheduler", "/CN=system:kube-scheduler"),
        "kubelet.conf": (
            f"system:node:{env.hostname}",
            f"/O=system:nodes/CN=system:node:{env.hostname}",
        ),
    }
    ca_pem = (pki / "ca.crt").read_bytes()
    for name in names:
        user, subject = subjects[name]
        cert, key = make_client_cert(env, pki / "ca.crt", pki / "ca.key", subject)
        write_atomic(env.path(f"/etc/kubernetes/{name}"), kubeconfig(server, ca_pem, user, cert, key), 0o600)


def endpoint_of(cluster: dict[str, Any], advertise: str, bind_port: int) -> str:
    endpoint = cluster.get("controlPlaneEndpoint")
    if endpoint:
        host, _, port = str(endpoint).rpartition(":") if ":" in str(endpoint) else (str(endpoint), "", "")
        return f"{host}:{port}" if port else f"{endpoint}:{bind_port}"
    return f"{advertise}:{bind_port}"


# ---------------------------------------------------------------- node files


def static_pod(name: str, image: str, command: list[str]) -> bytes:
    doc = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "kube-system",
            "labels": {"component": name, "tier": "control-plane"},
        },
        "spec": {
            "hostNetwork": True,
            "priorityClassName": "system-node-critical",
            "containers": [
                {
                    "name": name,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                }
            ],
        },
    }
    return yaml.safe_dump(doc, sort_keys=False).encode()


def write_static_pods(
    env: Env, cluster: dict[str, Any], images: dict[str, str], node: str, advertise: str, port: int, etcd: bool,
    members: dict[str, str] | None = None,
) -> dict[str, str]:
    """kubeadm's control-plane (and local etcd) manifests; ``members``: etcd peers a join adds to."""
    pods = {
        "kube-apiserver": kubeadm_manifests.apiserver(cluster, advertise, port),
        "kube-controller-manager": kubeadm_manifests.controller_manager(cluster),
        "kube-scheduler": kubeadm_manifests.scheduler(cluster),
    }
    if etcd:
        pods["etcd"] = kubeadm_manifests.etcd(cluster, node, advertise, members)
    written = {}
    for name, command in pods.items():
        write_atomic(env.path(f"{MANIFESTS}/{name}.yaml"), static_pod(name, images[name], command), 0o600)
        written[name] = images[name]
    return written


def write_kubelet_files(
    env: Env, config: Config, cluster: dict[str, Any], images: dict[str, str], node_name: str
) -> None:
    net = cluster.get("networking") or {}
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "clusterDNS": [clustermodel.service_ip(net.get("serviceSubnet", "10.96.0.0/12"), 10)],
        "clusterDomain": net.get("dnsDomain", "cluster.local"),
        "staticPodPath": MANIFESTS,
        "authentication": {"x509": {"clientCAFile": f"{PKI}/ca.crt"}},
    }
    kubelet.update({k: v for k, v in (config.kubelet or {}).items() if k not in ("apiVersion", "kind")})
    write_atomic(env.path("/var/lib/kubelet/config.yaml"), yaml.safe_dump(kubelet, sort_keys=False).encode())
    args = [
        f"--container-runtime-endpoint={config.cri_socket()}",
        f"--pod-infra-container-image={images['pause']}",
    ]
    if node_name != env.hostname:
        args.append(f"--hostname-override={node_name}")
    # nodeRegistration.kubeletExtraArgs go into the same variable, overriding kubeadm's own
    extra = {f"--{k}": str(v) for k, v in (config.node_registration().get("kubeletExtraArgs") or {}).items()}
    args = [a for a in args if a.split("=", 1)[0] not in extra] + [f"{k}={v}" for k, v in sorted(extra.items())]
    write_atomic(
        env.path("/var/lib/kubelet/kubeadm-flags.env"),
        f'KUBELET_KUBEADM_ARGS="{" ".join(args)}"\n'.encode(),
    )


def start_kubelet(env: Env) -> None:
    """kubeadm's TryStartKubelet: restart the service when systemd runs, else say so."""
    if not systemd_running(env):
        out(
            "[kubelet-start] No supported init system detected, won't make sure the kubelet is running properly."
        )
        return
    for command in (["systemctl", "daemon-reload"], ["systemctl", "restart", "kubelet"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            out(f"[kubelet-start] WARNING: unable to start the kubelet service: [{result.stderr.strip()}]")
            out("[kubelet-start] Please ensure kubelet is reloadable and running manually.")
            return


def wait_for_kubelet(env: Env, node: str, static: dict[str, str], since: float, phase: str) -> None:
    """Wait until this node's kubelet double reports (and runs its static pods), bounded."""
    timeout = float(env.setting("wait_timeout", 240))
    deadline = time.time() + timeout
    beat: dict[str, Any] = {}
    while time.time() < deadline:
        beat = env.state.heartbeats().get(node) or {}
        if float(beat.get("time", 0)) >= since:
            present = set(beat.get("images", []))
            # a worker only needs its kubelet to register; static pods also need their sandbox
            if not static or (beat.get("sandbox_ok") and all(image in present for image in static.values())):
                return
        time.sleep(0.5)
    if static:
        missing = sorted(i for i in static.values() if i not in set(beat.get("images", [])))
        detail = f" (static pod images not available: {', '.join(missing)})" if missing else ""
        raise Fail(
            "[kubelet-check] Initial timeout of 40s passed.\n\n"
            "Unfortunately, an error has occurred:\n\ttimed out waiting for the condition" + detail + "\n\n"
            "This error is likely caused by:\n\t- The kubelet is not running\n"
            "\t- The kubelet is unhealthy due to a misconfiguration of the node in some way (required cgroups disabled)\n\n"
            f"error execution phase {phase}: couldn't initialize a Kubernetes cluster\n{STACK_HINT}"
        )
    raise phase_error(phase, "error uploading crisocket: timed out waiting for the condition")


def wait_for_apiserver(env: Env, advertise: str, port: int, phase: str) -> None:
    """kubeadm's wait for the API server's /healthz (only when the kubelet double runs it)."""
    if not static_pods.enabled(env):
        return
    context = kubeadm_net.tls(env.path(f"{PKI}/ca.crt"))
    problem = kubeadm_net.wait_healthy(f"https://{advertise}:{port}/healthz", context,
                                       float(env.setting("wait_timeout", 240)))
    if problem:
        raise phase_error(phase, f"timed out waiting for the condition (API server /healthz: {problem})")


def add_etcd_member(env: Env, members: dict[str, str], advertise: str) -> None:
    out("[etcd] Announced new etcd member joining to the existing etcd cluster")
    context = kubeadm_net.tls(env.path(f"{PKI}/etcd/ca.crt"), env.path(f"{PKI}/apiserver-etcd-client.crt"),
                              env.path(f"{PKI}/apiserver-etcd-client.key"))
    problem = kubeadm_net.etcd_member_add([f"https://{address}:2379" for address in members.values()],
                                          f"https://{advertise}:2380", context)
    if problem:
        raise phase_error("control-plane-join/etcd", f"error creating local etcd static pod manifest file: {problem}")


def remove_etcd_member(env: Env, node: str) -> None:
    """kubeadm reset on a stacked-etcd control plane: its member leaves the etcd cluster."""
    state = env.state.read()
    others = [n["address"] for n in state.get("nodes", [])
              if n.get("role") == "control-plane" and not n.get("reset") and n["name"] != node]
    client = env.path(f"{PKI}/apiserver-etcd-client.crt")
    if not static_pods.enabled(env) or not others or not client.exists():
        return
    context = kubeadm_net.tls(env.path(f"{PKI}/etcd/ca.crt"), client, env.path(f"{PKI}/apiserver-etcd-client.key"))
    problem = kubeadm_net.etcd_member_remove([f"https://{a}:2379" for a in others], node, context)
    if problem:
        out(f"[reset] Failed to remove etcd member: {problem}\nPlease manually remove this etcd member using etcdctl")


# ---------------------------------------------------------------- commands


def new_token() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    pick = lambda n: "".join(secrets.choice(alphabet) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def record_token(data: dict[str, Any], token: str, ttl: float, description: str = "") -> None:
    data.setdefault("tokens", []).append(
        {
            "token": token,
            "expires": time.time() + ttl if ttl else None,
            "description": description,
            "usages": ["authentication", "signing"],
        }
    )


def upload_certs(env: Env, key: str) -> str:
    """The kubeadm-certs Secret: each shared certificate sealed with AES-GCM under ``key`` (2 h)."""
    key = key or secrets.token_hex(32)
    data = {}
    for name in SHARED_CERTS:
        path = env.path(f"{PKI}/{name}")
        if not path.exists():
            raise phase_error(
                "upload-certs",
                f"error uploading certs: open {PKI}/{name}: no such file or directory",
            )
        sealed = aes_gcm.seal(bytes.fromhex(key), path.read_bytes())
        data[name.replace("/", "-")] = base64.b64encode(sealed).decode()
    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "kubeadm-certs", "namespace": "kube-system"},
        "type": "Opaque",
        "data": data,
    }
    env.state.write_file("kubeadm-certs.json", json.dumps(secret).encode())
    with env.state.update() as state:
        state["certificate_key"] = {
            "key": key,
            "expires": time.time() + CERT_KEY_TTL,
            "node": env.hostname,
        }
    return key


def join_command(endpoint: str, token: str, hash_: str, key: str = "") -> str:
    line = f"kubeadm join {endpoint} --token {token} \\\n\t--discovery-token-ca-cert-hash {hash_}"
    if key:
        line += f" \\\n\t--control-plane --certificate-key {key}"
    return line


INIT_FLAGS = {
    "--config": "str",
    "--upload-certs": "bool",
    "--skip-phases": "list",
    "--ignore-preflight-errors": "list",
    "--certificate-key": "str",
    "--v": "str",
    "-v": "str",
    "--node-name": "str",
    "--kubernetes-version": "str",
    "--pod-network-cidr": "str",
    "--service-cidr": "str",
    "--apiserver-advertise-address": "str",
    "--apiserver-bind-port": "str",
    "--control-plane-endpoint": "str",
    "--image-repository": "str",
    "--cri-socket": "str",
    "--skip-token-print": "bool",
    "--token": "str",
    "--token-ttl": "str",
    "--skip-certificate-key-print": "bool",
    "--dry-run": "bool",
}


def init_config_from_flags(env: Env, flags: dict[str, Any]) -> Config:
    config = Config(env)
    config.init = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "InitConfiguration",
        "nodeRegistration": {},
        "localAPIEndpoint": {},
    }
    config.cluster = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
        "networking": {},
    }
    if "--node-name" in flags:
        config.init["nodeRegistration"]["name"] = flags["--node-name"]
    if "--cri-socket" in flags:
        config.init["nodeRegistration"]["criSocket"] = flags["--cri-socket"]
    if "--apiserver-advertise-address" in flags:
        config.init["localAPIEndpoint"]["advertiseAddress"] = flags["--apiserver-advertise-address"]
    if "--apiserver-bind-port" in flags:
        config.init["localAPIEndpoint"]["bindPort"] = int(flags["--apiserver-bind-port"])
    if "--certificate-key" in flags:
        config.init["certificateKey"] = flags["--certificate-key"]
    if "--token" in flags:
        config.init["bootstrapTokens"] = [{"token": flags["--token"]}]
    for flag, field in (
        ("--kubernetes-version", "kubernetesVersion"),
        ("--control-plane-endpoint", "controlPlaneEndpoint"),
        ("--image-repository", "imageRepository"),
    ):
        if flag in flags:
            config.cluster[field] = flags[flag]
    if "--pod-network-cidr" in flags:
        config.cluster["networking"]["podSubnet"] = flags["--pod-network-cidr"]
    if "--service-cidr" in flags:
        config.cluster["networking"]["serviceSubnet"] = flags["--service-cidr"]
    return config


def advertise_address(env: Env, init: dict[str, Any]) -> str:
    address = (init.get("localAPIEndpoint") or {}).get("advertiseAddress")
    if address:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise Fail(
                f'localAPIEndpoint.advertiseAddress: Invalid value: "{address}": must be a valid IP address\n{STACK_HINT}'
            ) from None
        return str(address)
    result = subprocess.run(
        ["ip", "-o", "-4", "addr", "show", "scope", "global"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    match = re.search(r"inet (\d+\.\d+\.\d+\.\d+)/", result.stdout)
    if not match:
        raise Fail(f"unable to select an IP from default routes.\n{STACK_HINT}")
    return match.group(1)


def skip_set(flag: list[str] | None, config_doc: dict[str, Any] | None, known: tuple[str, ...]) -> set[str]:
    phases = set(flag or []) or set((config_doc or {}).get("skipPhases") or [])
    for phase in phases:
        if phase not in known and not phase.startswith(("certs/", "kubeconfig/", "control-plane/", "etcd/")):
            raise Fail(f'invalid phase name "{phase}"\n{STACK_HINT}')
    return phases


def cmd_init(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if argv[:2] == ["phase", "upload-certs"]:
        return cmd_upload_certs(env, argv[2:], extra)
    if kubeadm_certs.cmd_init_phase(env, argv, extra):
        return None
    if argv and argv[0] == "phase":
        raise Fail(f"lab double: kubeadm init phase {' '.join(argv[1:2])} is not modelled", 2)
    flags, positional = parse_flags(argv, INIT_FLAGS)
    if positional:
        raise Fail(f'unknown command "{positional[0]}" for "kubeadm init"', 2)
    check_mixed_args(flags)
    config = (
        Config.from_file(env, flags["--config"])
        if "--config" in flags
        else init_config_from_flags(env, flags)
    )
    if "--config" in flags:
        extra["config_sha256"] = hashlib.sha256(config.text.encode()).hexdigest()
    init = config.init or {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "InitConfiguration"}
    config.init = init
    cluster = config.cluster or {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "ClusterConfiguration",
    }
    state = env.state.read()
    if not cluster.get("kubernetesVersion"):
        err(
            "W0000 version.go:104] could not fetch a Kubernetes version from the internet: unable to get URL "
            '"https://dl.k8s.io/release/stable-1.txt": dial tcp: lookup dl.k8s.io: no such host'
        )
        err(f"W0000 version.go:105] falling back to the local client version: v{env.version}")
        cluster["kubernetesVersion"] = f"v{env.version}"
    problems = validate_cluster(env, cluster) + validate_node_registration(config.node_registration())
    problems += validate_certificate_key(str(init.get("certificateKey") or ""), "certificateKey")
    problems += validate_component_configs(config)
    for i, token in enumerate(init.get("bootstrapTokens") or []):
        if not TOKEN.match(str(token.get("token", ""))):
            problems.append(
                f'bootstrapTokens[{i}].token: Invalid value: "...": the bootstrap token is invalid'
            )
    fail_validation(problems)
    skip = skip_set(flags.get("--skip-phases"), init, INIT_PHASES)
    version = normalize_version(str(cluster["kubernetesVersion"]))
    images = kubeadm_images(env, cluster)
    advertise = advertise_address(env, init)
    bind_port = int((init.get("localAPIEndpoint") or {}).get("bindPort") or 6443)
    node_name = config.node_name()
    runtime = Containerd(env, config.cri_socket())
    ignored = config.ignored(flags.get("--ignore-preflight-errors"))
    extra.update(node_name=node_name, command="init")
    out(f"[init] Using Kubernetes version: {version}")
    if "preflight" not in skip:
        out("[preflight] Running pre-flight checks")
        checks = control_plane_checks(env, bind_port, cluster)
        checks.insert(3, ("KubernetesVersion", kubernetes_version_check(env, version)))
        checks += common_checks(env, config, runtime, version)
        checks += ipv4_checks(env)
        run_checks(checks, ignored)
        out("[preflight] Pulling images required for setting up a Kubernetes cluster")
        out("[preflight] This might take a minute or two, depending on the speed of your internet connection")
        run_checks(
            [
                (
                    "ImagePull",
                    image_pull_check(
                        runtime,
                        list(images.values()),
                        config.node_registration().get("imagePullPolicy") or "IfNotPresent",
                    ),
                )
            ],
            ignored,
        )
    if state.get("init") and state["init"].get("node") != node_name:
        raise phase_error(
            "upload-config",
            f"lab double: the cluster was already initialised on {state['init']['node']}",
        )
    endpoint = endpoint_of(cluster, advertise, bind_port)
    if "certs" not in skip:
        out(f'[certs] Using certificateDir folder "{PKI}"')
        generate_pki(env, cluster, node_name, advertise)
    hash_ = ca_hash(env, env.path(f"{PKI}/ca.crt"))
    if "kubeconfig" not in skip:
        out('[kubeconfig] Using kubeconfig folder "/etc/kubernetes"')
        write_kubeconfigs(
            env,
            f"https://{endpoint}",
            ("admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"),
        )
    started = time.time()
    if "kubelet-start" not in skip:
        out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
        write_kubelet_files(env, config, cluster, images, node_name)
        start_kubelet(env)
    static: dict[str, str] = {}
    if "control-plane" not in skip or "etcd" not in skip:
        out(f'[control-plane] Using manifest folder "{MANIFESTS}"')
        static = write_static_pods(
            env, cluster, images, node_name, advertise, bind_port, etcd="etcd" in images and "etcd" not in skip
        )
    with env.state.update() as data:
        nodes = [n for n in data.get("nodes", []) if n["name"] != node_name]
        order = max([n["order"] for n in nodes], default=-1) + 1
        nodes.append(
            {
                "name": node_name,
                "role": "control-plane",
                "order": order,
                "joined": time.time(),
                "address": advertise,
                "bind_port": bind_port,
                "via": "init",
                "static_pods": static,
            }
        )
        data["nodes"] = nodes
        data["init"] = {
            "time": time.time(),
            "node": node_name,
            "kubernetesVersion": version,
            "imageRepository": cluster.get("imageRepository") or env.release["repository"],
            "podSubnet": (cluster.get("networking") or {}).get("podSubnet"),
            "serviceSubnet": cluster["networking"]["serviceSubnet"],
            "dnsDomain": cluster["networking"]["dnsDomain"],
            "controlPlaneEndpoint": cluster.get("controlPlaneEndpoint"),
            "endpoint": endpoint,
            "advertiseAddress": advertise,
            "bindPort": bind_port,
            "images": images,
            "ca_hash": hash_,
            "clusterName": cluster.get("clusterName") or "kubernetes",
            "proxyMode": config.proxy.get("mode") or "iptables",
            "cgroupDriver": config.cgroup_driver(),
            "addons": {
                "coredns": "addon" not in skip and "addon/coredns" not in skip,
                "kube-proxy": "addon" not in skip and "addon/kube-proxy" not in skip,
            },
            "skipPhases": sorted(skip),
            "config": {
                "init": init,
                "cluster": cluster,
                "kubeProxy": config.proxy or None,
                "kubelet": config.kubelet or None,
            },
        }
    env.state.write_file("ca.crt", env.path(f"{PKI}/ca.crt").read_bytes(), 0o644)
    env.state.write_file("ca.key", env.path(f"{PKI}/ca.key").read_bytes(), 0o600)  # the CSR signer's key
    out(
        f'[wait-control-plane] Waiting for the kubelet to boot up the control plane as static Pods from directory "{MANIFESTS}". This can take up to 4m0s'
    )
    wait_for_kubelet(env, node_name, static, started, "wait-control-plane")
    # kubeadm init waits with admin.conf's client: through controlPlaneEndpoint (the VIP and
    # haproxy in HA), so a wrong endpoint or a load balancer without this backend fails here
    host, _, port = endpoint.rpartition(":")
    wait_for_apiserver(env, host, int(port), "wait-control-plane")
    out(
        '[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the "kube-system" Namespace'
    )
    key = str(init.get("certificateKey") or "")
    if flags.get("--upload-certs") and "upload-certs" not in skip:
        out(
            '[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace'
        )
        key = upload_certs(env, key)
        out("[upload-certs] Using certificate key:")
        out(key)
    out(
        f"[mark-control-plane] Marking the node {node_name} as control-plane by adding the labels: "
        "[node-role.kubernetes.io/control-plane node.kubernetes.io/exclude-from-external-load-balancers]"
    )
    token = str(((init.get("bootstrapTokens") or [{}])[0]).get("token") or new_token())
    ttl = parse_duration(str(((init.get("bootstrapTokens") or [{}])[0]).get("ttl") or "24h"))
    if "bootstrap-token" not in skip:
        out(f"[bootstrap-token] Using token: {token}")
        with env.state.update() as data:
            if token not in [t["token"] for t in data.get("tokens", [])]:
                record_token(data, token, ttl, "default bootstrap token generated by 'kubeadm init'")
        problem = publish_discovery(env)
        if problem:
            raise phase_error("bootstrap-token", f"error creating bootstrap token or cluster-info: {problem}")
        out('[bootstrap-token] Creating the "cluster-info" ConfigMap in the "kube-public" namespace')
    problem = publish_addons(env)
    if problem:
        raise phase_error("addon", f"unable to create or update the addons: {problem}")
    if "addon/coredns" not in skip and "addon" not in skip:
        out("[addons] Applied essential addon: CoreDNS")
    if "addon/kube-proxy" not in skip and "addon" not in skip:
        out("[addons] Applied essential addon: kube-proxy")
    out("\nYour Kubernetes control-plane has initialized successfully!\n")
    out("To start using your cluster, you need to run the following as a regular user:\n")
    out(
        "  mkdir -p $HOME/.kube\n  sudo cp -i /etc/kubernetes/admin.conf $HOME/.kube/config\n"
        "  sudo chown $(id -u):$(id -g) $HOME/.kube/config\n"
    )
    out(
        "Alternatively, if you are the root user, you can run:\n\n  export KUBECONFIG=/etc/kubernetes/admin.conf\n"
    )
    out(
        "You should now deploy a pod network to the cluster.\n"
        'Run "kubectl apply -f [podnetwork].yaml" with one of the options listed at:\n'
        "  https://kubernetes.io/docs/concepts/cluster-administration/addons/\n"
    )
    if flags.get("--skip-token-print"):
        return
    if cluster.get("controlPlaneEndpoint"):
        shown_key = (
            key if flags.get("--upload-certs") and not flags.get("--skip-certificate-key-print") else ""
        )
        out(
            "You can now join any number of the control-plane node running the following command on each as root:\n"
        )
        out("  " + join_command(endpoint, token, hash_, shown_key) + "\n")
        if shown_key:
            out(
                "Please note that the certificate-key gives access to cluster sensitive data, keep it secret!\n"
                "As a safeguard, uploaded-certs will be deleted in two hours; If necessary, you can use\n"
                '"kubeadm init phase upload-certs --upload-certs" to reload certs afterward.\n'
            )
    out("Then you can join any number of worker nodes by running the following on each as root:\n")
    out(join_command(endpoint, token, hash_))


def admin_guard(env: Env, flags: dict[str, Any]) -> dict[str, Any]:
    """Commands that talk to the API server need this node's admin kubeconfig and an initialised cluster."""
    path = flags.get("--kubeconfig") or str(env.path("/etc/kubernetes/admin.conf"))
    if not Path(path).exists():
        raise Fail(f"failed to load admin kubeconfig: open {path}: no such file or directory\n{STACK_HINT}")
    state = env.state.read()
    if not state.get("init"):
        raise Fail(
            "couldn't create a Kubernetes client from file: the cluster has no API server (not initialised)"
        )
    return state


def cmd_upload_certs(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, _ = parse_flags(
        argv,
        {
            "--upload-certs": "bool",
            "--certificate-key": "str",
            "--config": "str",
            "--kubeconfig": "str",
            "--skip-certificate-key-print": "bool",
            "--v": "str",
        },
    )
    extra["command"] = "init phase upload-certs"
    admin_guard(env, flags)
    if not flags.get("--upload-certs"):
        out("[upload-certs] Skipping phase. Please see --upload-certs")
        return
    key = flags.get("--certificate-key", "")
    if "--config" in flags:
        config = Config.from_file(env, flags["--config"])
        key = key or str((config.init or {}).get("certificateKey") or "")
    fail_validation(validate_certificate_key(key, "certificate-key"))
    out('[upload-certs] Storing the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace')
    key = upload_certs(env, key)
    if not flags.get("--skip-certificate-key-print"):
        out("[upload-certs] Using certificate key:")
        out(key)


JOIN_FLAGS = {
    "--config": "str",
    "--token": "str",
    "--discovery-token": "str",
    "--tls-bootstrap-token": "str",
    "--discovery-token-ca-cert-hash": "multi",
    "--discovery-token-unsafe-skip-ca-verification": "bool",
    "--control-plane": "bool",
    "--certificate-key": "str",
    "--apiserver-advertise-address": "str",
    "--apiserver-bind-port": "str",
    "--node-name": "str",
    "--cri-socket": "str",
    "--ignore-preflight-errors": "list",
    "--skip-phases": "list",
    "--v": "str",
    "-v": "str",
    "--dry-run": "bool",
}


def join_config_from_flags(env: Env, flags: dict[str, Any], positional: list[str]) -> Config:
    config = Config(env)
    token = flags.get("--discovery-token") or flags.get("--token") or ""
    join: dict[str, Any] = {
        "apiVersion": "kubeadm.k8s.io/v1beta3",
        "kind": "JoinConfiguration",
        "nodeRegistration": {},
        "discovery": {
            "bootstrapToken": {
                "token": token,
                "apiServerEndpoint": positional[0] if positional else "",
                "caCertHashes": flags.get("--discovery-token-ca-cert-hash") or [],
                "unsafeSkipCAVerification": bool(flags.get("--discovery-token-unsafe-skip-ca-verification")),
            }
        },
    }
    if "--node-name" in flags:
        join["nodeRegistration"]["name"] = flags["--node-name"]
    if "--cri-socket" in flags:
        join["nodeRegistration"]["criSocket"] = flags["--cri-socket"]
    if flags.get("--control-plane"):
        join["controlPlane"] = {
            "localAPIEndpoint": {},
            "certificateKey": flags.get("--certificate-key", ""),
        }
        if "--apiserver-advertise-address" in flags:
            join["controlPlane"]["localAPIEndpoint"]["advertiseAddress"] = flags[
                "--apiserver-advertise-address"
            ]
        if "--apiserver-bind-port" in flags:
            join["controlPlane"]["localAPIEndpoint"]["bindPort"] = int(flags["--apiserver-bind-port"])
    config.join = join
    return config


def api_write(env: Env, write: Callable[[Path, Path, dict[str, Any]], str]) -> str:
    """``write(admin.conf, client credentials dir, recorded state)`` when the kubelet double runs
    the API server, retried as kubeadm retries its API writes (APICallRetryInterval 500 ms,
    APICallWithWriteTimeout 40 s: through a load balancer the new API server may not be a
    healthy backend yet); "" or why it failed."""
    state = env.state.read()
    admin = env.path("/etc/kubernetes/admin.conf")
    if not static_pods.enabled(env) or not state.get("init") or not admin.exists():
        return ""
    deadline = time.monotonic() + 40
    while True:
        problem = write(admin, env.path("/etc/kubernetes/tmp/kubeadm-client"), state)
        if not problem or time.monotonic() >= deadline:
            return problem
        time.sleep(0.5)


def publish_discovery(env: Env, cluster_info: bool = True) -> str:
    """The token Secrets in the API, and cluster-info with ``cluster_info`` (kubeadm_discovery.py)."""
    ca_pem = env.path(f"{PKI}/ca.crt").read_bytes() if env.path(f"{PKI}/ca.crt").exists() else b""
    return api_write(env, lambda admin, credentials, state: kubeadm_discovery.publish(
        admin, credentials, ca_pem, f"https://{state['init']['endpoint']}", state.get("tokens", []),
        cluster_info=cluster_info))


def publish_addons(env: Env) -> str:
    """kube-proxy and CoreDNS as the API's objects (kubeadm_addons.py)."""
    return api_write(env, lambda admin, credentials, state: kubeadm_addons.publish(
        admin, credentials, state["init"]))


def network_discovery(env: Env, join: dict[str, Any], bootstrap: dict[str, Any]) -> None:
    """kubeadm's token discovery against the endpoint (kubeadm_discovery.py), retried until the timeout."""
    timeout = parse_duration(str((join.get("discovery") or {}).get("timeout")
                                 or env.setting("discovery_timeout", "5m0s")))
    try:
        kubeadm_discovery.discover(str(bootstrap.get("apiServerEndpoint")), str(bootstrap.get("token")),
                                   [str(h) for h in bootstrap.get("caCertHashes") or []],
                                   str(env.setting("openssl", "openssl")), timeout, err)
    except kubeadm_discovery.DiscoveryError as error:
        raise phase_error("preflight", f"couldn't validate the identity of the API Server: {error}") from None


def known_endpoints(state: dict[str, Any]) -> set[str]:
    init = state.get("init") or {}
    endpoints = {init.get("endpoint", "")}
    for node in state.get("nodes", []):
        if node["role"] == "control-plane" and not node.get("reset"):
            endpoints.add(f"{node['address']}:{node.get('bind_port', 6443)}")
    return {e for e in endpoints if e}


def discovery(state: dict[str, Any], bootstrap: dict[str, Any]) -> None:
    endpoint = str(bootstrap.get("apiServerEndpoint") or "")
    url = f"https://{endpoint}/api/v1/namespaces/kube-public/configmaps/cluster-info?timeout=10s"
    if not state.get("init") or endpoint not in known_endpoints(state):
        raise phase_error(
            "preflight",
            f'couldn\'t validate the identity of the API Server: Get "{url}": '
            f"dial tcp {endpoint}: connect: connection refused",
        )
    token = str(bootstrap.get("token"))
    record = next((t for t in state.get("tokens", []) if t["token"] == token), None)
    if record is None or (record["expires"] is not None and record["expires"] < time.time()):
        raise phase_error(
            "preflight",
            "couldn't validate the identity of the API Server: could not find a JWS "
            f'signature in the cluster-info ConfigMap for token ID "{token.split(".")[0]}"',
        )
    hashes = [str(h) for h in bootstrap.get("caCertHashes") or []]
    if hashes and state["init"]["ca_hash"] not in hashes:
        raise phase_error(
            "preflight",
            "couldn't validate the identity of the API Server: cluster CA found in "
            f'cluster-info ConfigMap is invalid: none of the public keys "{state["init"]["ca_hash"]}" are pinned',
        )


def cmd_join(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(argv, JOIN_FLAGS)
    check_mixed_args(flags)
    if "--config" in flags:
        if positional:
            raise Fail(f"can not mix '--config' with arguments [{positional[0]}]\n{STACK_HINT}")
        config = Config.from_file(env, flags["--config"])
        extra["config_sha256"] = hashlib.sha256(config.text.encode()).hexdigest()
        if config.join is None:
            raise Fail(
                f"no JoinConfiguration kind was found in the YAML file {flags['--config']}\n{STACK_HINT}"
            )
        for kind, doc in (
            ("InitConfiguration", config.init),
            ("ClusterConfiguration", config.cluster),
        ):
            if doc is not None:
                err(
                    f"[config] WARNING: Ignored YAML document with GroupVersionKind kubeadm.k8s.io/v1beta3, Kind={kind}"
                )
    else:
        config = join_config_from_flags(env, flags, positional)
    join = config.join or {}
    disc = join.get("discovery") or {}
    bootstrap = disc.get("bootstrapToken")
    problems = validate_node_registration(config.node_registration())
    if not bootstrap and not disc.get("file"):
        problems.append('discovery: Invalid value: "": bootstrapToken or file must be set')
    if bootstrap:
        if not TOKEN.match(str(bootstrap.get("token") or "")):
            problems.append(
                'discovery.bootstrapToken.token: Invalid value: "": the bootstrap token is invalid'
            )
        if not bootstrap.get("apiServerEndpoint"):
            problems.append(
                'discovery.bootstrapToken.apiServerEndpoint: Invalid value: "": the apiServerEndpoint must be set'
            )
        if not bootstrap.get("caCertHashes") and not bootstrap.get("unsafeSkipCAVerification"):
            problems.append(
                'discovery.bootstrapToken: Invalid value: "": using token-based discovery without caCertHashes '
                "can be unsafe. Set unsafeSkipCAVerification as true in your kubeadm config file or pass "
                "--discovery-token-unsafe-skip-ca-verification flag to continue"
            )
    control_plane = join.get("controlPlane")
    key = str((control_plane or {}).get("certificateKey") or "")
    problems += validate_certificate_key(key, "controlPlane.certificateKey")
    fail_validation(problems)
    if disc.get("file"):
        raise Fail("lab double: file-based discovery is not modelled; use discovery.bootstrapToken", 2)
    skip = skip_set(flags.get("--skip-phases"), join, JOIN_PHASES)
    node_name = config.node_name()
    role = "control-plane" if control_plane is not None else "worker"
    extra.update(node_name=node_name, command="join", role=role)
    runtime = Containerd(env, config.cri_socket())
    ignored = config.ignored(flags.get("--ignore-preflight-errors"))
    state = env.state.read()
    cluster = ((state.get("init") or {}).get("config") or {}).get("cluster") or {}
    if "preflight" not in skip:
        out("[preflight] Running pre-flight checks")
        checks = [
            dir_available(env, MANIFESTS),
            file_available(env, "/etc/kubernetes/kubelet.conf"),
            file_available(env, "/etc/kubernetes/bootstrap-kubelet.conf"),
        ]
        checks += common_checks(env, config, runtime, "")
        if control_plane is None:
            checks.append(file_available(env, join.get("caCertPath") or f"{PKI}/ca.crt"))
        host = str(bootstrap.get("apiServerEndpoint", "")).rpartition(":")[0].strip("[]")
        try:
            if ipaddress.ip_address(host).version == 4:
                checks += ipv4_checks(env)
        except ValueError:
            pass  # a DNS name: kubeadm adds no IPv4 file-content checks then
        run_checks(checks, ignored)
    if static_pods.enabled(env) and state.get("init"):
        network_discovery(env, join, bootstrap)
    else:
        discovery(state, bootstrap)
    existing = next(
        (n for n in state.get("nodes", []) if n["name"] == node_name and not n.get("reset")), None
    )
    if existing:
        ready, _ = clustermodel.node_ready(state, env.state.heartbeats(), node_name, time.time())
        status = "Ready" if ready else "NotReady"
        if ready or existing.get("role") == "control-plane":
            raise phase_error(
                "kubelet-start",
                f'a Node with name "{node_name}" and status "{status}" already exists in the cluster. '
                "You must delete the existing Node or change the name of this new joining Node",
            )
    images = state["init"]["images"]
    advertise = ""
    bind_port = 6443
    static: dict[str, str] = {}
    if control_plane is not None:
        if not state["init"].get("controlPlaneEndpoint"):
            raise phase_error(
                "preflight",
                "\nOne or more conditions for hosting a new control plane instance is not satisfied.\n\n"
                "unable to add a new control plane instance to a cluster that doesn't have a stable "
                "controlPlaneEndpoint address\n\nPlease ensure that:\n"
                "* The cluster has a stable controlPlaneEndpoint address.\n"
                "* The certificates that must be shared among control plane instances are provided.\n",
            )
        endpoint_cfg = control_plane.get("localAPIEndpoint") or {}
        advertise = advertise_address(env, {"localAPIEndpoint": endpoint_cfg})
        bind_port = int(endpoint_cfg.get("bindPort") or 6443)
        out("[preflight] Running pre-flight checks before initializing the new control plane instance")
        if "preflight" not in skip:
            run_checks(control_plane_checks(env, bind_port, cluster) + ipv4_checks(env), ignored)
            out("[preflight] Pulling images required for setting up a Kubernetes cluster")
            cp_images = [v for k, v in images.items()]
            run_checks(
                [
                    (
                        "ImagePull",
                        image_pull_check(
                            runtime,
                            cp_images,
                            config.node_registration().get("imagePullPolicy") or "IfNotPresent",
                        ),
                    )
                ],
                ignored,
            )
        download_certs(env, key)
        generate_pki(env, cluster, node_name, advertise)
    else:
        env.path(PKI).mkdir(parents=True, exist_ok=True)
        write_atomic(env.path(join.get("caCertPath") or f"{PKI}/ca.crt"), env.state.read_file("ca.crt"))
    with env.state.update() as data:
        nodes = [n for n in data.get("nodes", []) if n["name"] != node_name]
        order = max([n["order"] for n in data.get("nodes", [])], default=-1) + 1
        data["nodes"] = nodes + [
            {
                "name": node_name,
                "role": role,
                "order": order,
                "joined": time.time(),
                "address": advertise,
                "bind_port": bind_port,
                "via": "join",
                "static_pods": {},
            }
        ]
    started = time.time()
    endpoint = state["init"]["endpoint"]
    if control_plane is not None:
        out('[certs] Using certificateDir folder "/etc/kubernetes/pki"')
        write_kubeconfigs(
            env,
            f"https://{endpoint}",
            ("admin.conf", "kubelet.conf", "controller-manager.conf", "scheduler.conf"),
        )
        members = {n["name"]: n["address"] for n in state.get("nodes", [])
                   if n.get("role") == "control-plane" and not n.get("reset") and n["name"] != node_name}
        if static_pods.enabled(env) and "etcd" in images:
            add_etcd_member(env, members, advertise)
        static = write_static_pods(
            env, cluster, images, node_name, advertise, bind_port, etcd="etcd" in images, members=members
        )
        with env.state.update() as data:
            for node in data["nodes"]:
                if node["name"] == node_name:
                    node["static_pods"] = static
    else:
        write_kubeconfigs_from_cluster_ca(env, endpoint, node_name)
    out('[kubelet-start] Writing kubelet configuration to file "/var/lib/kubelet/config.yaml"')
    kubelet_cfg = Config(env)
    kubelet_cfg.kubelet = ((state["init"].get("config") or {}).get("kubelet")) or {}
    kubelet_cfg.join = join
    write_kubelet_files(env, kubelet_cfg, cluster, images, node_name)
    start_kubelet(env)
    out("[kubelet-start] Waiting for the kubelet to perform the TLS Bootstrap...")
    wait_for_kubelet(env, node_name, static, started, "kubelet-start")
    if control_plane is not None:
        wait_for_apiserver(env, advertise, bind_port, "control-plane-join")
    if control_plane is not None:
        out("\nThis node has joined the cluster and a new control plane instance was created:\n")
        out(
            "* Certificate signing request was sent to apiserver and approval was received.\n"
            "* The Kubelet was informed of the new secure connection details.\n"
            "* Control plane label and taint were applied to the new node.\n"
            "* The Kubernetes control plane instances scaled up.\n"
            "* A new etcd member was added to the local/stacked etcd cluster.\n"
        )
    else:
        out(
            "\nThis node has joined the cluster:\n"
            "* Certificate signing request was sent to apiserver and a response was received.\n"
            "* The Kubelet was informed of the new secure connection details.\n\n"
            "Run 'kubectl get nodes' on the control-plane to see this node join the cluster.\n"
        )


def write_kubeconfigs_from_cluster_ca(env: Env, endpoint: str, node: str) -> None:
    """A worker's kubelet.conf: the cluster CA from cluster-info, a client cert the CSR signer issued."""
    with tempfile.TemporaryDirectory() as tmp:
        ca_crt, ca_key = Path(tmp, "ca.crt"), Path(tmp, "ca.key")
        ca_crt.write_bytes(env.state.read_file("ca.crt"))
        ca_key.write_bytes(env.state.read_file("ca.key"))
        cert, key = make_client_cert(env, ca_crt, ca_key, f"/O=system:nodes/CN=system:node:{node}")
        write_atomic(
            env.path("/etc/kubernetes/kubelet.conf"),
            kubeconfig(f"https://{endpoint}", ca_crt.read_bytes(), f"system:node:{node}", cert, key),
            0o600,
        )


def download_certs(env: Env, key: str) -> None:
    """Control-plane join: the shared certs come from kubeadm-certs (key, 2h) or must be on disk."""
    if not key:
        if not env.path(f"{PKI}/ca.crt").exists():
            raise phase_error(
                "preflight",
                "\nOne or more conditions for hosting a new control plane instance is not satisfied.\n\n"
                f"[failure loading certificate for CA: couldn't load the certificate file {PKI}/ca.crt: "
                f"open {PKI}/ca.crt: no such file or directory]\n\nPlease ensure that:\n"
                "* The cluster has a stable controlPlaneEndpoint address.\n"
                "* The certificates that must be shared among control plane instances are provided.\n",
            )
        return
    state = env.state.read()
    stored = state.get("certificate_key")
    secret = env.state.dir / "kubeadm-certs.json"
    if not stored or stored["expires"] < time.time() or not secret.exists():
        raise phase_error(
            "control-plane-prepare/download-certs",
            'error downloading certs: error downloading the secret: Secret "kubeadm-certs" was not found in the '
            '"kube-system" Namespace. This Secret might have expired. Please, run `kubeadm init phase '
            "upload-certs --upload-certs` on a control plane to generate a new one",
        )
    out(
        '[download-certs] Downloading the certificates in Secret "kubeadm-certs" in the "kube-system" Namespace'
    )
    data = json.loads(secret.read_text())["data"]
    opened = {}
    for name in SHARED_CERTS:
        try:
            opened[name] = aes_gcm.open_sealed(bytes.fromhex(key), base64.b64decode(data[name.replace("/", "-")]))
        except aes_gcm.AuthenticationFailed as error:
            raise phase_error(
                "control-plane-prepare/download-certs",
                f"error downloading certs: error decoding secret data with provided key: {error}",
            ) from None
    for name, content in opened.items():
        write_atomic(env.path(f"{PKI}/{name}"), content, 0o600 if name.endswith(".key") else 0o644)


def cmd_token(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(
        argv,
        {
            "--print-join-command": "bool",
            "--ttl": "str",
            "--certificate-key": "str",
            "--config": "str",
            "--kubeconfig": "str",
            "--description": "str",
            "--usages": "list",
            "--groups": "list",
            "--v": "str",
        },
    )
    if not positional or positional[0] not in ("create", "list", "delete", "generate"):
        raise Fail('lab double: kubeadm token supports "create", "list", "delete" and "generate"', 2)
    extra["command"] = f"token {positional[0]}"
    if positional[0] == "generate":
        out(new_token())
        return
    state = admin_guard(env, flags)
    if positional[0] == "list":
        out(
            "TOKEN                     TTL         EXPIRES                USAGES                   DESCRIPTION"
        )
        for token in state.get("tokens", []):
            left = (
                "<forever>"
                if token["expires"] is None
                else f"{max(0, int((token['expires'] - time.time()) // 3600))}h"
            )
            out(
                f"{token['token']:<25} {left:<11} {'':<22} {','.join(token['usages']):<24} {token['description']}"
            )
        return
    if positional[0] == "delete":
        with env.state.update() as data:
            ids = {p.split(".")[0] for p in positional[1:]}
            data["tokens"] = [t for t in data.get("tokens", []) if t["token"].split(".")[0] not in ids]
        problem = publish_discovery(env, cluster_info=False)
        if problem:
            raise Fail(f"failed to delete bootstrap token: {problem}")
        for token_id in positional[1:]:
            out(f'bootstrap token "{token_id.split(".")[0]}" deleted')
        return
    token = positional[1] if len(positional) > 1 else new_token()
    if not TOKEN.match(token):
        raise Fail(
            f'the bootstrap token "{token}" was not of the form "[a-z0-9]{{6}}.[a-z0-9]{{16}}"\n{STACK_HINT}'
        )
    key = flags.get("--certificate-key", "")
    fail_validation(validate_certificate_key(key, "certificate-key"))
    ttl = parse_duration(flags.get("--ttl", "24h0m0s"))
    with env.state.update() as data:
        record_token(data, token, ttl, flags.get("--description", ""))
    problem = publish_discovery(env, cluster_info=False)  # kubeadm's token create writes the Secret only
    if problem:
        raise Fail(f"failed to create or update bootstrap token with name bootstrap-token-{token[:6]}: {problem}")
    if flags.get("--print-join-command"):
        init = state["init"]
        out(join_command(init["endpoint"], token, init["ca_hash"], key).replace(" \\\n\t", " ") + " ")
    else:
        out(token)


def cmd_reset(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, _ = parse_flags(
        argv,
        {
            "-f": "bool",
            "--force": "bool",
            "--cri-socket": "str",
            "--ignore-preflight-errors": "list",
            "--v": "str",
            "--kubeconfig": "str",
            "--cert-dir": "str",
            "--skip-phases": "list",
        },
    )
    extra["command"] = "reset"
    if not (flags.get("-f") or flags.get("--force")):
        sys.stdout.write("[reset] Are you sure you want to proceed? [y/N]: ")
        sys.stdout.flush()
        answer = sys.stdin.readline().strip().lower()
        if answer not in ("y", "yes"):
            raise Fail("aborted reset operation")
    out("[preflight] Running pre-flight checks")
    node = env.hostname
    flag_file = read_text(env.path("/var/lib/kubelet/kubeadm-flags.env")) or ""
    match = re.search(r"--hostname-override=([^\s\"]+)", flag_file)
    if match:
        node = match.group(1)
    extra["node_name"] = node
    if systemd_running(env):
        out("[reset] Stopping the kubelet service")
        subprocess.run(["systemctl", "stop", "kubelet"], capture_output=True, timeout=60)
    remove_etcd_member(env, node)
    removed = []
    for path in (MANIFESTS, PKI, "/var/lib/etcd", "/var/lib/kubelet"):
        target = env.path(path)
        if target.is_dir():
            for child in target.iterdir():
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
            removed.append(path)
    for name in (
        "admin.conf",
        "kubelet.conf",
        "bootstrap-kubelet.conf",
        "controller-manager.conf",
        "scheduler.conf",
    ):
        target = env.path(f"/etc/kubernetes/{name}")
        if target.exists():
            target.unlink()
    out(f"[reset] Deleting contents of directories: {removed}")
    with env.state.update() as data:
        for item in data.get("nodes", []):
            if item["name"] == node:
                item["reset"] = True
        live = [n for n in data.get("nodes", []) if n["role"] == "control-plane" and not n.get("reset")]
        if data.get("init") and not live:
            # the last control plane's etcd data is gone: so is the cluster (tokens, objects, nodes)
            for key in ("init", "tokens", "certificate_key", "nodes", "objects", "applied"):
                data.pop(key, None)
    heartbeat = env.state.heartbeat_path(node)
    if heartbeat.exists():
        heartbeat.unlink()
    out("\nThe reset process does not clean CNI configuration. To do so, you must remove /etc/cni/net.d")


def cmd_config(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if argv[:1] != ["images"] or len(argv) < 2 or argv[1] not in ("list", "pull"):
        raise Fail('lab double: only "kubeadm config images list|pull" is modelled', 2)
    flags, _ = parse_flags(
        argv[2:],
        {
            "--config": "str",
            "--kubernetes-version": "str",
            "--image-repository": "str",
            "-o": "str",
            "--output": "str",
            "--cri-socket": "str",
            "--v": "str",
        },
    )
    extra["command"] = f"config images {argv[1]}"
    if "--config" in flags:
        config = Config.from_file(env, flags["--config"])
    else:
        config = init_config_from_flags(env, flags)
    cluster = config.cluster or {}
    fail_validation(validate_cluster(env, cluster))
    images = kubeadm_images(env, cluster)
    if argv[1] == "list":
        for image in images.values():
            out(image)
        return
    runtime = Containerd(env, config.cri_socket())
    for image in images.values():
        error = runtime.pull(image)
        if error:
            raise Fail(f'failed to pull image "{image}": output: {error}, error: exit status 1\n{STACK_HINT}')
        out(f"[config/images] Pulled {image}")


def cmd_version(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, _ = parse_flags(argv, {"-o": "str", "--output": "str"})
    fmt = flags.get("-o") or flags.get("--output") or ""
    version = f"v{env.version}"
    major, minor, _ = env.version.split(".")
    info = {
        "major": major,
        "minor": minor,
        "gitVersion": version,
        "gitCommit": "lab-double",
        "gitTreeState": "clean",
        "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "none (lab double)",
        "compiler": "gc",
        "platform": "linux/amd64",
    }
    if fmt == "short":
        out(version)
    elif fmt == "json":
        out(json.dumps({"clientVersion": info}, indent=2))
    elif fmt == "yaml":
        out(yaml.safe_dump({"clientVersion": info}, sort_keys=False).rstrip())
    elif fmt == "":
        out(
            f'kubeadm version: &version.Info{{Major:"{major}", Minor:"{minor}", GitVersion:"{version}", '
            'GitCommit:"lab-double", GitTreeState:"clean", BuildDate:"1970-01-01T00:00:00Z", '
            'GoVersion:"none (lab double)", Compiler:"gc", Platform:"linux/amd64"}'
        )
    else:
        raise Fail(f"error: invalid output format: {fmt}", 1)


def cmd_upgrade(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    import kubeadm_upgrade  # it imports this module's helpers

    kubeadm_upgrade.handle(env, argv, extra)


COMMANDS = {
    "init": cmd_init,
    "upgrade": cmd_upgrade,
    "join": cmd_join,
    "token": cmd_token,
    "reset": cmd_reset,
    "certs": kubeadm_certs.cmd_certs,
    "config": cmd_config,
    "version": cmd_version,
}


def handle(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if not argv or argv[0] not in COMMANDS:
        raise Fail(
            f"lab double: kubeadm {argv[0] if argv else ''} is not modelled; "
            f"supported: {', '.join(sorted(COMMANDS))}",
            2,
        )
    COMMANDS[argv[0]](env, argv[1:], extra)

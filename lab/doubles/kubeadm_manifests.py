"""The commands kubeadm 1.25 writes into the control plane's static pod manifests.

From cmd/kubeadm/app/phases/controlplane/manifests.go (getAPIServerCommand,
getControllerManagerCommand, getSchedulerCommand) and phases/etcd/local.go
(getEtcdCommand): kubeadm's defaults, then the ClusterConfiguration's extraArgs over them,
as ``--name=value`` sorted by name. The kubelet double runs the API server stand-in and a
real etcd from these commands, so a wrong path or flag here fails the lab.
"""

from __future__ import annotations

from typing import Any

PKI = "/etc/kubernetes/pki"


def command(program: str, defaults: dict[str, str], extra: dict[str, Any] | None) -> list[str]:
    merged = {**defaults, **{str(k): str(v) for k, v in (extra or {}).items()}}
    return [program, *(f"--{k}={v}" for k, v in sorted(merged.items()))]


def apiserver(cluster: dict[str, Any], advertise: str, port: int) -> list[str]:
    net = cluster.get("networking") or {}
    domain = net.get("dnsDomain") or "cluster.local"
    external = ((cluster.get("etcd") or {}).get("external")) or {}
    defaults = {
        "advertise-address": advertise,
        "allow-privileged": "true",
        "authorization-mode": "Node,RBAC",
        "client-ca-file": f"{PKI}/ca.crt",
        "enable-admission-plugins": "NodeRestriction",
        "enable-bootstrap-token-auth": "true",
        "etcd-cafile": external.get("caFile") or f"{PKI}/etcd/ca.crt",
        "etcd-certfile": external.get("certFile") or f"{PKI}/apiserver-etcd-client.crt",
        "etcd-keyfile": external.get("keyFile") or f"{PKI}/apiserver-etcd-client.key",
        "etcd-servers": ",".join(external.get("endpoints") or ["https://127.0.0.1:2379"]),
        "kubelet-client-certificate": f"{PKI}/apiserver-kubelet-client.crt",
        "kubelet-client-key": f"{PKI}/apiserver-kubelet-client.key",
        "kubelet-preferred-address-types": "InternalIP,ExternalIP,Hostname",
        "proxy-client-cert-file": f"{PKI}/front-proxy-client.crt",
        "proxy-client-key-file": f"{PKI}/front-proxy-client.key",
        "requestheader-allowed-names": "front-proxy-client",
        "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
        "requestheader-extra-headers-prefix": "X-Remote-Extra-",
        "requestheader-group-headers": "X-Remote-Group",
        "requestheader-username-headers": "X-Remote-User",
        "secure-port": str(port),
        "service-account-issuer": f"https://kubernetes.default.svc.{domain}",
        "service-account-key-file": f"{PKI}/sa.pub",
        "service-account-signing-key-file": f"{PKI}/sa.key",
        "service-cluster-ip-range": str(net.get("serviceSubnet") or "10.96.0.0/12"),
        "tls-cert-file": f"{PKI}/apiserver.crt",
        "tls-private-key-file": f"{PKI}/apiserver.key",
    }
    return command("kube-apiserver", defaults, (cluster.get("apiServer") or {}).get("extraArgs"))


def controller_manager(cluster: dict[str, Any]) -> list[str]:
    net = cluster.get("networking") or {}
    defaults = {
        "authentication-kubeconfig": "/etc/kubernetes/controller-manager.conf",
        "authorization-kubeconfig": "/etc/kubernetes/controller-manager.conf",
        "bind-address": "127.0.0.1",
        "client-ca-file": f"{PKI}/ca.crt",
        "cluster-name": str(cluster.get("clusterName") or "kubernetes"),
        "cluster-signing-cert-file": f"{PKI}/ca.crt",
        "cluster-signing-key-file": f"{PKI}/ca.key",
        "controllers": "*,bootstrapsigner,tokencleaner",
        "kubeconfig": "/etc/kubernetes/controller-manager.conf",
        "leader-elect": "true",
        "requestheader-client-ca-file": f"{PKI}/front-proxy-ca.crt",
        "root-ca-file": f"{PKI}/ca.crt",
        "service-account-private-key-file": f"{PKI}/sa.key",
        "use-service-account-credentials": "true",
    }
    if net.get("podSubnet"):
        defaults.update({"allocate-node-cidrs": "true", "cluster-cidr": str(net["podSubnet"])})
    if net.get("serviceSubnet"):
        defaults["service-cluster-ip-range"] = str(net["serviceSubnet"])
    return command("kube-controller-manager", defaults, (cluster.get("controllerManager") or {}).get("extraArgs"))


def scheduler(cluster: dict[str, Any]) -> list[str]:
    defaults = {
        "authentication-kubeconfig": "/etc/kubernetes/scheduler.conf",
        "authorization-kubeconfig": "/etc/kubernetes/scheduler.conf",
        "bind-address": "127.0.0.1",
        "kubeconfig": "/etc/kubernetes/scheduler.conf",
        "leader-elect": "true",
    }
    return command("kube-scheduler", defaults, (cluster.get("scheduler") or {}).get("extraArgs"))


def etcd(cluster: dict[str, Any], node: str, advertise: str, members: dict[str, str] | None = None) -> list[str]:
    """``members`` (name -> advertise address) for a control-plane join: state ``existing``."""
    local = ((cluster.get("etcd") or {}).get("local")) or {}
    peers = {**(members or {}), node: advertise}
    defaults = {
        "advertise-client-urls": f"https://{advertise}:2379",
        "cert-file": f"{PKI}/etcd/server.crt",
        "client-cert-auth": "true",
        "data-dir": str(local.get("dataDir") or "/var/lib/etcd"),
        "experimental-initial-corrupt-check": "true",
        "experimental-watch-progress-notify-interval": "5s",
        "initial-advertise-peer-urls": f"https://{advertise}:2380",
        "initial-cluster": ",".join(f"{name}=https://{address}:2380" for name, address in peers.items()),
        "key-file": f"{PKI}/etcd/server.key",
        "listen-client-urls": f"https://127.0.0.1:2379,https://{advertise}:2379",
        "listen-metrics-urls": "http://127.0.0.1:2381",
        "listen-peer-urls": f"https://{advertise}:2380",
        "name": node,
        "peer-cert-file": f"{PKI}/etcd/peer.crt",
        "peer-client-cert-auth": "true",
        "peer-key-file": f"{PKI}/etcd/peer.key",
        "peer-trusted-ca-file": f"{PKI}/etcd/ca.crt",
        "snapshot-count": "10000",
        "trusted-ca-file": f"{PKI}/etcd/ca.crt",
    }
    if members:
        defaults["initial-cluster-state"] = "existing"
    return command("etcd", defaults, local.get("extraArgs"))

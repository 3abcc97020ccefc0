"""A node taken back to "ready for a fresh install": ``kubeadm reset -f`` and what it leaves.

kubeadm reset stops the kubelet, removes a control plane's etcd member (stacked etcd) and
its static pods, certificates, kubeconfigs and /var/lib/etcd, /var/lib/kubelet; it says
itself that it does not clean the CNI configuration, iptables or IPVS. So after it:

- CNI state: /etc/cni/net.d (calico's conflist and kubeconfig), /var/lib/cni (host-local
  IPAM, cached results), calico's /var/lib/calico, /var/run/calico, /var/log/calico, and
  the links calico and kube-proxy made (vxlan.calico, tunl0 stays: the kernel owns it;
  kube-ipvs0);
- iptables: every rule and chain of kube-proxy (``KUBE-``) and calico (``cali-``, and its
  rules in the built-in chains, commented ``cali:``) taken out of ``iptables-save -c``
  output and the rest restored with its counters (nobody else's rules or counts change:
  ``iptables -F`` would drop them all); the same for ip6tables;
- IPVS: ``ipvsadm --clear`` where the kernel has IPVS (kube-proxy's ipvs mode);
- kubeferry's completion records (/var/lib/kubeferry/phases) and kubeadm configuration
  records (/var/lib/kubeferry/kubeadm). The distributed bundle files stay (verified by
  sha256, a fresh install sends nothing again), as do the packages and images.
"""

from __future__ import annotations

from kubeferry.installer import operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.inventory import Host
from kubeferry.installer.workflow import MARKER_DIR

RESET_TIMEOUT = 300
CNI_PATHS = ("/etc/cni/net.d", "/var/lib/cni", "/var/lib/calico", "/var/run/calico", "/var/log/calico")
LINKS = ("vxlan.calico", "kube-ipvs0")
KUBEFERRY_RECORDS = (MARKER_DIR, "/var/lib/kubeferry/kubeadm")
# lines of iptables-save that kube-proxy or calico made
OWNED = r"KUBE-|cali-|cali:"


def iptables_command(save: str, restore: str) -> str:
    """Drop kube-proxy's and calico's chains and rules, keep everything else with its counters."""
    return (f"if command -v {save} >/dev/null 2>&1 && {save} -c | grep -Eq -- '{OWNED}'; then"
            f" {save} -c | grep -Ev -- '{OWNED}' | {restore} -c; fi")


def cleanup_command() -> str:
    """One idempotent sh command for everything kubeadm reset leaves (see the module doc)."""
    parts = [f"rm -rf {' '.join(path + '/*' if path == '/etc/cni/net.d' else path for path in CNI_PATHS)}"]
    parts += [f"{{ ! ip link show {link} >/dev/null 2>&1 || ip link delete {link}; }}" for link in LINKS]
    parts += [iptables_command("iptables-save", "iptables-restore"),
              iptables_command("ip6tables-save", "ip6tables-restore"),
              "if [ -e /proc/net/ip_vs ] && command -v ipvsadm >/dev/null 2>&1; then ipvsadm --clear; fi",
              f"rm -rf {' '.join(KUBEFERRY_RECORDS)}"]
    return " && ".join(parts)


def reset_node(ctx: InstallContext, host: Host) -> str:
    """``kubeadm reset -f`` (when kubeadm is there), then the cleanup; what was done, in words."""
    conn = ctx.conn(host)
    done = []
    if host.is_kubernetes_node and conn.run("command -v kubeadm >/dev/null", check=False).ok:
        operations.run(conn, "kubeadm reset -f", timeout=RESET_TIMEOUT)
        done.append("kubeadm reset")
    operations.run(conn, cleanup_command(), timeout=120,
                   failure="cleaning CNI state, kube-proxy/calico rules, IPVS or kubeferry's records")
    done.append("CNI state, kube-proxy/calico rules and kubeferry's records removed")
    return "; ".join(done)

"""``--plan`` output and preflight's judgement for EL7 and EL8 nodes, through a fake connection
that answers fact commands like a fresh minimal CentOS 7 / Rocky 8 node: the plans name the
exact yum/dnf, rpm, grubby and reboot commands, and planning runs nothing that changes a node.
Whether those commands work is checked on the lab's EL nodes, for real (tests/e2e: el8 HA,
el7 with kernel-ml, its reboot and the faults); nothing here applies a change."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from el_bundle import write_el_bundle
from fake_node import EL8_OS_RELEASE, FakeNode, el_answers

from kubeferry.bundle.reader import Bundle
from kubeferry.installer import inventory
from kubeferry.installer.context import InstallContext, InstallOptions
from kubeferry.installer.phases import containerd, images, init, kernel, os_setup, packages, preflight
from kubeferry.installer.workflow import run

NODE_PREP = [preflight.PHASE, os_setup.PHASE, packages.PHASE, kernel.PHASE, containerd.PHASE, images.PHASE]
# Commands that read only: planning must run nothing else on a node.
READ_ONLY = re.compile(r"^(cat |uname |nproc|awk |tail |date |for (m|i) in |test -e |ip -o |"
                       r"p=|cd /var/lib/kubeferry|sha256sum |systemctl is-|command -v |rpm -q |"
                       r"grubby --default-kernel|ctr -n k8s.io images ls|dpkg-query |apt-mark showhold|"
                       r"(yum|dnf) -q --disablerepo='\*' versionlock list)")


def site(proxy_mode: str = "ipvs", registry: object = "none") -> inventory.Inventory:
    return inventory.parse({
        "cluster": {"controlPlaneEndpoint": "k8s-api.example.local:8443", "proxyMode": proxy_mode,
                    "vip": "192.168.40.199"},
        "registry": registry,
        "hosts": [{"name": "master1", "address": "192.168.40.180", "roles": ["control-plane"]},
                  {"name": "node1", "address": "192.168.40.183", "roles": ["worker"]}],
    })


def context(tmp_path: Path, bundle: Path, nodes: dict[str, FakeNode], plan: bool = True,
            site_inventory: inventory.Inventory | None = None) -> tuple[InstallContext, list[str]]:
    echoed: list[str] = []
    ctx = InstallContext(inventory=site_inventory or site(), bundle=Bundle.open(bundle),
                         options=InstallOptions(plan=plan, run_dir=tmp_path / "run"),
                         connector=lambda host: nodes[host.name], echo=echoed.append)
    return ctx, echoed


def fake_nodes(ctx_inventory: inventory.Inventory, **answers) -> dict[str, FakeNode]:
    nodes = {}
    for index, host in enumerate(ctx_inventory.hosts):
        nodes[host.name] = FakeNode(host, el_answers(address=host.address,
                                                     uuid=f"4c4c4544-0000-1000-8000-00000000000{index}",
                                                     **answers))
        nodes[host.name].answer(r"^for i in /sys/class/net/\*", f"52:54:00:00:00:0{index}\n")
        nodes[host.name].answer(r"^cat /proc/sys/kernel/hostname$", host.name + "\n")
    return nodes


def plans(results) -> dict[tuple[str, str], list[str]]:
    return {(r.phase, r.host): r.plan for r in results}


def changes(lines: list[str]) -> list[str]:
    """Plan lines with a step that covers several changes ("a; b") counted as each."""
    return [part for line in lines for part in line.split("; ")]


def test_el7_plan_names_every_command(tmp_path: Path) -> None:
    bundle, ids = write_el_bundle(tmp_path / "bundle", "el7")
    nodes = fake_nodes(site())
    ctx, echoed = context(tmp_path, bundle, nodes)
    results = run(ctx, NODE_PREP)
    assert [r.status for r in results if r.status == "failed"] == [], results
    planned = plans(results)

    table = "\n".join(echoed)
    assert "centos 7" in table and "3.10.0-1160.el7.x86_64" in table
    for warning in ("swap is on; the os phase turns it off", "SELinux is enforcing", "firewalld is running",
                    "the kernel phase installs kernel-ml (>= 4.19 for IPVS)"):
        assert warning in table

    os_plan = planned[("os", "master1")]
    assert os_plan[:4] == ["swapoff -a", "write /etc/fstab", "setenforce 0", "write /etc/selinux/config"]
    assert "stop firewalld" in os_plan and "disable firewalld" in os_plan
    assert "modprobe br_netfilter overlay nf_conntrack ip_vs ip_vs_rr ip_vs_wrr ip_vs_sh" in os_plan
    assert any(line.startswith("sysctl net.bridge.bridge-nf-call-iptables") for line in os_plan)
    assert {"write /etc/hosts", "write /etc/chrony.conf", "enable chronyd", "start chronyd"} <= set(os_plan)

    package_plan = changes(planned[("packages", "master1")])
    assert package_plan[0] == "write /etc/yum.repos.d/kubeferry.repo"
    assert "rpm --import /var/lib/kubeferry/bundle/packages/el7/keys/el7-gpgkey.asc" in package_plan
    assert "rpm --import /var/lib/kubeferry/bundle/packages/el7/keys/kubernetes-gpgkey.asc" in package_plan
    assert ("yum install -y --disablerepo='*' --enablerepo=kubeferry kubeadm-1.25.0-0.x86_64"
            " kubelet-1.25.0-0.x86_64 kubectl-1.25.0-0.x86_64 cri-tools-1.25.0-0.x86_64"
            " kubernetes-cni-1.1.1-0.x86_64 containerd.io-1.6.6-3.1.el7.x86_64 chrony-3.4.1-1.el7.x86_64"
            " ipvsadm-1.27-8.el7.x86_64 ethtool-2:4.8-10.el7.x86_64") in package_plan
    assert "enable kubelet" in package_plan
    assert ("yum versionlock add kubeadm-1.25.0-0.x86_64 kubelet-1.25.0-0.x86_64"
            " kubectl-1.25.0-0.x86_64") in package_plan

    assert planned[("kernel", "node1")] == [
        "write /etc/yum.repos.d/kubeferry-kernel.repo",
        "rpm --import /var/lib/kubeferry/bundle/kernel/el7/keys/elrepo-gpgkey.asc",
        "yum install -y --disablerepo='*' --enablerepo=kubeferry-kernel,kubeferry"
        " kernel-ml-4.19.12-1.el7.elrepo.x86_64",
        "grubby --set-default /boot/vmlinuz-4.19.12-1.el7.elrepo.x86_64",
        "reboot (nohup sh -c 'sleep 2; systemctl reboot' >/dev/null 2>&1 &), wait up to 600 s for SSH"
        " with a new boot id, then check uname -r >= 4.19.12-1.el7.elrepo.x86_64"]

    assert planned[("containerd", "master1")] == [
        "write /etc/containerd/config.toml", "write /etc/crictl.yaml", "enable containerd",
        "start containerd", "check that containerd answers (up to 60 s)"]
    assert planned[("images", "master1")] == [
        "check the images' blobs arrived (distribute)",
        "write /var/lib/kubeferry/import/oci-layout", "write /var/lib/kubeferry/import/index.json",
        "import 3 image(s) with ctr: registry.k8s.io/kube-apiserver:v1.25.0, registry.k8s.io/pause:3.8,"
        " registry.k8s.io/kube-proxy:v1.25.0", "check containerd holds each at the bundle's digest"]
    assert planned[("images", "node1")][-2] == ("import 2 image(s) with ctr: registry.k8s.io/pause:3.8,"
                                                " registry.k8s.io/kube-proxy:v1.25.0")
    for node in nodes.values():
        changing = [command for command in node.commands if not READ_ONLY.match(command)]
        assert changing == [], changing


def test_el8_plan_uses_dnf_and_keeps_its_kernel(tmp_path: Path) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el8")
    nodes = fake_nodes(site(), os_release=EL8_OS_RELEASE, kernel="4.18.0-513.el8.x86_64")
    ctx, echoed = context(tmp_path, bundle, nodes)
    planned = plans(run(ctx, NODE_PREP))
    assert "rocky 8.9" in "\n".join(echoed)
    assert ("dnf install -y --disablerepo='*' --enablerepo=kubeferry --setopt=install_weak_deps=False"
            " kubeadm-1.25.0-150500.1.1.x86_64") in " ".join(planned[("packages", "master1")])
    assert planned[("kernel", "master1")] == []
    assert "the kernel phase installs" not in "\n".join(echoed)


def test_wrong_os_and_duplicates_fail_preflight_before_any_change(tmp_path: Path) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    nodes = fake_nodes(site(), os_release=EL8_OS_RELEASE)
    for node in nodes.values():  # cloned VMs: same product_uuid and MAC
        node.answer(r"product_uuid", "4c4c4544-0000-1000-8000-0000000000aa\n")
        node.answer(r"^for i in /sys/class/net/\*", "52:54:00:aa:aa:aa\n")
    nodes["master1"].answer(r"/proc/net/tcp", "0016\n192B\n")  # 6443 busy
    ctx, echoed = context(tmp_path, bundle, nodes, plan=False)
    results = run(ctx, NODE_PREP)
    assert {(r.phase, r.status) for r in results} == {("preflight", "failed")}
    master = next(r for r in results if r.host == "master1")
    assert "OS is rocky 8.9, the bundle is for el7" in master.detail
    assert "duplicate product_uuid 4c4c4544-0000-1000-8000-0000000000aa (also on node1)" in master.detail
    assert "duplicate MAC 52:54:00:aa:aa:aa (also on node1)" in master.detail
    assert "port 6443 in use" in master.detail
    assert "port" not in next(r for r in results if r.host == "node1").detail
    assert "ERROR" in "\n".join(echoed)
    for node in nodes.values():
        assert all(READ_ONLY.match(command) for command in node.commands)


def test_busy_ports_are_ours_once_kubeadm_ran(tmp_path: Path) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    nodes = fake_nodes(site())
    nodes["master1"].answer(r"/proc/net/tcp", "192B\n0949\n094A\n")  # 6443, 2377+2 etcd
    nodes["master1"].answer(r"kubelet\.conf", "yes\n")
    ctx, _ = context(tmp_path, bundle, nodes, plan=False)
    assert [r.status for r in run(ctx, [preflight.PHASE])] == ["ok", "ok"]


def test_a_cluster_of_another_version_is_not_upgraded_by_install(tmp_path: Path) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")  # Kubernetes 1.25.0
    nodes = fake_nodes(site())
    nodes["master1"].answer(r"kubelet\.conf", "yes\nKubernetes v1.24.9\n")
    ctx, _ = context(tmp_path, bundle, nodes, plan=False)
    master, worker = run(ctx, [preflight.PHASE])
    assert (master.status, worker.status) == ("failed", "ok")
    assert ("it runs Kubernetes v1.24.9, the bundle is 1.25.0: install does not upgrade a cluster"
            in master.detail)
    nodes["master1"].answer(r"kubelet\.conf", "yes\nKubernetes v1.25.0\n")  # the same release
    ctx, _ = context(tmp_path, bundle, nodes, plan=False)
    assert [r.status for r in run(ctx, [preflight.PHASE])] == ["ok", "ok"]


def test_el7_without_ipvs_says_which_modules_and_what_to_do(tmp_path: Path) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    nodes = fake_nodes(site(), missing_modules=("ip_vs", "ip_vs_sh"))
    ctx, _ = context(tmp_path, bundle, nodes)
    (result, _other) = run(ctx, [os_setup.PHASE])
    assert result.status == "failed"
    assert result.detail == (
        "master1: ip_vs, ip_vs_sh: not available in kernel 3.10.0-1160.el7.x86_64 (modprobe: FATAL:"
        " Module ip_vs not found in directory /lib/modules/3.10.0-1160.el7.x86_64); use"
        " cluster.proxyMode: iptables, or a kernel with IPVS (the kernel phase installs kernel-ml)")
    ctx, _ = context(tmp_path, bundle, nodes, site_inventory=site(proxy_mode="iptables"))
    assert {r.status for r in run(ctx, [os_setup.PHASE])} == {"changed"}


def test_pinned_package_is_not_downgraded(tmp_path: Path) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    nodes = fake_nodes(site())
    nodes["node1"].answer(r"^rpm -q --qf", "kubeadm\t0:1.26.0-0\n")
    ctx, _ = context(tmp_path, bundle, nodes)
    result = next(r for r in run(ctx, [packages.PHASE]) if r.host == "node1")
    assert result.detail == ("node1: kubeadm 0:1.26.0-0 is installed, the bundle has 1.25.0-0: kubeferry does"
                             " not downgrade; remove it or use a bundle of that version")


@pytest.mark.parametrize("os_name", ["el7", "el8"])
def test_containerd_config_under_harbor_names_the_harbor_pause(tmp_path: Path, os_name: str) -> None:
    bundle, _ = write_el_bundle(tmp_path / "bundle", os_name)
    harbor = {"url": "https://harbor.example.local", "project": "google_containers",
              "address": "192.168.40.190"}
    inv = site(registry=harbor)
    ctx, _ = context(tmp_path, bundle, fake_nodes(inv), site_inventory=inv)
    text = containerd.config_toml(ctx)
    assert 'sandbox_image = "harbor.example.local/google_containers/pause:3.8"' in text
    assert os_setup.hosts_lines(ctx)[-2:] == ["192.168.40.199 k8s-api.example.local",
                                              "192.168.40.190 harbor.example.local"]


def test_a_vip_on_none_of_the_holders_networks_fails_preflight(tmp_path: Path) -> None:
    """Within the inventory's /16 sanity range, but off master1's real /24 (issue 15)."""
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    far = inventory.parse({
        "cluster": {"controlPlaneEndpoint": "k8s-api.example.local:8443", "vip": "192.168.41.199"},
        "registry": "none",
        "hosts": [{"name": "master1", "address": "192.168.40.180", "roles": ["control-plane"]},
                  {"name": "node1", "address": "192.168.40.183", "roles": ["worker"]}],
    })
    nodes = fake_nodes(far)
    ctx, _ = context(tmp_path, bundle, nodes, plan=False, site_inventory=far)
    master, worker = run(ctx, [preflight.PHASE])
    assert (master.status, worker.status) == ("failed", "ok")
    assert "cluster.vip 192.168.41.199 is on none of its networks (192.168.40.0/24)" in master.detail
    assert [r.status for r in run(context(tmp_path, bundle, fake_nodes(site()), plan=False)[0],
                                  [preflight.PHASE])] == ["ok", "ok"]


def test_init_refuses_a_bundle_without_the_images_kubeadm_will_pull(tmp_path: Path) -> None:
    """kubeadm's names come from the image set the bundle recorded; what the bundle does not
    carry (this one holds 3 of the 7) stops init before kubeadm runs, naming each image."""
    bundle, _ = write_el_bundle(tmp_path / "bundle", "el7")
    nodes = fake_nodes(site())
    nodes["master1"].answer(r"^test -e /etc/kubernetes/admin\.conf$", ("", 1))
    ctx, _ = context(tmp_path, bundle, nodes)
    [result] = run(ctx, [init.PHASE])
    assert result.status == "failed"
    assert ("kubeadm v1.25.0 would pull registry.k8s.io/coredns/coredns:, registry.k8s.io/etcd:,"
            " registry.k8s.io/kube-controller-manager:v1.25.0, registry.k8s.io/kube-scheduler:v1.25.0,"
            " which the bundle does not carry") in result.detail  # this bundle records no etcd, coredns

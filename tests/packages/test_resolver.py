"""The closure policy on small hand-made universes (rpm and deb families)."""

from __future__ import annotations

import pytest

from kubeferry.bundler.aptmeta import parse_relation
from kubeferry.bundler.pkgmodel import DEB, RPM, Cap, If, Or, Package
from kubeferry.bundler.resolver import Pin, Resolver, Universe, Unsatisfiable
from kubeferry.errors import InputError


def _cap(text: str) -> Cap:
    parts = text.split()
    return Cap(parts[0], parts[1], parts[2]) if len(parts) == 3 else Cap(parts[0])


def rpm(name: str, version: str, repo: str = "base", requires=(), provides=(), files=(),
        arch: str = "x86_64") -> Package:
    reqs = [r if not isinstance(r, str) else _cap(r) for r in requires]
    caps = [Cap(name, "=", version)] + [_cap(p) for p in provides]
    return Package(family=RPM, name=name, arch=arch, version=version, repo=repo,
                   location=f"Packages/{name}-{version}.{arch}.rpm", checksum=("sha256", name),
                   size=100, provides=caps, requires=reqs, files=list(files))


def deb(name: str, version: str, repo: str = "main", depends=(), provides=(),
        priority: str = "optional") -> Package:
    reqs = [r if not isinstance(r, str) else parse_relation(r) for r in depends]
    caps = [Cap(name, "=", version)] + [parse_relation(p) for p in provides]
    return Package(family=DEB, name=name, arch="amd64", version=version, repo=repo,
                   location=f"pool/{name}_{version}_amd64.deb", checksum=("sha256", name),
                   size=100, provides=caps, requires=reqs, priority=priority)


def names(resolution) -> dict[str, str]:
    return {p.name: p.version for p in resolution.packages}


def kubernetes_universe() -> list[Package]:
    return [
        rpm("glibc", "2.28-100", requires=["filesystem"]),
        rpm("filesystem", "3.8-1"),
        rpm("iptables", "1.8.4-1", provides=["/usr/sbin/iptables"], files=["/usr/sbin/iptables"]),
        rpm("iptables", "1.8.5-1", repo="updates"),
        rpm("util-linux", "2.32-1"),
        rpm("socat", "1.7.3-1"),
        rpm("ethtool", "5.0-1"),
        rpm("ebtables", "2.0.10-1", files=["/usr/sbin/ebtables"]),
        rpm("conntrack-tools", "1.4.4-1", provides=["conntrack = 1.0-1"]),
        rpm("kubernetes-cni", "1.1.1-0", repo="kubernetes"),
        rpm("kubernetes-cni", "1.2.0-0", repo="kubernetes"),
        rpm("cri-tools", "1.24.2-0", repo="kubernetes"),
        rpm("cri-tools", "1.25.0-0", repo="kubernetes"),
        rpm("cri-tools", "1.26.0-0", repo="kubernetes"),
        *[rpm("kubelet", f"{v}-0", repo="kubernetes",
              requires=["conntrack", "/usr/sbin/ebtables", "ethtool", "iptables >= 1.4.21",
                        "socat", "util-linux", "kubernetes-cni >= 1.1.1", "glibc"])
          for v in ("1.24.17", "1.25.0", "1.25.1")],
        *[rpm("kubectl", f"{v}-0", repo="kubernetes") for v in ("1.24.17", "1.25.0", "1.25.1")],
        *[rpm("kubeadm", f"{v}-0", repo="kubernetes",
              requires=["kubelet >= 1.19.0", "kubectl >= 1.13.0", "cri-tools >= 1.25.0",
                        "kubernetes-cni >= 1.1.1"])
          for v in ("1.24.17", "1.25.0", "1.25.1")],
    ]


def pinned(version: str) -> dict[str, Pin]:
    pin = Pin(lambda p: p.upstream_version() == version, f"= {version}")
    return {name: pin for name in ("kubeadm", "kubelet", "kubectl")}


def test_closure_pins_kubernetes_and_takes_newest_of_the_rest() -> None:
    universe = Universe(RPM, kubernetes_universe(), ["base", "updates", "kubernetes"])
    resolution = Resolver(universe, pins=pinned("1.25.0")).resolve(["kubeadm", "kubelet",
                                                                    "kubectl"])
    got = names(resolution)
    assert got["kubeadm"] == got["kubelet"] == got["kubectl"] == "1.25.0-0"
    assert got["cri-tools"] == "1.26.0-0"  # newest that satisfies >= 1.25.0
    assert got["kubernetes-cni"] == "1.2.0-0"
    assert got["conntrack-tools"] == "1.4.4-1"  # the virtual provide "conntrack"
    assert got["ebtables"] == "2.0.10-1"  # the file provide
    assert got["iptables"] == "1.8.5-1"  # newest, from updates
    assert resolution.reasons["conntrack-tools"] == "kubelet -> conntrack-tools"


def test_installed_base_is_not_bundled_unless_requested() -> None:
    packages = kubernetes_universe()
    universe = Universe(RPM, packages, ["base", "updates", "kubernetes"])
    base = [p for p in packages if p.name in ("glibc", "filesystem", "util-linux")
            or (p.name == "iptables" and p.version == "1.8.4-1")]
    resolution = Resolver(universe, installed=base, pins=pinned("1.25.0")).resolve(
        ["kubeadm", "kubelet", "kubectl", "util-linux"])
    got = names(resolution)
    assert "glibc" not in got and "filesystem" not in got
    assert "iptables" not in got  # installed 1.8.4 meets >= 1.4.21
    assert got["util-linux"] == "2.32-1"  # requested: bundled even though installed


def test_installed_too_old_brings_the_update() -> None:
    packages = [
        rpm("glibc", "2.28-100"), rpm("glibc", "2.28-225", repo="updates"),
        rpm("glibc-common", "2.28-100", requires=["glibc = 2.28-100"]),
        rpm("glibc-common", "2.28-225", repo="updates", requires=["glibc = 2.28-225"]),
        rpm("tool", "1-1", repo="updates", requires=["glibc >= 2.28-200"]),
    ]
    universe = Universe(RPM, packages, ["base", "updates"])
    base = [packages[0], packages[2]]
    resolution = Resolver(universe, installed=base).resolve(["tool"])
    got = names(resolution)
    assert got["glibc"] == "2.28-225"
    # glibc-common = 2.28-100 would break: it comes along upgraded.
    assert got["glibc-common"] == "2.28-225"


def test_unsatisfiable_names_the_chain() -> None:
    packages = kubernetes_universe() + [
        rpm("kube-extra", "1-1", repo="kubernetes", requires=["broken-lib"]),
        rpm("broken-lib", "1-1", repo="kubernetes", requires=["does-not-exist >= 2"]),
    ]
    universe = Universe(RPM, packages, ["base", "updates", "kubernetes"])
    with pytest.raises(Unsatisfiable) as error:
        Resolver(universe).resolve(["kube-extra"])
    assert str(error.value) == ("cannot satisfy kube-extra -> broken-lib -> does-not-exist >= 2:"
                                " no package provides it in base, updates, kubernetes")


def test_version_conflict_lists_what_exists() -> None:
    packages = kubernetes_universe() + [
        rpm("old-tool", "1-1", repo="kubernetes", requires=["cri-tools < 1.20"]),
    ]
    universe = Universe(RPM, packages, ["base", "updates", "kubernetes"])
    with pytest.raises(Unsatisfiable) as error:
        Resolver(universe).resolve(["old-tool"])
    assert "cannot satisfy old-tool -> cri-tools < 1.20: no version fits" in str(error.value)
    assert "cri-tools 1.24.2-0" in str(error.value)


def test_unknown_or_unpinnable_request_is_input_error() -> None:
    universe = Universe(RPM, kubernetes_universe(), ["base", "updates", "kubernetes"])
    with pytest.raises(InputError, match="package 'nope' not found"):
        Resolver(universe).resolve(["nope"])
    with pytest.raises(InputError, match=r"kubeadm = 1.26.0 not found .*1.25.1"):
        Resolver(universe, pins=pinned("1.26.0")).resolve(["kubeadm"])


def test_conflicting_constraints_reselect_a_version() -> None:
    packages = [
        rpm("lib", "1-1"), rpm("lib", "2-1"), rpm("lib", "3-1"),
        rpm("a", "1-1", requires=["lib"]),
        rpm("b", "1-1", requires=["lib < 3"]),
    ]
    universe = Universe(RPM, packages, ["base"])
    got = names(Resolver(universe).resolve(["a", "b"]))
    assert got["lib"] == "2-1"


def test_rich_dependencies() -> None:
    packages = [
        rpm("containerd", "1.6-1"), rpm("cri-o", "1.25-1"),
        rpm("runtime-user", "1-1", requires=[Or((Cap("cri-o"), Cap("containerd")))]),
        rpm("selinux-bits", "1-1"),
        rpm("policy", "1-1", requires=[If(Cap("selinux-bits"), Cap("selinux-policy"))]),
        rpm("selinux-policy", "3-1"),
    ]
    universe = Universe(RPM, packages, ["base"])
    got = names(Resolver(universe).resolve(["runtime-user", "policy"]))
    assert "cri-o" in got and "containerd" not in got  # first installable alternative
    assert "selinux-bits" not in got  # condition not installed
    got = names(Resolver(universe).resolve(["runtime-user", "policy", "selinux-policy"]))
    assert "selinux-bits" in got  # condition now installed


def test_file_requires_fall_back_to_file_lists() -> None:
    plugin = rpm("plugin-host", "1-1")  # owns /usr/lib64/plugin.so, not listed in primary
    packages = [plugin, rpm("consumer", "1-1", requires=["/usr/lib64/plugin.so"])]
    calls = []

    def loader(paths: set[str]):
        calls.append(set(paths))
        return {"/usr/lib64/plugin.so": [plugin]} if "/usr/lib64/plugin.so" in paths else {}

    universe = Universe(RPM, packages, ["base"], file_loader=loader)
    got = names(Resolver(universe).resolve(["consumer"]))
    assert got == {"consumer": "1-1", "plugin-host": "1-1"}
    assert calls == [{"/usr/lib64/plugin.so"}]


def test_arch_is_the_callers_filter_and_hidden_packages_explain_failures() -> None:
    hidden = [rpm("nodejs", "18-1.module")]
    universe = Universe(RPM, [rpm("app", "1-1", requires=["nodejs"])], ["appstream"],
                        hidden=hidden)
    with pytest.raises(Unsatisfiable, match="module streams that are not enabled"):
        Resolver(universe).resolve(["app"])


def test_debian_alternatives_virtuals_and_priorities() -> None:
    packages = [
        deb("libc6", "2.36-9", priority="required"),
        deb("mawk", "1.3.4-1", provides=["awk"], priority="required"),
        deb("gawk", "5.2-1", provides=["awk"]),
        deb("iptables", "1.8.9-2", depends=["libc6 (>= 2.34)"]),
        deb("nftables", "1.0.6-2"),
        deb("conntrack", "1:1.4.7-1"),
        deb("kubelet", "1.25.0-1.1", repo="kubernetes",
            depends=[Or((Cap("iptables", ">=", "1.4.21"), Cap("nftables"))), "conntrack",
                     "awk", "mount-virtual"]),
        deb("mount", "2.38-4", provides=["mount-virtual (= 2.38)"], priority="required"),
        deb("ghost", "1.0-1", depends=["mount-virtual (>= 3)"]),
    ]
    universe = Universe(DEB, packages, ["main", "kubernetes"])
    base = [p for p in packages if p.priority == "required"]
    got = names(Resolver(universe, installed=base).resolve(["kubelet"]))
    assert got == {"kubelet": "1.25.0-1.1", "iptables": "1.8.9-2", "conntrack": "1:1.4.7-1"}
    got = names(Resolver(universe).resolve(["kubelet"]))
    assert got["mawk"] == "1.3.4-1"  # a virtual package: the required provider wins
    with pytest.raises(Unsatisfiable, match=r"ghost -> mount-virtual >= 3"):
        Resolver(universe).resolve(["ghost"])


def test_lenient_mode_collects_instead_of_raising() -> None:
    universe = Universe(RPM, [rpm("a", "1-1", requires=["missing"])], ["base"])
    resolution = Resolver(universe, lenient=True).resolve(["a"])
    assert names(resolution) == {"a": "1-1"}
    assert resolution.unsatisfied == [
        "cannot satisfy a -> missing: no package provides it in base"]

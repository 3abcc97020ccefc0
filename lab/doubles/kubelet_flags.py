"""The kubelet double's command line, read as that release's kubelet reads it.

systemd starts kubelet with 10-kubeadm.conf's ``ExecStart``: ``$KUBELET_KUBECONFIG_ARGS
$KUBELET_CONFIG_ARGS $KUBELET_KUBEADM_ARGS $KUBELET_EXTRA_ARGS``, the last two from
``/var/lib/kubelet/kubeadm-flags.env`` and ``/etc/default/kubelet`` (Debian; EL's kubelet
package points at ``/etc/sysconfig/kubelet``). Started without them (the double run by hand
or by the test harness), the double reads the same files, so what kubeadm wrote is checked
either way. A flag the release's kubelet does not have fails as kubelet fails
(``failed to parse kubelet flag: unknown flag: --X``); ``--node-ip`` must be an address
assigned to one of the node's interfaces and not loopback (kubelet's validateNodeIP).

Release boundaries of the flags (kubelet's own flag set, k8s.io/kubernetes cmd/kubelet/app/options):
- 1.24 removed the dockershim flags (CHANGELOG-1.24, "Dockershim removed from kubelet"):
  ``--network-plugin``, ``--network-plugin-mtu``, ``--cni-bin-dir``, ``--cni-conf-dir``,
  ``--cni-cache-dir``, ``--docker-endpoint``, ``--image-pull-progress-deadline``,
  ``--experimental-dockershim-root-directory``;
- 1.27 removed ``--container-runtime`` (CHANGELOG-1.27; kubeadm 1.24-1.26 still wrote
  ``--container-runtime=remote``).
"""

from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
from typing import Any

from doublelib import Env, Fail, parse_flags, read_text

FLAGS = {
    "--config": "str", "--kubeconfig": "str", "--bootstrap-kubeconfig": "str", "--hostname-override": "str",
    "--container-runtime-endpoint": "str", "--container-runtime": "str", "--pod-infra-container-image": "str",
    "--node-ip": "str", "--v": "str", "--version": "bool", "--fail-swap-on": "str", "--cgroup-driver": "str",
    "--node-labels": "str", "--register-with-taints": "str", "--max-pods": "str", "--cgroup-root": "str",
    "--runtime-request-timeout": "str", "--rotate-certificates": "bool", "--root-dir": "str",
    "--network-plugin": "str", "--network-plugin-mtu": "str", "--cni-bin-dir": "str", "--cni-conf-dir": "str",
    "--cni-cache-dir": "str", "--docker-endpoint": "str", "--image-pull-progress-deadline": "str",
    "--experimental-dockershim-root-directory": "str",
}
# flag -> the first release whose kubelet no longer has it
REMOVED = {
    **{flag: (1, 24) for flag in ("--network-plugin", "--network-plugin-mtu", "--cni-bin-dir", "--cni-conf-dir",
                                  "--cni-cache-dir", "--docker-endpoint", "--image-pull-progress-deadline",
                                  "--experimental-dockershim-root-directory")},
    "--container-runtime": (1, 27),
}
EXTRA_ARGS_FILES = ("/etc/default/kubelet", "/etc/sysconfig/kubelet")


def fail(message: str) -> Fail:
    return Fail(f'E0000 run.go:74] "command failed" err="{message}"')


def environment_value(text: str, name: str) -> str:
    """``NAME="value"`` (or unquoted) from a systemd EnvironmentFile."""
    match = re.search(rf'^\s*{name}=(.*)$', text, re.MULTILINE)
    if not match:
        return ""
    value = match.group(1).strip()
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'" else value


def file_args(env: Env) -> list[str]:
    """KUBELET_KUBEADM_ARGS then KUBELET_EXTRA_ARGS, as the drop-in's ExecStart orders them."""
    args = shlex.split(environment_value(read_text(env.path("/var/lib/kubelet/kubeadm-flags.env")) or "",
                                         "KUBELET_KUBEADM_ARGS"))
    for path in EXTRA_ARGS_FILES:
        text = read_text(env.path(path))
        if text is not None:
            args += shlex.split(environment_value(text, "KUBELET_EXTRA_ARGS"))
            break
    return args


def parse(env: Env, argv: list[str]) -> dict[str, Any]:
    """The kubelet's flags: argv, else the drop-in's files; later flags win, as pflag's do."""
    args = argv if any(a.startswith("--config") for a in argv) else argv + file_args(env)
    try:
        flags, _ = parse_flags(args, FLAGS)
    except Fail as error:
        raise fail(f"failed to parse kubelet flag: {error}") from None
    release = tuple(int(p) for p in env.version.split(".")[:2])
    for flag in flags:
        if flag in REMOVED and release >= REMOVED[flag]:
            raise fail(f"failed to parse kubelet flag: unknown flag: {flag}")
    return flags


def node_addresses(env: Env) -> set[str]:
    """The addresses assigned to the node's interfaces (``ip -o addr``)."""
    result = subprocess.run(["ip", "-o", "addr", "show"], capture_output=True, text=True, timeout=10, check=False)
    return {line.split()[3].split("/")[0] for line in result.stdout.splitlines() if len(line.split()) > 3}


def check_node_ip(env: Env, value: str) -> None:
    """kubelet's validateNodeIP: a valid, non-loopback address of this node."""
    for part in filter(None, value.split(",")):
        try:
            address = ipaddress.ip_address(part)
        except ValueError:
            raise fail(f'failed to run Kubelet: bad --node-ip "{value}"') from None
        if address.is_loopback:
            raise fail("failed to validate nodeIP: nodeIP can't be loopback address")
        if str(address) not in node_addresses(env):
            raise fail(f'failed to validate nodeIP: node IP: "{address}" not found in the host\'s network interfaces')

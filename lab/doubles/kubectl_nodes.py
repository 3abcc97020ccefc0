"""``kubectl drain`` and ``kubectl delete node`` in the lab's kubectl double (kubectl 1.25's
flags, messages and refusals), on the doubles' cluster model.

drain cordons the node (``spec.unschedulable``: the model places no Deployment pod there
any more, so its pods are "evicted" to the other nodes), refuses DaemonSet-managed pods
without ``--ignore-daemonsets`` and bare pods without ``--force`` (kubectl's drain filters);
mirror (static) pods are skipped as kubectl skips them. ``delete node`` removes the Node:
the model no longer counts it (a kubelet still running would register it again, which is
why kubeadm's documentation resets the node before deleting it).
"""

from __future__ import annotations

import sys
from typing import Any

import clustermodel
from doublelib import Fail

FLAGS = {"--ignore-daemonsets": "bool", "--delete-emptydir-data": "bool", "--force": "bool",
         "--grace-period": "str", "--disable-eviction": "bool", "--skip-wait-for-delete-timeout": "str"}


def out(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def node_name(positional: list[str], verb: str) -> str:
    if len(positional) != 1:
        raise Fail(f"error: USAGE: {verb} NODE [flags]", 1)
    name = positional[0].split("/", 1)[1] if positional[0].startswith("node/") else positional[0]
    return name


def require_node(state: dict[str, Any], name: str) -> None:
    if name not in {n["name"] for n in clustermodel.members(state)}:
        raise Fail(f'Error from server (NotFound): nodes "{name}" not found', 1)


def cmd_drain(session: Any, positional: list[str], extra: dict[str, Any]) -> None:
    name = node_name(positional, "kubectl drain")
    flags = session.flags
    require_node(session.state, name)
    on_node = [p for p in clustermodel.pods(session.state, session.beats) if p["node"] == name]
    with session.env.state.update() as data:
        for node in data.get("nodes", []):
            if node["name"] == name:
                already = node.get("unschedulable", False)
                node["unschedulable"] = True
    out(f"node/{name} {'already cordoned' if already else 'cordoned'}")
    daemons = [f"{p['namespace']}/{p['name']}" for p in on_node if p["owner"] == "DaemonSet"]
    bare = [f"{p['namespace']}/{p['name']}" for p in on_node if p["owner"] == "Pod"]
    problems = []
    if daemons and not flags.get("--ignore-daemonsets"):
        problems.append(f"cannot delete DaemonSet-managed Pods (use --ignore-daemonsets to ignore): {', '.join(daemons)}")
    if bare and not flags.get("--force"):
        problems.append(f"cannot delete Pods declare no controller (use --force to override): {', '.join(bare)}")
    if problems:
        raise Fail(f'error: unable to drain node "{name}" due to error:{", ".join(problems)}, continuing command...\n'
                   f"There are pending nodes to be drained:\n {name}\n" + "\n".join(problems), 1)
    if daemons:
        sys.stderr.write(f"Warning: ignoring DaemonSet-managed Pods: {', '.join(daemons)}\n")
    evicted = [p for p in on_node if p["owner"] in ("Deployment", "Pod")]
    for pod in evicted:
        out(f"evicting pod {pod['namespace']}/{pod['name']}")
    for pod in evicted:
        out(f"pod/{pod['name']} evicted")
    extra["drained"] = name
    out(f"node/{name} drained")


def cmd_delete(session: Any, positional: list[str], extra: dict[str, Any]) -> None:
    if not positional or positional[0] not in ("node", "nodes", "no") and not positional[0].startswith("node/"):
        raise Fail("lab double: kubectl delete is modelled for nodes only (kubectl delete node NAME)", 1)
    names = [positional[0].split("/", 1)[1]] if "/" in positional[0] else positional[1:]
    if not names:
        raise Fail("error: resource(s) were provided, but no name was specified", 1)
    for name in names:
        require_node(session.state, name)
    with session.env.state.update() as data:
        for node in data.get("nodes", []):
            if node["name"] in names:
                node["deleted"] = True
    for name in names:
        out(f'node "{name}" deleted')

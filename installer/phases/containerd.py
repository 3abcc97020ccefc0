"""Phase ``containerd``: the runtime configured for kubeadm on this site, restarted only when
its configuration changed, and checked to answer.

config.toml (version 2) comes from the template ``manifests/containerd-config.toml``:
``SystemdCgroup = true`` (kubelet's cgroupDriver is systemd), ``sandbox_image`` = the exact
pause image kubeadm uses, under the site's Harbor (else kubelet's sandboxes would come from
containerd's built-in default over the internet), and the registry configured only through
``config_path`` + ``certs.d/<harbor>/hosts.toml`` with Harbor's CA. With ``registry: none``
the pause image keeps its upstream name (the images phase imports it under that name).
"""

from __future__ import annotations

import hashlib
import json
from importlib import resources
from pathlib import Path
from string import Template

from kubeferry.errors import InputError, OperationError
from kubeferry.installer import operations
from kubeferry.installer.context import InstallContext
from kubeferry.installer.harbor_names import harbor_name
from kubeferry.installer.inventory import Host, RegistrySettings
from kubeferry.installer.operations import Step
from kubeferry.installer.platform import data
from kubeferry.installer.workflow import Phase


def sandbox_image(ctx: InstallContext) -> str:
    """The pause image kubeadm uses, named as this site holds it."""
    pause = ctx.bundle.image_set.pause_image
    if not pause:
        raise InputError(f"{ctx.bundle.path}: the bundle metadata names no pause image (imageSet.pauseImage)")
    registry = ctx.inventory.registry
    return pause if registry is None else harbor_name(pause, registry)


def _toml(value: str) -> str:
    return json.dumps(value)  # a TOML basic string: JSON's escapes are TOML's


def config_toml(ctx: InstallContext) -> str:
    settings = data()["containerd"]
    template = resources.files("kubeferry.manifests").joinpath(settings["template"]).read_text()
    return Template(template).substitute(
        sandbox_image=_toml(sandbox_image(ctx)), cni_bin_dir=_toml(settings["cni_bin_dir"]),
        cni_conf_dir=_toml(settings["cni_conf_dir"]), config_path=_toml(settings["certs_dir"]))


def hosts_toml(registry: RegistrySettings, ca_path: str | None) -> str:
    """certs.d/<host>/hosts.toml: pull and resolve from Harbor itself, verified with its CA."""
    server = registry.url
    lines = ["# written by kubeferry: images of this registry come from the site's Harbor",
             f"server = {_toml(server)}", "", f"[host.{_toml(server)}]",
             '  capabilities = ["pull", "resolve"]']
    if ca_path:
        lines.append(f"  ca = {_toml(ca_path)}")
    lines.append("  skip_verify = false")
    return "\n".join(lines) + "\n"


def crictl_yaml() -> str:
    socket = data()["containerd"]["socket"]
    return (f"# written by kubeferry\nruntime-endpoint: {socket}\nimage-endpoint: {socket}\n"
            "timeout: 10\ndebug: false\n")


def _registry_steps(ctx: InstallContext, conn) -> list[Step]:
    registry = ctx.inventory.registry
    if registry is None:
        return []
    directory = f"{data()['containerd']['certs_dir']}/{registry.host}"
    steps: list[Step] = []
    ca_path = None
    if registry.ca_file and registry.url.startswith("https://"):
        try:
            ca = Path(registry.ca_file).expanduser().read_bytes()
        except OSError as error:
            raise InputError(f"registry.caFile {registry.ca_file}: cannot read it"
                             f" ({error.strerror})") from None
        ca_path = f"{directory}/ca.crt"
        steps += operations.file(conn, ca_path, ca)
    steps += operations.file(conn, f"{directory}/hosts.toml", hosts_toml(registry, ca_path))
    return steps


def steps(ctx: InstallContext, host: Host) -> list[Step]:
    conn = ctx.conn(host)
    settings = data()["containerd"]
    config = operations.file(conn, settings["config"], config_toml(ctx))
    planned = config + _registry_steps(ctx, conn)
    planned += operations.file(conn, settings["crictl_config"], crictl_yaml())
    planned += operations.service(conn, "containerd", enabled=True, running=True, restart=bool(config))
    if planned:
        planned.append(_ready_step(ctx, host))
    return planned


def runtime_steps(ctx: InstallContext, host: Host) -> list[Step]:
    """config.toml for this bundle's release and containerd restarted, only if it changed: an
    upgrade's release may name another pause image (1.26: pause 3.9), which the sandboxes of
    the pods the node runs next must use. Restarting containerd leaves running containers
    alone (their shims outlive it)."""
    conn = ctx.conn(host)
    config = operations.file(conn, data()["containerd"]["config"], config_toml(ctx))
    if not config:
        return []
    return [*config, *operations.service(conn, "containerd", enabled=True, running=True, restart=True),
            _ready_step(ctx, host)]


def _ready_step(ctx: InstallContext, host: Host) -> Step:
    """Wait (bounded) until containerd answers ``ctr version`` again."""
    settings = data()["containerd"]
    timeout = int(settings["ready_timeout"])
    command = (f"i=0; until ctr version >/dev/null 2>&1; do i=$((i+1));"
               f" [ $i -ge {timeout} ] && exit 1; sleep 1; done")

    def wait() -> str:
        if not ctx.conn(host).run(command, check=False, timeout=timeout + 30).ok:
            raise OperationError(f"{host.name}: containerd does not answer `ctr version` after"
                                 f" {timeout} s: see journalctl -u containerd on the node"
                                 f" ({settings['config']} may be wrong)")
        return ""

    return Step(f"check that containerd answers (up to {timeout} s)", run=wait)


def inputs(ctx: InstallContext, host: Host) -> object:
    """config.toml, and the registry with its CA (hosts.toml)."""
    registry = ctx.inventory.registry
    if registry is None:
        return [config_toml(ctx)]
    ca = Path(registry.ca_file).expanduser() if registry.ca_file else None
    ca_digest = hashlib.sha256(ca.read_bytes()).hexdigest() if ca and ca.is_file() else ""
    return [config_toml(ctx), registry.url, ca_digest]


PHASE = Phase(
    name="containerd",
    short="containerd config (SystemdCgroup, sandbox_image, certs.d/hosts.toml), crictl.yaml, restart",
    hosts=lambda ctx: ctx.inventory.kubernetes_nodes,
    steps=steps,
    inputs=inputs,
)

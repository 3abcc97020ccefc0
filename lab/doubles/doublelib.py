"""Shared machinery of the lab's kubeadm and kubelet doubles (lab equipment, not kubeferry).

The doubles run on lab nodes under a private Python that is not on the node's PATH.
Everything a node owns is read under ``root`` (``/`` on a node; a temp dir in tests,
set with KUBEFERRY_DOUBLE_ROOT). The cluster state that stands in for the API server
and etcd is one directory shared by every node (bind-mounted by the lab).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import yaml

HERE = Path(__file__).resolve().parent
DEFAULT_CONF = "/etc/kubeferry-lab/double.conf"
DEFAULT_STATE = "/var/lib/kubeferry-lab/cluster"
CTR_TIMEOUT = 120
SECRET_FLAGS = ("--token", "--certificate-key", "--tls-bootstrap-token", "--discovery-token")


class Fail(Exception):
    """A failure the double reports like the real tool: message on stderr, exit code."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


# ---------------------------------------------------------------- environment


class Env:
    """Where this node's files, the shared cluster state and the baked release data live."""

    def __init__(self) -> None:
        self.root = Path(os.environ.get("KUBEFERRY_DOUBLE_ROOT", "/"))
        conf_path = os.environ.get("KUBEFERRY_DOUBLE_CONF") or str(self.path(DEFAULT_CONF))
        self.conf: dict[str, Any] = {}
        if os.path.exists(conf_path):
            with open(conf_path) as f:
                self.conf = yaml.safe_load(f) or {}
        self.state_dir = Path(
            os.environ.get("KUBEFERRY_DOUBLE_STATE") or self.conf.get("state_dir") or DEFAULT_STATE
        )
        self.hostname = (
            os.environ.get("KUBEFERRY_DOUBLE_NODE") or self.conf.get("node_name") or socket.gethostname()
        ).lower()
        release = HERE / "release.yaml"
        self.release: dict[str, Any] = {}
        if release.exists():
            self.release = yaml.safe_load(release.read_text()) or {}

    def path(self, absolute: str) -> Path:
        """A node path (``/etc/kubernetes/admin.conf``) under this node's root."""
        return self.root / absolute.lstrip("/")

    def setting(self, name: str, default: Any) -> Any:
        return self.conf.get(name, default)

    @property
    def version(self) -> str:
        """The Kubernetes release this package stands in for, e.g. ``1.25.0``."""
        if not self.release:
            raise Fail("lab double: release.yaml missing beside the double (package not built?)")
        return str(self.release["version"])

    @property
    def state(self) -> ClusterState:
        return ClusterState(self.state_dir)


# ---------------------------------------------------------------- shared cluster state


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write to a temp name beside ``path`` and rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class ClusterState:
    """The cluster (``cluster.json``), the invocation log and kubelet heartbeats, under flock."""

    def __init__(self, directory: Path) -> None:
        self.dir = Path(directory)
        self.file = self.dir / "cluster.json"

    @contextlib.contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _load(self) -> dict[str, Any]:
        if not self.file.exists():
            return {}
        return json.loads(self.file.read_text())

    def read(self) -> dict[str, Any]:
        with self._lock(exclusive=False):
            return self._load()

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """Yield the state for changing; written back atomically when the block succeeds."""
        with self._lock(exclusive=True):
            data = self._load()
            yield data
            write_atomic(self.file, json.dumps(data, indent=1, sort_keys=True).encode())

    def append_invocation(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True) + "\n"
        with self._lock(exclusive=True), open(self.dir / "invocations.jsonl", "a") as f:
            f.write(line)

    def heartbeat_path(self, node: str) -> Path:
        return self.dir / "heartbeats" / f"{node}.json"

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        beats: dict[str, dict[str, Any]] = {}
        folder = self.dir / "heartbeats"
        if folder.is_dir():
            for item in sorted(folder.glob("*.json")):
                with contextlib.suppress(ValueError, OSError):
                    beats[item.stem] = json.loads(item.read_text())
        return beats

    def write_file(self, name: str, data: bytes, mode: int = 0o600) -> None:
        write_atomic(self.dir / name, data, mode)

    def read_file(self, name: str) -> bytes:
        return (self.dir / name).read_bytes()


def redact(argv: list[str]) -> tuple[list[str], list[str]]:
    """argv with secret flag values replaced, and the secret flags that were on the command line."""
    out: list[str] = []
    found: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("<redacted>")
            hide_next = False
            continue
        name = arg.split("=", 1)[0]
        if name in SECRET_FLAGS:
            found.append(name)
            if "=" in arg:
                out.append(f"{name}=<redacted>")
            else:
                out.append(arg)
                hide_next = True
            continue
        out.append(arg)
    return out, found


def run_main(program: str, handler: Any, argv: list[str]) -> int:
    """Run one double command, print failures like the real tool, log the invocation."""
    env = Env()
    started = time.time()
    code = 0
    result = "ok"
    extra: dict[str, Any] = {}
    try:
        handler(env, argv, extra)
    except Fail as fail:
        code = fail.code
        result = fail.message.strip().splitlines()[0] if fail.message.strip() else "failed"
        if fail.message:
            sys.stderr.write(fail.message if fail.message.endswith("\n") else fail.message + "\n")
    except KeyboardInterrupt:
        code, result = 130, "interrupted"
    except Exception as error:  # a bug in the lab equipment: one line here, the trace in the log
        import traceback

        code, result = 1, f"lab double internal error: {type(error).__name__}: {error}"
        extra["traceback"] = traceback.format_exc()
        sys.stderr.write(result + f" (traceback in {env.state_dir}/invocations.jsonl)\n")
    shown, secrets = redact(argv)
    record = {
        "time": started,
        "duration": round(time.time() - started, 3),
        "node": env.hostname,
        "program": program,
        "argv": [program] + shown,
        "secret_flags": secrets,
        "cwd": os.getcwd(),
        "uid": os.geteuid(),
        "exit_code": code,
        "result": result,
    }
    record.update(extra)
    try:
        env.state.append_invocation(record)
    except OSError as err:
        sys.stderr.write(f"lab double: cannot record invocation in {env.state_dir}: {err}\n")
    return code


# ---------------------------------------------------------------- YAML, strict decoding


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, as sigs.k8s.io/yaml strict mode does."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise Fail(
                f"strict decoding error: yaml: unmarshal errors:\n  line {key_node.start_mark.line + 1}: "
                f'key "{key}" already set in map'
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_documents(text: str, source: str) -> list[dict[str, Any]]:
    """Every non-empty YAML document in ``text``; a parse error fails naming ``source``."""
    try:
        docs = list(yaml.load_all(text, Loader=_StrictLoader))
    except yaml.YAMLError as err:
        raise Fail(f"error converting YAML to JSON: {source}: {err}".replace("\n", " ")) from None
    return [d for d in docs if d is not None]


def schema() -> dict[str, Any]:
    return yaml.safe_load((HERE / "config-schema.yaml").read_text())


_DURATION = re.compile(r"^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$|^0$")


def _type_error(value: Any, path: str, go_type: str) -> Fail:
    kind = {
        bool: "bool",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }
    got = kind.get(type(value), type(value).__name__)
    return Fail(f"json: cannot unmarshal {got} into Go struct field {path} of type {go_type}")


def check_fields(value: Any, type_name: str, path: str, types: dict[str, Any]) -> None:
    """Raise Fail for the first unknown field or wrongly typed value under ``path``."""
    if value is None:
        return
    if type_name == "any":
        return
    if type_name.startswith("[]"):
        if not isinstance(value, list):
            raise _type_error(value, path, type_name)
        for i, item in enumerate(value):
            check_fields(item, type_name[2:], f"{path}[{i}]", types)
        return
    if type_name.startswith("map["):
        if not isinstance(value, dict):
            raise _type_error(value, path, type_name)
        inner = type_name[type_name.index("]") + 1 :]
        for key, item in value.items():
            check_fields(item, inner, f"{path}.{key}", types)
        return
    if type_name == "string":
        if not isinstance(value, str):
            raise _type_error(value, path, "string")
    elif type_name == "bool":
        if not isinstance(value, bool):
            raise _type_error(value, path, "bool")
    elif type_name in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _type_error(value, path, "int32" if type_name == "int" else "float32")
    elif type_name == "duration":
        if not isinstance(value, str) or not _DURATION.match(value):
            raise Fail(f'time: invalid duration "{value}" in {path}')
    else:
        fields = types[type_name]
        if not isinstance(value, dict):
            raise _type_error(value, path, type_name)
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if key not in fields:
                raise Fail(f'strict decoding error: unknown field "{where}"')
            check_fields(item, fields[key], where, types)


def decode_strict(doc: dict[str, Any]) -> tuple[str, str]:
    """(apiVersion, kind) of a config document whose every field is known; Fail otherwise."""
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if not api_version or not kind:
        raise Fail(
            "invalid configuration: kind and apiVersion is mandatory information that must be specified"
        )
    data = schema()
    kinds = data["kinds"]
    if api_version not in kinds:
        if str(api_version).startswith("kubeadm.k8s.io/"):
            raise Fail(
                f'lab double: kubeadm config apiVersion "{api_version}" is not modelled; '
                "the double accepts only kubeadm.k8s.io/v1beta3 (what kubeadm 1.25 documents)"
            )
        raise Fail(f'no kind "{kind}" is registered for version "{api_version}"')
    if kind not in kinds[api_version]:
        raise Fail(f'no kind "{kind}" is registered for version "{api_version}"')
    group, _, version = str(api_version).rpartition("/")
    fields = dict(kinds[api_version][kind])
    fields.update(apiVersion="string", kind="string")
    types = dict(data["types"])
    types["__kind__"] = fields
    try:
        check_fields(doc, "__kind__", "", types)
    except Fail as err:
        gvk = f'schema.GroupVersionKind{{Group:"{group}", Version:"{version}", Kind:"{kind}"}}'
        raise Fail(f"error unmarshaling configuration {gvk}: {err.message}") from None
    return str(api_version), str(kind)


# ---------------------------------------------------------------- containerd


def toml_load(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        import tomllib  # Python >= 3.11 (Debian 12's python3)
    except ImportError:  # pragma: no cover - the lab interpreter is 3.11
        import tomli as tomllib  # type: ignore[no-redef]
    with open(path, "rb") as f:
        return tomllib.load(f)


class Containerd:
    """The node's containerd, reached with ``ctr`` at the CRI socket, and its config."""

    def __init__(self, env: Env, cri_socket: str = "") -> None:
        self.env = env
        socket_url = cri_socket or env.setting("cri_socket", "unix:///var/run/containerd/containerd.sock")
        self.socket = str(env.path(socket_url.replace("unix://", "", 1)))
        self.config_file = env.path("/etc/containerd/config.toml")
        self.config = toml_load(self.config_file)

    def _cri(self) -> dict[str, Any]:
        return self.config.get("plugins", {}).get("io.containerd.grpc.v1.cri", {})

    @property
    def systemd_cgroup(self) -> bool:
        runc = self._cri().get("containerd", {}).get("runtimes", {}).get("runc", {})
        return bool(runc.get("options", {}).get("SystemdCgroup", False))

    @property
    def sandbox_image(self) -> str:
        return str(self._cri().get("sandbox_image", "registry.k8s.io/pause:3.6"))

    @property
    def hosts_dir(self) -> str:
        """containerd's registry config_path under this node's root ('' when unset)."""
        path = self._cri().get("registry", {}).get("config_path", "")
        return str(self.env.path(path)) if path else ""

    def ctr(self, *args: str, timeout: int = CTR_TIMEOUT) -> subprocess.CompletedProcess:
        ctr = self.env.setting("ctr", "ctr")
        try:
            return subprocess.run(
                [ctr, "--address", self.socket, "--connect-timeout", "5s", "--namespace", "k8s.io", *args],
                capture_output=True,
                text=True,
                timeout=timeout,
            )
        except FileNotFoundError:
            return subprocess.CompletedProcess(args, 127, "", f"{ctr}: executable file not found in $PATH")
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(args, 124, "", f"ctr {' '.join(args)}: timed out")

    def running_error(self) -> str:
        """'' when containerd answers on the CRI socket, else kubeadm's CRI error text."""
        result = self.ctr("version", timeout=15)
        if result.returncode == 0:
            return ""
        output = (result.stderr or result.stdout).strip().replace("\n", " ")
        return f"container runtime is not running: output: {output}, error: exit status {result.returncode}"

    def images(self) -> set[str]:
        result = self.ctr("images", "ls", "-q", timeout=30)
        if result.returncode != 0:
            return set()
        return {line.strip() for line in result.stdout.splitlines() if line.strip()}

    def pull(self, image: str) -> str:
        """Pull through containerd's registry config as the CRI would; '' or ctr's error."""
        args = ["images", "pull"]
        if self.hosts_dir:
            args += ["--hosts-dir", self.hosts_dir]
        result = self.ctr(*args, image)
        if result.returncode == 0:
            return ""
        lines = [ln for ln in (result.stderr + result.stdout).strip().splitlines() if ln.strip()]
        return lines[-1] if lines else f"exit status {result.returncode}"


# ---------------------------------------------------------------- images of a release


def normalize_version(version: str) -> str:
    return version if version.startswith("v") else "v" + version


def kubeadm_images(env: Env, cluster: dict[str, Any]) -> dict[str, str]:
    """What kubeadm 1.25 (cmd/kubeadm/app/images/images.go) pulls for this ClusterConfiguration."""
    release = env.release
    default_repo = str(release["repository"])
    repo = cluster.get("imageRepository") or default_repo
    tag = normalize_version(str(cluster.get("kubernetesVersion") or env.version)).replace("+", "_")
    images = {
        name: f"{repo}/{name}:{tag}"
        for name in ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kube-proxy")
    }
    images["pause"] = f"{repo}/pause:{release['pause']}"
    etcd = (cluster.get("etcd") or {}).get("local")
    if etcd is not None or not (cluster.get("etcd") or {}).get("external"):
        etcd = etcd or {}
        etcd_repo = etcd.get("imageRepository") or repo
        images["etcd"] = f"{etcd_repo}/etcd:{etcd.get('imageTag') or release['etcd']}"
    dns = cluster.get("dns") or {}
    dns_repo = dns.get("imageRepository") or repo
    if dns_repo == "registry.k8s.io":  # the coredns path rule: only the default gets /coredns
        dns_repo += "/coredns"
    images["coredns"] = f"{dns_repo}/coredns:{dns.get('imageTag') or release['coredns']}"
    return images


# ---------------------------------------------------------------- registries (hosts.toml)


def split_image(image: str) -> tuple[str, str, str]:
    """(registry host, repository, tag-or-digest) of a fully qualified image reference."""
    name, reference = image, "latest"
    if "@" in image:
        name, reference = image.split("@", 1)
    else:
        last = image.rsplit("/", 1)[-1]
        if ":" in last:
            name, reference = image.rsplit(":", 1)
    first, _, rest = name.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        first, rest = "docker.io", name if rest else f"library/{name}"
    return first, rest, reference


def registry_hosts(env: Env, hosts_dir: str, registry: str) -> list[dict[str, Any]]:
    """The endpoints containerd would use for ``registry`` per its hosts.toml (docs/hosts.md)."""
    config_dir = Path(hosts_dir) / registry if hosts_dir else None
    if config_dir is None or not (config_dir / "hosts.toml").exists():
        if hosts_dir and (Path(hosts_dir) / "_default" / "hosts.toml").exists():
            config_dir = Path(hosts_dir) / "_default"
        else:
            return [{"url": f"https://{registry}", "ca": None, "skip_verify": False}]
    data = toml_load(config_dir / "hosts.toml")
    endpoints = []
    for url, host in (data.get("host") or {}).items():
        endpoints.append(
            {
                "url": url.rstrip("/"),
                "ca": _ca_path(env, host.get("ca")),
                "skip_verify": bool(host.get("skip_verify")),
            }
        )
    if data.get("server") and str(data["server"]).rstrip("/") not in {e["url"] for e in endpoints}:
        endpoints.append(
            {
                "url": str(data["server"]).rstrip("/"),
                "ca": _ca_path(env, data.get("ca")),
                "skip_verify": bool(data.get("skip_verify")),
            }
        )
    return endpoints


def _ca_path(env: Env, ca: Any) -> str | None:
    if not ca:
        return None
    first = ca[0] if isinstance(ca, list) else ca
    return str(env.path(str(first)))


def manifest_exists(env: Env, hosts_dir: str, image: str, timeout: float = 10.0) -> str:
    """'' when the registry (per containerd's hosts.toml) has the image's manifest, else why not."""
    import ssl
    import urllib.error
    import urllib.parse
    import urllib.request

    registry, repository, reference = split_image(image)
    accept = ", ".join(
        [
            "application/vnd.oci.image.index.v1+json",
            "application/vnd.oci.image.manifest.v1+json",
            "application/vnd.docker.distribution.manifest.list.v2+json",
            "application/vnd.docker.distribution.manifest.v2+json",
        ]
    )
    problems = []
    for endpoint in registry_hosts(env, hosts_dir, registry):
        context = (
            ssl.create_default_context(cafile=endpoint["ca"])
            if endpoint["ca"]
            else ssl.create_default_context()
        )
        if endpoint["skip_verify"]:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        base = endpoint["url"]
        url = f"{base}/v2/{repository}/manifests/{reference}"
        headers = {"Accept": accept}
        for _attempt in range(2):
            request = urllib.request.Request(url, method="HEAD", headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=timeout, context=context):
                    return ""
            except urllib.error.HTTPError as err:
                challenge = err.headers.get("WWW-Authenticate", "")
                if (
                    err.code == 401
                    and challenge.lower().startswith("bearer")
                    and "Authorization" not in headers
                ):
                    token = _anonymous_token(challenge, repository, context, timeout)
                    if token:
                        headers["Authorization"] = f"Bearer {token}"
                        continue
                problems.append(f"HEAD {url}: {err.code}")
                break
            except (urllib.error.URLError, OSError) as err:
                problems.append(f"HEAD {url}: {getattr(err, 'reason', err)}")
                break
    return "; ".join(problems) or f"no endpoint for {registry}"


def _anonymous_token(challenge: str, repository: str, context: Any, timeout: float) -> str:
    import urllib.parse
    import urllib.request

    params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    realm = params.pop("realm", "")
    if not realm:
        return ""
    params.setdefault("scope", f"repository:{repository}:pull")
    url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(params)
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
            body = json.loads(response.read() or b"{}")
    except (OSError, ValueError):
        return ""
    return str(body.get("token") or body.get("access_token") or "")


# ---------------------------------------------------------------- small helpers


def parse_flags(argv: list[str], spec: dict[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Parse ``--flag value``/``--flag=value``/``-f value``; spec maps flag -> 'str'|'bool'|'list'."""
    flags: dict[str, Any] = {}
    positional: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            positional.extend(argv[i:])
            break
        if arg.startswith("-") and arg != "-":
            name, eq, value = arg.partition("=")
            if name not in spec:
                raise Fail(f"unknown flag: {name}", 2)
            kind = spec[name]
            if kind == "bool":
                flags[name] = value.lower() != "false" if eq else True
            else:
                if not eq:
                    i += 1
                    if i >= len(argv):
                        raise Fail(f"flag needs an argument: {name}", 2)
                    value = argv[i]
                if kind == "list":
                    flags.setdefault(name, []).extend(v for v in value.split(",") if v)
                elif kind == "multi":
                    flags.setdefault(name, []).append(value)
                else:
                    flags[name] = value
        else:
            positional.append(arg)
        i += 1
    return flags, positional


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ('24h0m0s', '2h', '90s')."""
    if text in ("0", ""):
        return 0.0
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", text):
        total += float(number) * units[unit]
    return total


def read_text(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def now() -> float:
    return time.time()

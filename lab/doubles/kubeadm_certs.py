"""kubeadm 1.25's certificate commands in the lab double, on the node's real PKI.

- ``certs check-expiration``: kubeadm's text report (cmd/kubeadm/app/cmd/certs.go,
  ``certTextPrinter``: a Go tabwriter with minwidth 10, tabwidth 4, padding 3; dates as
  ``Jan 02, 2006 15:04 MST``; residual time as apimachinery's ``ShortHumanDuration``);
- ``certs renew all|NAME``: each certificate signed again by its CA with a new key, keeping
  its subject and SANs (kubeadm's renewal manager), for one year; kubeconfigs get a new
  client certificate; the static pods are not restarted (kubeadm says so and stops there);
- ``init phase certs apiserver --config F``: the apiserver serving certificate made when
  absent; an existing one is kept if the CA signed it and it holds every SAN the config asks
  for, else the phase fails as kubeadm's ``validateCertificateWithConfig`` does (so a re-issue
  moves the old pair aside first, as kubeadm's documentation says);
- ``init phase upload-config kubeadm --config F``: the ClusterConfiguration stored as the
  cluster's kubeadm-config (what later joins and these phases read), written to the API
  through admin.conf as kubeadm writes it: so, as with kubeadm, it fails while the API server
  that admin.conf's endpoint reaches serves a certificate without the endpoint's name.
"""

from __future__ import annotations

import base64
import ipaddress
import time
from pathlib import Path
from typing import Any

import kubeadm_pki
import yaml
from apiclient import ApiClient, ApiUnavailable
from doublelib import Env, Fail, parse_flags, write_atomic

PKI = "/etc/kubernetes/pki"
KUBECONFIGS = ("admin.conf", "controller-manager.conf", "scheduler.conf")
# display name -> (file stem under pki/, CA display name); kubeadm lists them by name
CERTS = {
    "apiserver": ("apiserver", "ca"),
    "apiserver-etcd-client": ("apiserver-etcd-client", "etcd-ca"),
    "apiserver-kubelet-client": ("apiserver-kubelet-client", "ca"),
    "etcd-healthcheck-client": ("etcd/healthcheck-client", "etcd-ca"),
    "etcd-peer": ("etcd/peer", "etcd-ca"),
    "etcd-server": ("etcd/server", "etcd-ca"),
    "front-proxy-client": ("front-proxy-client", "front-proxy-ca"),
}
CA_FILES = {"ca": "ca", "etcd-ca": "etcd/ca", "front-proxy-ca": "front-proxy-ca"}
# kubeadm's renewal messages (certlist.go LongName / kubeconfig descriptions)
LONG_NAMES = {
    "admin.conf": "certificate embedded in the kubeconfig file for the admin to use and for kubeadm itself",
    "apiserver": "certificate for serving the Kubernetes API",
    "apiserver-etcd-client": "certificate the apiserver uses to access etcd",
    "apiserver-kubelet-client": "certificate for the API server to connect to kubelet",
    "controller-manager.conf": "certificate embedded in the kubeconfig file for the controller manager to use",
    "etcd-healthcheck-client": "certificate for liveness probes to healthcheck etcd",
    "etcd-peer": "certificate for etcd nodes to communicate with each other",
    "etcd-server": "certificate for serving etcd",
    "front-proxy-client": "certificate for the front proxy client",
    "scheduler.conf": "certificate embedded in the kubeconfig file for the scheduler manager to use",
}


def kd():  # noqa: ANN201 - the double's main module (imported late: it imports this one)
    import kubeadm_double

    return kubeadm_double


# ---------------------------------------------------------------- reading certificates


def not_after(env: Env, pem: bytes) -> float:
    """The certificate's NotAfter as epoch seconds (openssl's ``-enddate``)."""
    text = kd().openssl(env, "x509", "-noout", "-enddate", "-in", "/dev/stdin", stdin=pem).decode()
    value = text.strip().split("=", 1)[1]
    return float(time.mktime(time.strptime(value, "%b %d %H:%M:%S %Y %Z")) - time.timezone)


def subject(env: Env, pem: bytes) -> str:
    """``/O=.../CN=...`` (the form openssl -subj takes) of a certificate."""
    text = kd().openssl(env, "x509", "-noout", "-subject", "-nameopt", "RFC2253", "-in", "/dev/stdin",
                        stdin=pem).decode()
    parts = text.strip().split("=", 1)[1].split(",")
    return "".join(f"/{part.strip()}" for part in reversed(parts))


def sans(env: Env, pem: bytes) -> list[str]:
    """``DNS:x`` / ``IP:y`` entries of a certificate ([] without the extension)."""
    text = kd().openssl(env, "x509", "-noout", "-ext", "subjectAltName", "-in", "/dev/stdin",
                        stdin=pem).decode()
    entries = []
    for line in text.splitlines()[1:]:
        for item in filter(None, (i.strip() for i in line.split(","))):
            kind, _, value = item.partition(":")
            if kind == "IP Address":
                entries.append(f"IP:{ipaddress.ip_address(value)}")
            elif kind == "DNS":
                entries.append(f"DNS:{value}")
    return entries


def kubeconfig_cert(path: Path) -> bytes | None:
    try:
        doc = yaml.safe_load(path.read_text())
        return base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])
    except (OSError, KeyError, IndexError, TypeError, ValueError, yaml.YAMLError):
        return None


# ---------------------------------------------------------------- check-expiration


def short_human_duration(seconds: float) -> str:
    """apimachinery's duration.ShortHumanDuration."""
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60:
        return f"{s}s"
    if s // 60 < 60:
        return f"{s // 60}m"
    hours = s // 3600
    if hours < 24:
        return f"{hours}h"
    if hours < 24 * 365:
        return f"{hours // 24}d"
    return f"{int(seconds / 3600 / 24 / 365)}y"


def tabwrite(rows: list[list[str]], minwidth: int = 10, padding: int = 3) -> list[str]:
    """Go's text/tabwriter for rows whose cells but the last end in a tab (one column block)."""
    columns = max(len(row) for row in rows) - 1
    widths = [max([minwidth] + [len(row[i]) + padding for row in rows if len(row) > i + 1])
              for i in range(columns)]
    return ["".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + row[-1] for row in rows]


def expiration_rows(env: Env) -> tuple[list[list[str]], list[list[str]]]:
    now = time.time()
    pki = env.path(PKI)

    def row(name: str, pem: bytes | None, ca: str | None) -> list[str]:
        if pem is None:
            return [f"!MISSING! {name}", "", "", ""] + ([""] if ca is not None else [])
        expires = not_after(env, pem)
        cells = [name, time.strftime("%b %d, %Y %H:%M UTC", time.gmtime(expires)),
                 short_human_duration(expires - now)]
        return cells + ([ca] if ca is not None else []) + [f"{'no':<8}"]

    def read(path: Path) -> bytes | None:
        return path.read_bytes() if path.exists() else None

    certs = []
    for name in sorted([*CERTS, *KUBECONFIGS]):
        if name in KUBECONFIGS:
            certs.append(row(name, kubeconfig_cert(env.path(f"/etc/kubernetes/{name}")), ""))
        else:
            stem, ca = CERTS[name]
            certs.append(row(name, read(pki / f"{stem}.crt"), ca))
    cas = [row(name, read(pki / f"{stem}.crt"), None) for name, stem in CA_FILES.items()]
    return certs, cas


def check_expiration(env: Env, argv: list[str]) -> None:
    parse_flags(argv, {"--config": "str", "--cert-dir": "str", "--kubeconfig": "str", "--v": "str"})
    out = kd().out
    if env.state.read().get("init") and env.path("/etc/kubernetes/admin.conf").exists():
        out("[check-expiration] Reading configuration from the cluster...")
        out("[check-expiration] FYI: You can look at this config file with"
            " 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    else:
        out("[check-expiration] Error reading configuration from the Cluster. Falling back to default"
            " configuration")
    out()
    certs, cas = expiration_rows(env)
    header = ["CERTIFICATE", "EXPIRES", "RESIDUAL TIME", "CERTIFICATE AUTHORITY", "EXTERNALLY MANAGED"]
    for line in tabwrite([header, *certs]):
        out(line)
    out()
    for line in tabwrite([["CERTIFICATE AUTHORITY", "EXPIRES", "RESIDUAL TIME", "EXTERNALLY MANAGED"], *cas]):
        out(line)


# ---------------------------------------------------------------- renew


def renew_file(env: Env, name: str) -> None:
    stem, ca = CERTS[name]
    pki = env.path(PKI)
    crt = pki / f"{stem}.crt"
    if not crt.exists():
        raise Fail(f"{name} is not a valid certificate for this cluster: open {crt}: no such file or directory")
    old = crt.read_bytes()
    leaf = next(leaf for leaf in kubeadm_pki.LEAVES if leaf.name == stem)
    ca_stem = CA_FILES[ca]
    cert, key = kubeadm_pki.sign(lambda *args: kd().openssl(env, *args), pki / f"{ca_stem}.crt",
                                 pki / f"{ca_stem}.key", subject(env, old), leaf.usage, sans(env, old) or None)
    write_atomic(pki / f"{stem}.key", key, 0o600)
    write_atomic(crt, cert)


def renew_kubeconfig(env: Env, name: str) -> None:
    path = env.path(f"/etc/kubernetes/{name}")
    try:
        server = yaml.safe_load(path.read_text())["clusters"][0]["cluster"]["server"]
    except (OSError, KeyError, IndexError, TypeError, yaml.YAMLError):
        raise Fail(f"{name} is not a valid kubeconfig for this cluster: open {path}: no such file or directory") \
            from None
    kd().write_kubeconfigs(env, server, (name,))


def renew(env: Env, argv: list[str]) -> None:
    flags, positional = parse_flags(argv, {"--config": "str", "--cert-dir": "str", "--kubeconfig": "str",
                                           "--csr-only": "bool", "--csr-dir": "str", "--v": "str"})
    names = sorted([*CERTS, *KUBECONFIGS])
    if len(positional) != 1 or positional[0] not in ["all", *names]:
        raise Fail(f'lab double: kubeadm certs renew takes one of: all, {", ".join(names)}', 2)
    if flags.get("--csr-only"):
        raise Fail("lab double: kubeadm certs renew --csr-only is not modelled", 2)
    out = kd().out
    out("[renew] Reading configuration from the cluster...")
    out("[renew] FYI: You can look at this config file with 'kubectl -n kube-system get cm kubeadm-config -o yaml'")
    out()
    for name in names if positional[0] == "all" else positional:
        if name in KUBECONFIGS:
            renew_kubeconfig(env, name)
        else:
            renew_file(env, name)
        out(f"{LONG_NAMES[name]} renewed")
    if positional[0] == "all":
        out("\nDone renewing certificates. You must restart the kube-apiserver, kube-controller-manager,"
            " kube-scheduler and etcd, so that they can use the new certificates.")


def cmd_certs(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if argv[:1] == ["check-expiration"]:
        extra["command"] = "certs check-expiration"
        return check_expiration(env, argv[1:])
    if argv[:1] == ["renew"]:
        extra["command"] = "certs renew"
        return renew(env, argv[1:])
    raise Fail('lab double: only "kubeadm certs check-expiration|renew" is modelled', 2)


# ---------------------------------------------------------------- init phases


def phase_config(env: Env, argv: list[str]) -> tuple[Any, dict[str, Any]]:
    flags, positional = parse_flags(argv, {"--config": "str", "--kubeconfig": "str", "--cert-dir": "str",
                                           "--v": "str"})
    if positional:
        raise Fail(f'unknown command "{positional[0]}"', 2)
    if "--config" not in flags:
        raise Fail("lab double: these init phases are modelled with --config only", 2)
    config = kd().Config.from_file(env, flags["--config"])
    cluster = config.cluster or {"apiVersion": "kubeadm.k8s.io/v1beta3", "kind": "ClusterConfiguration"}
    cluster.setdefault("kubernetesVersion", f"v{env.version}")
    kd().fail_validation(kd().validate_cluster(env, cluster))
    return config, cluster


def certs_apiserver(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    config, cluster = phase_config(env, argv)
    extra["command"] = "init phase certs apiserver"
    node = config.node_name()
    advertise = kd().advertise_address(env, config.init or {})
    wanted = kubeadm_pki.apiserver_sans(cluster, node, advertise)
    pki = env.path(PKI)
    crt, key = pki / "apiserver.crt", pki / "apiserver.key"
    out = kd().out
    if crt.exists() or key.exists():
        if not (crt.exists() and key.exists()):
            raise kd().phase_error("certs/apiserver", f"failure loading apiserver certificate: couldn't load"
                                   f" the certificate file {crt}: open {crt}: no such file or directory")
        verify = kd().openssl(env, "verify", "-CAfile", str(pki / "ca.crt"), str(crt), check=False)
        if b": OK" not in verify:
            raise kd().phase_error("certs/apiserver", "certificate apiserver is not signed by corresponding CA")
        have = sans(env, crt.read_bytes())
        missing = [entry for entry in wanted if entry not in have]
        if missing:
            kind, value = missing[0].split(":", 1)
            valid = [e.split(":", 1)[1] for e in have if e.startswith(f"{kind}:")]
            raise kd().phase_error("certs/apiserver", f"certificate apiserver is invalid: x509: certificate is"
                                   f" valid for {', '.join(valid)}, not {value}")
        out('[certs] Using the existing "apiserver" certificate and key')
        return
    out('[certs] Generating "apiserver" certificate and key')
    dns = [e[4:] for e in wanted if e.startswith("DNS:")]
    ips = [e[3:] for e in wanted if e.startswith("IP:")]
    out(f"[certs] apiserver serving cert is signed for DNS names [{' '.join(dns)}] and IPs [{' '.join(ips)}]")
    leaf = kubeadm_pki.LEAVES[0]
    cert, new_key = kubeadm_pki.sign(lambda *args: kd().openssl(env, *args), pki / "ca.crt", pki / "ca.key",
                                     leaf.subject, leaf.usage, wanted)
    write_atomic(key, new_key, 0o600)
    write_atomic(crt, cert)


def upload_config(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    if argv[:1] != ["kubeadm"]:
        raise Fail('lab double: only "kubeadm init phase upload-config kubeadm" is modelled', 2)
    config, cluster = phase_config(env, argv[1:])
    extra["command"] = "init phase upload-config kubeadm"
    kd().admin_guard(env, {})
    kd().out('[upload-config] Storing the configuration used in ConfigMap "kubeadm-config" in the'
             ' "kube-system" Namespace')
    problem = kd().api_write(env, lambda admin, credentials, state: store_config(admin, credentials, cluster))
    if problem:
        raise kd().phase_error("upload-config/kubeadm", "error uploading the kubeadm ClusterConfiguration:"
                               f" unable to create ConfigMap: {problem}")
    with env.state.update() as state:
        record = state["init"].setdefault("config", {})
        record["cluster"] = cluster
        state["init"]["controlPlaneEndpoint"] = cluster.get("controlPlaneEndpoint")


def store_config(admin_conf: Path, credentials: Path, cluster: dict[str, Any]) -> str:
    """The kubeadm-config ConfigMap in the API (kubeadm's uploadconfig); "" or why it failed."""
    config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": "kubeadm-config", "namespace": "kube-system"},
                  "data": {"ClusterConfiguration": yaml.safe_dump(cluster, sort_keys=False)}}
    try:
        code = ApiClient(admin_conf, credentials).upsert("/api/v1/namespaces/kube-system/configmaps", config_map)
    except (ApiUnavailable, OSError, KeyError, StopIteration, ValueError) as error:
        return str(error)
    return f"kubeadm-config: HTTP {code}" if code >= 300 else ""


def cmd_init_phase(env: Env, argv: list[str], extra: dict[str, Any]) -> bool:
    """``kubeadm init phase certs apiserver`` / ``upload-config kubeadm``; False for other phases."""
    if len(argv) >= 3 and argv[0] == "phase" and argv[1] == "upload-config":
        upload_config(env, argv[2:], extra)
        return True
    if len(argv) >= 3 and argv[0] == "phase" and argv[1] == "certs" and argv[2] == "apiserver":
        certs_apiserver(env, argv[3:], extra)
        return True
    return False


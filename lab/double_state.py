"""Read (from the host) what the lab's kubeadm and kubelet doubles recorded.

The doubles keep the cluster (the API server and etcd stand-in) in one directory that the
lab bind-mounts into every node: ``cluster.json`` (init record, tokens, certificate key,
nodes in join order, applied manifests), ``invocations.jsonl`` (one JSON line per call of
a double) and ``heartbeats/<node>.json`` (written by each kubelet double). The doubles
take the same flock as this reader, so reads never see a half-written state.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

DEFAULT_STATE_DIR = "/var/lib/kubeferry-lab/cluster"


class ClusterRecord:
    """The recorded state of one lab cluster, for tests and ``kubeferry-lab status``."""

    def __init__(self, path: Path | str = DEFAULT_STATE_DIR) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self, exclusive: bool) -> Iterator[None]:
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def state(self) -> dict[str, Any]:
        """The whole ``cluster.json`` ({} before the first kubeadm call that records)."""
        file = self.path / "cluster.json"
        if not file.exists():
            return {}
        with self._locked(exclusive=False):
            return json.loads(file.read_text())

    def invocations(self, program: str | None = None, node: str | None = None) -> list[dict[str, Any]]:
        """Every recorded call, oldest first: time, node, program, argv (secrets redacted),
        secret_flags, cwd, uid, exit_code, result, duration, and per command extras."""
        file = self.path / "invocations.jsonl"
        if not file.exists():
            return []
        with self._locked(exclusive=False):
            lines = file.read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        return [
            r
            for r in records
            if (program is None or r["program"] == program) and (node is None or r["node"] == node)
        ]

    def nodes(self) -> list[dict[str, Any]]:
        """Registered nodes in join order: name, role (control-plane|worker), order, via, address."""
        return sorted(self.state().get("nodes", []), key=lambda n: n["order"])

    def join_order(self) -> list[tuple[str, str]]:
        return [(n["name"], n["role"]) for n in self.nodes()]

    def init_config(self) -> dict[str, Any] | None:
        """The init record: kubernetesVersion, imageRepository, podSubnet, serviceSubnet,
        controlPlaneEndpoint, endpoint, images, ca_hash, addons, and the config documents."""
        return self.state().get("init")

    def tokens(self) -> list[dict[str, Any]]:
        return self.state().get("tokens", [])

    def certificate_key(self) -> dict[str, Any] | None:
        """{"key", "expires"} of the uploaded certificates (kubeadm-certs), or None."""
        return self.state().get("certificate_key")

    def heartbeats(self) -> dict[str, dict[str, Any]]:
        """Latest kubelet double report per node: time, images, pull_errors, sandbox_ok..."""
        folder = self.path / "heartbeats"
        beats = {}
        if folder.is_dir():
            for item in sorted(folder.glob("*.json")):
                with contextlib.suppress(ValueError, OSError):
                    beats[item.stem] = json.loads(item.read_text())
        return beats

    # -- fault injection for tests of kubeferry (the lab's business, not the doubles') ------

    def _update(self, change: Any) -> None:
        with self._locked(exclusive=True):
            file = self.path / "cluster.json"
            data = json.loads(file.read_text()) if file.exists() else {}
            change(data)
            fd, tmp = tempfile.mkstemp(dir=self.path, prefix=".cluster.json.")
            with os.fdopen(fd, "w") as handle:
                json.dump(data, handle, indent=1, sort_keys=True)
            os.replace(tmp, file)

    def expire_certificate_key(self) -> None:
        """Make the uploaded certificates expire now (as 2 h after upload-certs would)."""

        def change(data: dict[str, Any]) -> None:
            if data.get("certificate_key"):
                data["certificate_key"]["expires"] = time.time() - 1

        self._update(change)

    def expire_tokens(self) -> None:
        """The recorded tokens expire (nodes without run_control_plane discover from this record;
        with it, discovery reads the bootstrap-token Secrets in the API instead)."""
        def change(data: dict[str, Any]) -> None:
            for token in data.get("tokens", []):
                token["expires"] = time.time() - 1

        self._update(change)


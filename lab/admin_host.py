"""The site's own admin host: air-gapped like the nodes, with only a stock Python and ssh.

A real site's operator carries the bundle to a machine inside the air gap and runs
``python3 kubeferry.pyz install`` there. The lab's admin host is that machine: a service
host at ``.3`` (its own network namespace on the bridge, no route out, the air-gap
counter) with a root of its own, an overlay of the lab's cached base root and a layer of
its own in which Debian's python3 is back on PATH (the base hides it from nodes with
dpkg-divert) and python3-yaml is purged, so no third-party Python package is there. The
OpenSSH client and tar are the base's.

One long-lived holder process (``admin-init.sh``, PID 1 of the admin host's pid, mount
and UTS namespaces) keeps the overlay mounted; it is recorded in the site journal by pid
and start time, so ``down`` stops it and its mounts vanish with it. Commands enter its
namespaces with nsenter and chroot into the root, in the host's cgroup.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path, PurePosixPath
from typing import Mapping, Sequence

from kubeferry.errors import OperationError
from kubeferry.lab import proc
from kubeferry.lab.doubles_recipe import PRIVATE_BIN
from kubeferry.lab.service_host import ServiceHost, start_recorded
from kubeferry.lab.site import ADMIN_SERVICE_HOST, Site

NAME = "admin"
INIT_SCRIPT = "admin-init.sh"
HOME = "/root"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READY_TIMEOUT = 30.0
PREPARED = ".kubeferry-lab-admin"  # in the layer: python3 restored, python3-yaml purged
# Third-party Python packages a stock Debian python3 may carry; the admin layer has none.
THIRD_PARTY_DIRS = ("/usr/lib/python3/dist-packages", "/usr/local/lib/python3.11/dist-packages")


class AdminHost:
    """The site's air-gapped admin host; ``run`` a command there, ``put`` a file onto it."""

    def __init__(self, site: Site, host: ServiceHost):
        self.site = site
        self.host = host
        self.directory = site.data_directory / NAME
        self.root = self.directory / "root"

    @property
    def address(self) -> str:
        return self.host.address

    @classmethod
    def up(cls, site: Site) -> AdminHost:
        """The site's admin host, started (and its layer prepared) unless it runs already."""
        admin = cls(site, site.add_host(NAME, ADMIN_SERVICE_HOST))
        if admin._init_record() is None:
            admin._start()
        if not admin.alive():
            raise OperationError(f"lab {site.name}: the admin host's holder process is gone; "
                                 f"'kubeferry-lab down --name {site.name}' and up again")
        admin._prepare_layer()
        return admin

    def alive(self) -> bool:
        record = self._init_record()
        return bool(record and record.get("pid")) and proc.is_same_process(
            record["pid"], record.get("started"))  # type: ignore[index]

    # -- using it -----------------------------------------------------------------------

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
            timeout: float = 600.0, input: str | None = None,
            check: bool = False) -> subprocess.CompletedProcess[str]:
        """``argv`` inside the admin host (root, HOME=/root, the stock PATH, ``env`` added).

        Values in ``env`` reach the command through its environment, never its argv. On
        timeout the whole command (its process group) is killed and OperationError raised.
        """
        environment = {"PATH": PATH, "HOME": HOME, "LANG": "C.UTF-8", "USER": "root",
                       **(env or {})}
        wrapper = self._enter(["/usr/sbin/chroot", str(self.root), *argv])
        process = subprocess.Popen(
            wrapper, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environment,
            cwd="/", start_new_session=True)
        try:
            stdout, stderr = process.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise OperationError(f"admin host: '{argv[0]}' did not finish in {timeout:.0f}s") from None
        result = subprocess.CompletedProcess(list(argv), process.returncode, stdout, stderr)
        if check and result.returncode != 0:
            detail = (stderr.strip() or stdout.strip() or "no output").splitlines()[-1]
            raise OperationError(f"admin host: '{' '.join(argv)}' failed ({result.returncode}): {detail}")
        return result

    def put(self, source: Path, destination: str, mode: int = 0o644) -> str:
        """Copy a file of this machine onto the admin host's disk (through its overlay)."""
        target = PurePosixPath(destination)
        if not target.is_absolute() or ".." in target.parts:
            raise OperationError(f"admin host path {destination!r} must be absolute")
        argv = self._enter(["install", "-D", "-m", f"{mode:o}", str(source),
                            f"{self.root}{target}"], chroot=False)
        proc.run(argv, timeout=300)
        return str(target)

    def path(self, inside: str) -> Path:
        """Where a file the admin host wrote is on this machine, to read (its own layer)."""
        return self.directory / "upper" / inside.lstrip("/")

    # -- making it ----------------------------------------------------------------------

    def _enter(self, argv: Sequence[str], chroot: bool = True) -> list[str]:
        """``argv`` in the admin host's namespaces (pid, mount, UTS, net), in its cgroup."""
        record = self._init_record()
        if record is None or not self.alive():
            raise OperationError(f"lab {self.site.name}: the admin host is not running")
        namespaces = ["-m", "-u", "-n", "-p"] if chroot else ["-m"]
        return ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
                "kubeferry-lab-admin", self.host.cgroup,
                "nsenter", "-t", str(record["pid"]), *namespaces, "--", *argv]

    def _init_record(self) -> dict | None:
        for resource in self.site.journal.resources:
            if (resource["kind"], resource.get("host"), resource.get("role")) == (
                    "process", NAME, "init"):
                return resource
        return None

    def _start(self) -> None:
        for sub in ("upper", "work", "root"):
            (self.directory / sub).mkdir(parents=True, exist_ok=True)
        self._write_identity()
        ready = self.directory / "ready"
        ready.unlink(missing_ok=True)
        local_script = proc.copy_init_script(INIT_SCRIPT, self.directory)
        launcher = start_recorded(
            self.site.journal, self.host.cgroup,
            ["nsenter", f"--net=/run/netns/{self.host.netns}", "unshare", "--mount", "--uts",
             "--pid", "--fork", "--kill-child", "--propagation", "private",
             "sh", str(local_script), str(self.site.base), str(self.directory)],
            log=self.directory / "console.log", ready=ready.exists, ready_timeout=READY_TIMEOUT,
            what="admin host", record={"host": NAME, "role": "launcher", "stop": "kill"})
        record = self.site.journal.add("process", host=NAME, role="init", stop="kill")
        pid = _only_child(launcher.pid)
        self.site.journal.update(record, pid=pid, started=proc.start_time(pid))

    def _write_identity(self) -> None:
        """Host name files in the layer, written before the overlay is mounted (allowed)."""
        etc = self.directory / "upper" / "etc"
        etc.mkdir(mode=0o755, exist_ok=True)
        (etc / "hostname").write_text(f"{NAME}\n")
        (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{NAME}\n")

    def _prepare_layer(self) -> None:
        """Python back on PATH, python3-yaml purged: a stock python3, nothing third-party."""
        if self.path(f"/etc/{PREPARED}").exists():
            return
        listed = self.run(["dpkg-divert", "--list"], check=True).stdout
        for line in listed.splitlines():
            words = line.split()  # local diversion of /usr/bin/X to PRIVATE_BIN/X
            if len(words) == 6 and words[:2] == ["local", "diversion"] and words[5].startswith(
                    f"{PRIVATE_BIN}/"):
                self.run(["dpkg-divert", "--local", "--remove", "--rename", words[3]], check=True)
        self.run(["dpkg", "--purge", "python3-yaml"], check=True, timeout=300)
        self._check_stock_python()
        self.run(["sh", "-c", f": > /etc/{PREPARED}"], check=True)

    def _check_stock_python(self) -> None:
        found = self.run(["sh", "-c", "command -v python3 && python3 --version"]).stdout.split()
        if not found or found[0] != "/usr/bin/python3":
            raise OperationError(f"admin host: python3 is not on PATH ({' '.join(found)})")
        if self.run(["python3", "-c", "import yaml"]).returncode == 0:
            raise OperationError("admin host: python3 still imports yaml (python3-yaml not purged)")
        listing = self.run(["sh", "-c", "for d in \"$@\"; do [ -d \"$d\" ] && ls -A \"$d\"; done; :",
                            "sh", *THIRD_PARTY_DIRS]).stdout.split()
        extra = [name for name in listing if name != "__pycache__"]
        if extra:
            raise OperationError(f"admin host: third-party Python packages left: {', '.join(extra)}")


def _only_child(pid: int, timeout: float = 10.0) -> int:
    """The pid of ``pid``'s first child (the admin host's PID 1 under ``unshare --fork``)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    found: list[int] = []

    def forked() -> bool:
        try:
            found[:] = [int(child) for child in children.read_text().split()]
        except OSError:
            return True
        return bool(found)

    proc.wait_until(forked, timeout, interval=0.02)
    if not found:
        raise OperationError(f"the admin host's holder (pid {pid}) started no PID 1")
    return found[0]


def load(site: Site) -> AdminHost | None:
    """The site's admin host if it has one (made by ``AdminHost.up``)."""
    host = site.hosts.get(NAME)
    return AdminHost(site, host) if host is not None else None

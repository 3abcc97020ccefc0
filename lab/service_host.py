"""A service host: a lab address in a network namespace of its own, running given processes.

Site services (the Harbor stand-in) live on the lab bridge like any machine of the site,
but need no systemd or node root: just a namespace, an address, and processes the site
starts there, records, and stops by pid on ``down``.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from kubeferry.errors import OperationError
from kubeferry.lab import network, proc

if TYPE_CHECKING:
    from kubeferry.lab.journal import Journal
    from kubeferry.lab.site import Site


@dataclass
class ServiceHost:
    """A named address on the lab bridge (e.g. ``harbor`` at .2) that runs processes."""

    name: str
    address: str
    netns: str
    veth: str
    cgroup: str
    site: Site | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "site"}

    def command(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this host's network namespace (for a one-off command)."""
        return network.in_netns(self.netns, argv)

    def start(
        self,
        argv: Sequence[str],
        *,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        ready: Callable[[], bool] | None = None,
        ready_timeout: float = 30.0,
    ) -> subprocess.Popen[bytes]:
        """Start a long-running process on this host; ``down`` stops it by pid if you don't.

        Its output goes to ``log``; it runs in this host's cgroup, so anything it forks is
        found and stopped too. With ``ready``, waits (at most ``ready_timeout`` seconds)
        until it returns true; a process that exits or is not ready by then is stopped and
        reported with the end of its log.
        """
        assert self.site is not None, "a ServiceHost starts processes through its Site"
        return start_recorded(
            self.site.journal, self.cgroup, self.command(argv), log=log, env=env, cwd=cwd,
            ready=ready, ready_timeout=ready_timeout, what=f"{self.name}: {argv[0]}",
            record={"host": self.name, "argv": list(argv)},
        )

    def stop(self, process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
        """Stop a process started with ``start`` (SIGTERM, then SIGKILL after ``grace``)."""
        assert self.site is not None
        stop_recorded(self.site.journal, process, grace)


def start_recorded(
    journal: Journal,
    cgroup: str,
    argv: Sequence[str],
    *,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    ready: Callable[[], bool] | None = None,
    ready_timeout: float = 30.0,
    what: str = "",
    record: Mapping[str, Any] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in ``cgroup``, recorded in ``journal`` (with ``record``'s fields) before
    it starts and with its pid and start time after, so ``down`` stops it by pid; see
    ``ServiceHost.start`` for ``ready``. The process outlives this one (its own session)."""
    resource = journal.add("process", **(record or {"argv": list(argv)}))
    wrapper = [
        "sh", "-c", 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
        "kubeferry-lab-service", cgroup, *argv,
    ]
    with open(log, "ab") as output:
        process = subprocess.Popen(
            wrapper, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else dict(os.environ), cwd=cwd,
            start_new_session=True, close_fds=True,
        )
    started = proc.start_time(process.pid)  # None: already gone, nothing to stop later
    journal.update(resource, pid=process.pid if started is not None else None, started=started)
    if ready is None:
        return process
    settled = proc.wait_until(
        lambda: process.poll() is not None or ready(), ready_timeout, interval=0.1
    )
    if not settled or process.poll() is not None:
        stop_recorded(journal, process)
        tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])
        raise OperationError(
            f"{what or argv[0]} exited or was not ready in {ready_timeout:.0f}s: "
            f"{tail or 'no output'} ({log})"
        )
    return process


def stop_recorded(journal: Journal, process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop a process started with ``start_recorded`` and forget it in ``journal``."""
    for resource in list(journal.resources):
        if resource["kind"] == "process" and resource.get("pid") == process.pid:
            proc.stop(process.pid, resource.get("started"), grace=grace)
            journal.discard(resource)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=grace + 10)

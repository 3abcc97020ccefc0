"""Operations: idempotent changes. Each returns the steps needed to reach the desired state
from the facts, and nothing when the node is already there (pyinfra's model).

A step is one sh command line, optionally with bytes on its stdin (file contents, secrets:
never on the command line), or Python work (``run``) for what is more than one command on
one host: kubeadm with the configuration it reads written first and scrubbed after, a
reboot and the wait for it, work on the admin host. A phase computes its steps once;
``--plan`` prints their descriptions and a run applies the same list, so the two cannot
drift apart.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from kubeferry.errors import OperationError
from kubeferry.installer import facts
from kubeferry.installer.ssh import CommandFailed, CommandResult, Connection


@dataclass(frozen=True)
class Step:
    """One change: ``command`` on the host, or ``run()`` (returns what changed, "" if nothing)."""

    describe: str
    command: str = ""
    stdin: bytes | None = None
    timeout: float = 600
    secrets: tuple[str, ...] = ()  # scrubbed from the error if the command fails
    failure: str = ""  # what the error says failed, instead of the command line
    run: Callable[[], str] | None = None


def run(conn: Connection, command: str, *, secrets: Iterable[str] = (), stdin: bytes | None = None,
        timeout: float = 600, failure: str = "") -> CommandResult:
    """Run ``command``; OperationError (scrubbed of ``secrets``) naming its last error line."""
    result = conn.run(command, stdin=stdin, timeout=timeout, check=False)
    if not result.ok:
        raise CommandFailed(conn.host.name, result, secrets=tuple(secrets), what=failure)
    return result


def apply(conn: Connection | None, steps: Sequence[Step]) -> str:
    """Run ``steps`` in order; what changed, one description each ("" if nothing did).

    ``conn`` may be None for steps that are all Python work (the admin host's own).
    """
    done = []
    for step in steps:
        if step.run is not None:
            changed = step.run()
            if changed:
                done.append(changed)
            continue
        if conn is None:
            raise OperationError(f"step {step.describe!r} is a command but no host was given")
        run(conn, step.command, secrets=step.secrets, stdin=step.stdin, timeout=step.timeout,
            failure=step.failure)
        done.append(step.describe)
    return "; ".join(done)


def file(conn: Connection, path: str, content: str | bytes, mode: str = "0644",
         check: str | None = None) -> list[Step]:
    """``path`` holds exactly ``content`` (written to a temp name, then renamed).

    ``check``: a command (``{}`` = the temp file) that must accept the new content before
    it replaces the old (``haproxy -c -f {}``); if it refuses, nothing at ``path`` changes.
    """
    data = content.encode() if isinstance(content, str) else content
    if facts.file_sha256(path).read(conn) == hashlib.sha256(data).hexdigest():
        return []
    quoted = shlex.quote(path)
    tmp = shlex.quote(path + ".kubeferry-tmp")
    # the temp file is born 0600 (umask in a subshell): a secret is never readable by others,
    # not even between the write and the chmod
    command = (f"mkdir -p \"$(dirname {quoted})\" && rm -f {tmp} && (umask 077 && cat > {tmp})"
               f" && chmod {mode} {tmp}")
    if check:
        command += f" && {{ {check.format(tmp)} || {{ rm -f {tmp}; exit 1; }}; }}"
    describe = f"write {path}" + (f" (checked by {check.split()[0]})" if check else "")
    failure = (f"{path} left unchanged: the new one does not pass `{check.format(path)}`"
               " (or could not be written)") if check else ""
    return [Step(describe, f"{command} && mv -f {tmp} {quoted}", stdin=data, failure=failure)]


def sysctl(conn: Connection, values: dict[str, str], persist_file: str) -> list[Step]:
    """Kernel parameters set now and at boot (``persist_file`` under /etc/sysctl.d)."""
    content = "".join(f"{key} = {value}\n" for key, value in values.items())
    steps = file(conn, persist_file, "# written by kubeferry\n" + content)
    live = [key for key, value in values.items() if facts.sysctl(key).read(conn) != value]
    if live:
        assignments = " ".join(shlex.quote(f"{key}={values[key]}") for key in live)
        steps.append(Step(f"sysctl {' '.join(live)}", f"sysctl -w {assignments} >/dev/null"))
    return steps


def modules(conn: Connection, names: list[str], persist_file: str) -> list[Step]:
    """Kernel modules loaded now and at boot (``persist_file`` under /etc/modules-load.d).

    Raises OperationError naming every module this kernel does not have (before any change).
    """
    states = facts.module_states(names).read(conn)
    missing = [name for name in names if states.get(name, "missing").startswith("missing")]
    if missing:
        raise MissingModules(conn.host.name, missing, states)
    steps = file(conn, persist_file, "# written by kubeferry\n" + "".join(f"{n}\n" for n in names))
    load = [name for name in names if states.get(name) == "loadable"]
    if load:
        steps.append(Step(f"modprobe {' '.join(load)}",
                          " && ".join(f"modprobe {shlex.quote(name)}" for name in load)))
    return steps


class MissingModules(OperationError):
    """Kernel modules the running kernel cannot load."""

    def __init__(self, host: str, missing: list[str], states: dict[str, str]) -> None:
        self.missing = missing
        self.reason = states.get(missing[0], "missing").partition(": ")[2] or "modprobe failed"
        super().__init__(f"{host}: kernel module{'s' if len(missing) > 1 else ''} {', '.join(missing)}"
                         f" not available ({self.reason})")


def marked_block(conn: Connection, path: str, marker: str, lines: list[str]) -> list[Step]:
    """``path`` holds ``lines`` between ``# BEGIN <marker>`` and ``# END <marker>``.

    Only that block is rewritten (added at the end when missing); the rest of the file is
    kept line for line. The file is replaced by rename, as ``file`` does.
    """
    current = facts.file_content(path).read(conn) or ""
    return file(conn, path, with_block(current, marker, lines))


def with_block(text: str, marker: str, lines: list[str]) -> str:
    """``text`` with its ``marker`` block replaced by ``lines`` (appended if absent).

    A BEGIN line without its END (a hand-damaged file) is replaced alone: nothing after
    it is dropped.
    """
    begin, end = f"# BEGIN {marker}", f"# END {marker}"
    block = [f"{begin} (managed by kubeferry: edits here are overwritten)", *lines, end]
    existing = text.splitlines()
    start = next((i for i, line in enumerate(existing) if line.startswith(begin)), None)
    if start is None:
        return "\n".join([*existing, *block]) + "\n"
    stop = next((i for i in range(start + 1, len(existing)) if existing[i].strip() == end), start)
    return "\n".join([*existing[:start], *block, *existing[stop + 1:]]) + "\n"


def service(conn: Connection, unit: str, enabled: bool = True, running: bool = True,
            restart: bool = False) -> list[Step]:
    """A systemd unit enabled/started as asked; ``restart`` after its config changed."""
    is_enabled, is_active = facts.service_state(unit).read(conn)
    quoted = shlex.quote(unit)
    steps = []
    if enabled and not is_enabled:
        steps.append(Step(f"enable {unit}", f"systemctl enable {quoted}"))
    if not enabled and is_enabled:
        steps.append(Step(f"disable {unit}", f"systemctl disable {quoted}"))
    if running and (restart and is_active):
        steps.append(Step(f"restart {unit}", f"systemctl restart {quoted}"))
    elif running and not is_active:
        steps.append(Step(f"start {unit}", f"systemctl start {quoted}"))
    elif not running and is_active:
        steps.append(Step(f"stop {unit}", f"systemctl stop {quoted}"))
    return steps

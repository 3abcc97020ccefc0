"""Operations: idempotent changes. Each returns the steps needed to reach the desired state
from the facts, and nothing when the node is already there (pyinfra's model).

A step is one sh command line, optionally with bytes on its stdin (file contents, secrets:
never on the command line). ``apply`` runs them; ``--plan`` prints their descriptions.
"""

from __future__ import annotations

import hashlib
import shlex
from dataclasses import dataclass

from kubeferry.errors import OperationError
from kubeferry.installer import facts
from kubeferry.installer.ssh import Connection


@dataclass(frozen=True)
class Step:
    describe: str
    command: str
    stdin: bytes | None = None


def apply(conn: Connection, steps: list[Step]) -> str:
    """Run ``steps`` in order; return what changed, one description per line ("" if nothing)."""
    for step in steps:
        conn.run(step.command, stdin=step.stdin)
    return "; ".join(step.describe for step in steps)


def file(conn: Connection, path: str, content: str | bytes, mode: str = "0644") -> list[Step]:
    """``path`` holds exactly ``content`` (written to a temp name, then renamed)."""
    data = content.encode() if isinstance(content, str) else content
    if facts.file_sha256(path).read(conn) == hashlib.sha256(data).hexdigest():
        return []
    quoted = shlex.quote(path)
    tmp = shlex.quote(path + ".kubeferry-tmp")
    # the temp file is born 0600 (umask in a subshell): a secret is never readable by others,
    # not even between the write and the chmod
    command = (f"mkdir -p \"$(dirname {quoted})\" && rm -f {tmp} && (umask 077 && cat > {tmp})"
               f" && chmod {mode} {tmp} && mv -f {tmp} {quoted}")
    return [Step(f"write {path}", command, stdin=data)]


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

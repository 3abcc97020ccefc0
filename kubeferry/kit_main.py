# The __main__.py of kubeferry.pyz (bundler/kit.py puts it there). It must run on any
# Python an admin host may have (2.7, CentOS 7's 3.6): no f-strings, no annotations, and
# nothing from kubeferry but this file.
"""Find a Python that can run the kit, then run the PEX inside it with the same arguments.

kubeferry.pyz is a zip application holding ``kit.json`` (the Pythons and platforms its
wheels serve) and ``kubeferry.pex`` (the CLI, built by pex). On a Python the kit does not
serve, a supported ``python3.X`` on PATH is used instead (EL8: ``python3`` is 3.6, its
``python39`` package is 3.9); with none, one line says which ones it needs (exit 2)
rather than a resolver's page of wheel tags. The PEX is copied once into the user's
cache (checked against its sha256) because a PEX runs from a file of its own.
"""

import hashlib
import json
import os
import platform
import subprocess
import sys
import zipfile

INNER = "kubeferry.pex"
INFO = "kit.json"
REEXEC = "KUBEFERRY_KIT_REEXEC"  # set when this launcher already chose another Python
KIT = "KUBEFERRY_KIT"  # the kit's path, for `bundle build` run from a kit (bundler/kit.py)


def machines(info):
    """x86_64, aarch64: the machines of ``manylinux2014_x86_64``-style platform names."""
    return sorted(set(name.split("_", 1)[1] for name in info.get("platforms", []) if "_" in name))


def supported(info):
    """True when this interpreter can load the kit's wheels."""
    version = "%d.%d" % sys.version_info[:2]
    libc = platform.libc_ver()[0]
    return (platform.python_implementation() == "CPython" and version in info.get("pythons", [])
            and platform.machine() in machines(info) and libc in ("glibc", ""))


def other_pythons(info):
    """``python3.X`` executables on PATH for the kit's Pythons, newest first."""
    found = []
    for version in reversed(info.get("pythons", [])):
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            candidate = os.path.join(folder, "python" + version)
            if folder and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
                if runs(candidate):
                    found.append(candidate)
                break
    return found


def runs(python):
    """Whether ``python`` starts (a version manager's shim may not), within 30 seconds."""
    argv = [python, "-c", "import zipfile"]
    with open(os.devnull, "wb") as devnull:
        try:
            return subprocess.call(argv, stdout=devnull, stderr=devnull, timeout=30) == 0
        except TypeError:  # Python 2: no timeout
            return subprocess.call(argv, stdout=devnull, stderr=devnull) == 0
        except (OSError, getattr(subprocess, "TimeoutExpired", OSError)):
            return False


def unsupported_line(info):
    pythons = info.get("pythons") or ["?"]
    return ("kubeferry: kubeferry.pyz runs on CPython %s-%s (%s, glibc 2.17 or later); this is"
            " %s %s on %s and no python%s..python%s is on PATH: run it with one"
            " (README: Inside the air gap)"
            % (pythons[0], pythons[-1], " or ".join(machines(info)),
               platform.python_implementation(), platform.python_version(),
               platform.machine() or "?", pythons[0], pythons[-1]))


def cached_pex(archive, info):
    """The PEX inside ``archive`` as a file of its own, extracted once and verified."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "kubeferry", "kit")
    target = os.path.join(folder, info["sha256"] + ".pex")
    if os.path.isfile(target):
        return target
    if not os.path.isdir(folder):
        os.makedirs(folder)
    partial = "%s.partial-%d" % (target, os.getpid())
    digest = hashlib.sha256()
    with zipfile.ZipFile(archive) as kit, kit.open(INNER) as source, open(partial, "wb") as out:
        while True:
            block = source.read(1 << 20)
            if not block:
                break
            digest.update(block)
            out.write(block)
    if digest.hexdigest() != info["sha256"]:
        os.unlink(partial)
        sys.stderr.write("kubeferry: %s is damaged (its PEX does not match its sha256);"
                         " extract it from the bundle again\n" % archive)
        sys.exit(1)
    os.rename(partial, target)
    return target


def main():
    archive = os.path.dirname(os.path.abspath(__file__))
    with zipfile.ZipFile(archive) as kit:
        info = json.loads(kit.read(INFO).decode("utf-8"))
    python = sys.executable
    if not supported(info):
        others = [] if os.environ.get(REEXEC) else other_pythons(info)
        if not others:
            sys.stderr.write(unsupported_line(info) + "\n")
            sys.exit(2)
        os.environ[REEXEC] = "1"
        os.execv(others[0], [others[0], archive] + sys.argv[1:])
    flags = ["-I"] if getattr(sys.flags, "isolated", 0) else []
    os.environ[KIT] = archive
    os.environ.pop(REEXEC, None)
    inner = cached_pex(archive, info)
    os.execv(python, [python] + flags + [inner] + sys.argv[1:])


if __name__ == "__main__":
    main()

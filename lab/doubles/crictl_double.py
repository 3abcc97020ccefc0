"""The lab's crictl stand-in (cri-tools): version, images, pull and info through containerd."""

from __future__ import annotations

import sys
from typing import Any

import yaml
from doublelib import Containerd, Env, Fail, parse_flags, read_text

FLAGS = {
    "-r": "str",
    "--runtime-endpoint": "str",
    "-i": "str",
    "--image-endpoint": "str",
    "--version": "bool",
    "-q": "bool",
    "--quiet": "bool",
    "--timeout": "str",
    "-t": "str",
    "--debug": "bool",
    "-D": "bool",
}


def handle(env: Env, argv: list[str], extra: dict[str, Any]) -> None:
    flags, positional = parse_flags(argv, FLAGS)
    if flags.get("--version"):
        sys.stdout.write(f"crictl version v{env.release.get('cri_tools', env.version)}\n")
        return
    settings = yaml.safe_load(read_text(env.path("/etc/crictl.yaml")) or "") or {}
    endpoint = flags.get("-r") or flags.get("--runtime-endpoint") or settings.get("runtime-endpoint") or ""
    runtime = Containerd(env, str(endpoint))
    command = positional[0] if positional else ""
    extra["command"] = command
    if command == "version":
        error = runtime.running_error()
        if error:
            raise Fail(f"FATA[0000] {error}")
        sys.stdout.write(
            "Version:  0.1.0\nRuntimeName:  containerd\nRuntimeVersion:  1.6\nRuntimeApiVersion:  v1\n"
        )
    elif command == "images":
        images = sorted(runtime.images())
        if flags.get("-q") or flags.get("--quiet"):
            sys.stdout.write("".join(f"{i}\n" for i in images))
        else:
            sys.stdout.write("IMAGE\n" + "".join(f"{i}\n" for i in images))
    elif command == "pull" and len(positional) == 2:
        error = runtime.pull(positional[1])
        if error:
            raise Fail(
                f'E0000 remote_image.go] "PullImage from image service failed" err="{error}" image="{positional[1]}"\n'
                f"FATA[0000] pulling image: {error}"
            )
        sys.stdout.write(f"Image is up to date for {positional[1]}\n")
    elif command == "info":
        error = runtime.running_error()
        if error:
            raise Fail(f"FATA[0000] {error}")
        sys.stdout.write('{"status": {"conditions": [{"type": "RuntimeReady", "status": true}]}}\n')
    elif command in ("ps", "pods"):
        sys.stdout.write("")
    else:
        raise Fail(
            f"lab double: crictl {command} is not modelled (version, images, pull, info, ps, pods)",
            1,
        )

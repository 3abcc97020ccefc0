#!/usr/lib/kubeferry-lab/bin/python3
"""grubby on the lab's EL7 nodes: EL7's grubby (8.28) as kubeferry and kernel-ml's scriptlets
use it, over a GRUB2 configuration kept in files (no boot loader, no disk to install one on).

State, where EL7 keeps it: ``/boot/grub2/grub.cfg`` holds one ``menuentry`` per kernel
(``linux16 <image> <args>`` / ``initrd16 <initrd>``), newest added first, as grubby writes
them; ``/boot/grub2/grubenv`` holds ``saved_entry=<title>`` (EL7's ``GRUB_DEFAULT=saved``).
The lab boots a node into the kernel of the default entry (its ``uname -r``; docs/lab.md).

Supported: ``--add-kernel=IMAGE --title=T [--initrd=F] [--copy-default] [--args=A]
[--make-default]``, ``--remove-kernel=IMAGE``, ``--set-default=IMAGE``,
``--set-default-index=N``, ``--default-kernel``, ``--default-index``, ``--default-title``,
``--info=IMAGE|ALL``. Refused as grubby refuses them (exit 1, a message on stderr): an
unknown option, ``--add-kernel`` without ``--title``, an image or index with no entry.
Standard library only: it runs on the lab's private interpreter, never on a Python on PATH.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

CONFIG = os.environ.get("KUBEFERRY_LAB_GRUB_CFG", "/boot/grub2/grub.cfg")
GRUBENV = os.environ.get("KUBEFERRY_LAB_GRUBENV", "/boot/grub2/grubenv")
_ENTRY = re.compile(r"^menuentry '(?P<title>[^']*)'[^{]*\{\n(?P<body>.*?)^\}\n", re.M | re.S)
_VALUED = ("add-kernel", "remove-kernel", "set-default", "set-default-index", "title",
           "initrd", "args", "info")
_FLAGS = ("copy-default", "make-default", "default-kernel", "default-index", "default-title")


@dataclass
class Entry:
    title: str
    image: str
    args: str
    initrd: str


class Refused(Exception):
    """What grubby prints before it exits 1."""


def _read_entries() -> list[Entry]:
    try:
        with open(CONFIG, encoding="utf-8") as handle:
            text = handle.read()
    except FileNotFoundError:
        return []
    entries = []
    for match in _ENTRY.finditer(text):
        image, args, initrd = "", "", ""
        for line in match["body"].splitlines():
            words = line.split(None, 2)
            if words and words[0] in ("linux16", "linux"):
                image = "/boot" + words[1] if not words[1].startswith("/boot") else words[1]
                args = words[2] if len(words) > 2 else ""
            elif words and words[0] in ("initrd16", "initrd"):
                initrd = "/boot" + words[1] if not words[1].startswith("/boot") else words[1]
        entries.append(Entry(match["title"], image, args, initrd))
    return entries


def _write(path: str, text: str) -> None:
    temp = f"{path}.kubeferry-lab-tmp"
    with open(temp, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temp, path)


def _write_entries(entries: list[Entry]) -> None:
    blocks = ["### BEGIN /etc/grub.d/10_linux ###\n"]
    for entry in entries:
        blocks.append(f"menuentry '{entry.title}' --class centos --class gnu-linux --class gnu "
                      "--class os --unrestricted {\n"
                      f"\tlinux16 {entry.image[len('/boot'):]} {entry.args}\n"
                      + (f"\tinitrd16 {entry.initrd[len('/boot'):]}\n" if entry.initrd else "")
                      + "}\n")
    blocks.append("### END /etc/grub.d/10_linux ###\n")
    _write(CONFIG, "".join(blocks))


def _saved_entry() -> str:
    try:
        with open(GRUBENV, encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("saved_entry="):
                    return line.strip().split("=", 1)[1]
    except FileNotFoundError:
        pass
    return ""


def _set_saved(title: str) -> None:
    # grub2-editenv's file: a 1024-byte block padded with '#'
    body = f"# GRUB Environment Block\nsaved_entry={title}\n"
    _write(GRUBENV, body + "#" * max(0, 1024 - len(body)))


def _default_index(entries: list[Entry]) -> int:
    saved = _saved_entry()
    for index, entry in enumerate(entries):
        if entry.title == saved:
            return index
    return 0 if entries else -1


def _find(entries: list[Entry], image: str) -> int:
    for index, entry in enumerate(entries):
        if entry.image == image:
            return index
    raise Refused(f"The param {image} is incorrect")


def _parse(argv: list[str]) -> dict[str, str | bool]:
    options: dict[str, str | bool] = {}
    rest = list(argv)
    while rest:
        word = rest.pop(0)
        if not word.startswith("--"):
            raise Refused(f"grubby: unexpected argument {word}")
        name, has_value, value = word[2:].partition("=")
        if name in _FLAGS and not has_value:
            options[name] = True
        elif name in _VALUED:
            if not has_value:
                if not rest:
                    raise Refused(f"grubby: option --{name} requires an argument")
                value = rest.pop(0)
            options[name] = value
        else:
            raise Refused(f"grubby: bad argument --{name}: unknown option")
    return options


def run(argv: list[str]) -> str:
    """Do what ``grubby argv`` does; returns its standard output."""
    options = _parse(argv)
    entries = _read_entries()
    if "add-kernel" in options:
        image = str(options["add-kernel"])
        if "title" not in options:
            raise Refused("grubby: kernel title must be specified")
        args = str(options.get("args", ""))
        if options.get("copy-default") and _default_index(entries) >= 0:
            args = " ".join(filter(None, [entries[_default_index(entries)].args, args]))
        entries = [e for e in entries if e.image != image]
        entries.insert(0, Entry(str(options["title"]), image, args, str(options.get("initrd", ""))))
        _write_entries(entries)
        if options.get("make-default"):
            _set_saved(str(options["title"]))
        return ""
    if "remove-kernel" in options:
        index = _find(entries, str(options["remove-kernel"]))
        del entries[index]
        _write_entries(entries)
        return ""
    if "set-default" in options:
        _set_saved(entries[_find(entries, str(options["set-default"]))].title)
        return ""
    if "set-default-index" in options:
        value = str(options["set-default-index"])
        if not value.isdigit() or int(value) >= len(entries):
            raise Refused(f"grubby: no entry at index {value}")
        _set_saved(entries[int(value)].title)
        return ""
    index = _default_index(entries)
    if options.get("default-kernel"):
        return f"{entries[index].image}\n" if index >= 0 else ""
    if options.get("default-index"):
        return f"{index}\n"
    if options.get("default-title"):
        return f"{entries[index].title}\n" if index >= 0 else ""
    if "info" in options:
        chosen = entries if options["info"] == "ALL" else [entries[_find(entries, str(options["info"]))]]
        return "".join(f"index={entries.index(e)}\nkernel={e.image}\nargs=\"{e.args}\"\n"
                       f"initrd={e.initrd}\ntitle={e.title}\n" for e in chosen)
    raise Refused("grubby: no action specified")


def main() -> int:
    try:
        sys.stdout.write(run(sys.argv[1:]))
    except Refused as refused:
        print(refused, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

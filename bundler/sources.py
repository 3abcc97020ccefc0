"""Where a build fetches from: defaults in ``manifests/sources.yaml``, remapped by the operator.

The effective sources for one (Kubernetes, OS, arch) are four flat maps, name -> URL:
``registries`` (upstream registry name as it appears in image names -> API endpoint),
``repositories`` (package repositories for the OS), ``files`` (pinned files) and
``indexes`` (Python package indexes for the admin kit's wheels: ``pypi``, then any other
index or find-links directory the machine's pip configuration adds).
``kubeferry bundle sources`` prints them as YAML; ``--sources FILE`` takes the same
schema back and replaces any entry it names; ``--mirror HOST=URL`` replaces a registry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from kubeferry import manifests
from kubeferry.errors import InputError
from kubeferry.yamlfile import read_yaml

SECTIONS = ("registries", "repositories", "files", "indexes")


@dataclass
class Sources:
    """The effective sources of one build: every URL it may touch."""

    registries: dict[str, str] = field(default_factory=dict)
    repositories: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    indexes: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {name: dict(getattr(self, name)) for name in SECTIONS}

    def to_yaml(self, header: str = "") -> str:
        body = yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)
        return header + body


def _render(value: str, context: dict[str, str]) -> str:
    return value.format_map(context) if "{" in value else value


def _select(section: Any, os_name: str, context: dict[str, str]) -> dict[str, str]:
    """A section is a flat map, or per-OS maps under the OS name; flatten for ``os_name``."""
    selected: dict[str, str] = {}
    for key, value in (section or {}).items():
        if isinstance(value, dict):
            if key == os_name:
                selected.update({k: _render(str(v), context) for k, v in value.items()})
        else:
            selected[str(key)] = _render(str(value), context)
    return selected


def default_sources(kubernetes: str, os_name: str, arch: str) -> Sources:
    """The upstream sources for a build, with templates filled in for this release."""
    major, minor, _ = kubernetes.split(".")
    context = {"kubernetes": kubernetes, "minor": f"{major}.{minor}", "os": os_name,
               "arch": arch, "rpm_arch": {"amd64": "x86_64", "arm64": "aarch64"}.get(arch, arch)}
    data = manifests.load("sources")
    sources = Sources(**{name: _select(data.get(name), os_name, context) for name in SECTIONS})
    from kubeferry.bundler.files import pinned_file_urls  # files.py imports Sources

    sources.files = {**pinned_file_urls(kubernetes), **sources.files}
    sources.indexes = python_indexes()
    return sources


def python_indexes() -> dict[str, str]:
    """``pypi`` (pip's index-url), then pip's extra indexes and find-links, as pip is set up here."""
    from kubeferry.bundler.pyindex import pip_index_urls

    main, *others = pip_index_urls()
    return {"pypi": main, **{f"pip-{number}": url for number, url in enumerate(others, 1)}}


def check_url(url: str, what: str) -> str:
    """``url`` if it is an http(s) URL with a host, else InputError naming ``what``."""
    try:
        parts = urlsplit(url)
    except ValueError as error:  # 'http://[::1' and the like
        raise InputError(f"{what}: {url!r} is not a URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc or not parts.hostname:
        raise InputError(f"{what}: {url!r} is not an http:// or https:// URL")
    try:
        parts.port  # noqa: B018 - raises ValueError for a port outside 0-65535
    except ValueError:
        raise InputError(f"{what}: {url!r} has a port outside 1-65535") from None
    return url.rstrip("/")


def parse_mirror(value: str) -> tuple[str, str]:
    """``HOST=URL`` from ``--mirror`` as (host, url); InputError if malformed."""
    host, sep, url = value.partition("=")
    if not sep or not host or "/" in host:
        raise InputError(
            f"--mirror {value!r}: expected HOST=URL, e.g. registry.k8s.io=http://127.0.0.1:5000"
        )
    return host, check_url(url, f"--mirror {host}")


def apply_overrides(sources: Sources, overrides_file: Path | None = None,
                    mirrors: tuple[str, ...] = ()) -> Sources:
    """``sources`` with the entries of ``--sources FILE`` and ``--mirror`` put in their place."""
    if overrides_file is not None:
        data = read_yaml(overrides_file, "--sources")
        if not isinstance(data, dict) or set(data) - set(SECTIONS):
            raise InputError(
                f"--sources {overrides_file}: expected only the sections {', '.join(SECTIONS)}"
                " (the output of 'kubeferry bundle sources')"
            )
        for name in SECTIONS:
            section = data.get(name) or {}
            if not isinstance(section, dict):
                raise InputError(f"--sources {overrides_file}: '{name}' must map names to URLs")
            known = getattr(sources, name)
            for key, url in section.items():
                if str(key) not in known:  # a typo would otherwise fall back to the internet
                    raise InputError(
                        f"--sources {overrides_file}: {name}.{key} is not a source this build"
                        f" uses; choose from {', '.join(known) or '(none)'}")
                what = f"--sources {name}.{key}"
                local = name == "indexes" and str(url).startswith("file:///")
                known[str(key)] = str(url) if local else check_url(str(url), what)
    for value in mirrors:
        host, url = parse_mirror(value)
        if host not in sources.registries:
            raise InputError(f"--mirror {host}: this build pulls no image from {host};"
                             f" mirror one of {', '.join(sources.registries)}")
        sources.registries[host] = url
    return sources

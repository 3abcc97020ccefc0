"""Wheels from a Python package index, by file name and sha256, into the build's cache.

A wheel the cache already holds (by sha256) costs nothing; any other is looked up on the
index's PEP 503 "simple" page of its project (``<index>/<project>/``) and downloaded
through the cache's Fetcher, verified. The index is the ``indexes.pypi`` source (the
machine's pip configuration when ``--sources`` does not name one): an https or http
index, a ``file://`` index, or a local find-links directory.
"""

from __future__ import annotations

import configparser
import hashlib
import os
import re
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from kubeferry.bundler.fetch import Fetcher
from kubeferry.errors import OperationError

DEFAULT_INDEX = "https://pypi.org/simple"


def pip_settings(environ: dict[str, str] | None = None) -> dict[str, str]:
    """pip's settings on this machine, as pip reads them: its configuration files (site,
    user, ``$PIP_CONFIG_FILE``; sections global and download), then ``PIP_*`` variables."""
    env = os.environ if environ is None else environ
    settings: dict[str, str] = {}
    config_file = env.get("PIP_CONFIG_FILE")
    if config_file != os.devnull:
        xdg_dirs = env.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":")
        home = Path(env.get("HOME", "~")).expanduser()
        files = [Path(d) / "pip" / "pip.conf" for d in xdg_dirs] + [Path("/etc/pip.conf")]
        files += [home / ".pip" / "pip.conf", home / ".config" / "pip" / "pip.conf"]
        files += [Path(config_file)] if config_file else []
        for path in files:
            parser = configparser.RawConfigParser()
            try:
                parser.read(path)
            except (OSError, configparser.Error):
                continue
            for section in ("global", "download"):
                if parser.has_section(section):
                    settings.update(parser.items(section))
    for key in ("index-url", "extra-index-url", "find-links", "cert"):
        value = env.get("PIP_" + key.upper().replace("-", "_"))
        if value is not None:
            settings[key] = value
    return settings


def pip_index_urls(environ: dict[str, str] | None = None) -> list[str]:
    """The package indexes pip would use on this machine, first the main one: index-url,
    extra-index-url, then find-links directories (as ``file://`` URLs).
    ``https://pypi.org/simple`` when nothing is set."""
    settings = pip_settings(environ)
    main = settings.get("index-url", DEFAULT_INDEX).strip()
    extra = settings.get("extra-index-url", "").split()
    links = [link if "://" in link else Path(link).absolute().as_uri()
             for link in settings.get("find-links", "").split()]
    return [main, *extra, *links]


def pip_cert(environ: dict[str, str] | None = None) -> str | None:
    """The CA bundle pip trusts for its indexes (``cert``), if pip is set up with one."""
    cert = pip_settings(environ).get("cert", "").strip()
    return cert or None


@dataclass(frozen=True)
class Link:
    """One file on a PEP 503 project page."""

    file: str
    href: str  # as written: relative to the page, sha256 in the fragment
    requires_python: str = ""


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[Link] = []
        self._attrs: dict[str, str | None] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._attrs = dict(attrs)

    def handle_data(self, data: str) -> None:
        if self._attrs is not None and self._attrs.get("href") and data.strip():
            self.links.append(Link(data.strip(), self._attrs["href"] or "",
                                   self._attrs.get("data-requires-python") or ""))
            self._attrs = None


def project_links(page: str) -> list[Link]:
    """The files a PEP 503 project page lists (HTML entities in attributes decoded)."""
    parser = _Links()
    parser.feed(page)
    return parser.links


def _local_path(location: str) -> Path | None:
    """The directory or file a ``file://`` URL or plain path names; None for http(s)."""
    parts = urlsplit(location)
    if parts.scheme in ("http", "https"):
        return None
    return Path(unquote(parts.path) if parts.scheme == "file" else location)


class WheelSource:
    """Finds wheels on a list of indexes (tried in order) and caches them by sha256."""

    def __init__(self, indexes: list[str], fetcher: Fetcher) -> None:
        self.indexes = indexes
        self.fetcher = fetcher

    def get(self, project: str, file: str, sha256: str) -> Path:
        """The cached wheel ``file`` of ``project``, downloaded first if missing."""
        hit = self.fetcher.cached(("sha256", sha256))
        if hit is not None:
            self.fetcher.count(cached=hit.stat().st_size)
            return hit
        tried = []
        for index in self.indexes:
            found = self._find(index, project, file)
            if found is None:
                tried.append(index)
                continue
            local = _local_path(found)
            if local is None:
                return self.fetcher.fetch(found, ("sha256", sha256), f"wheel {file}")
            return self._copy(local, sha256, file)
        raise OperationError(f"wheel {file} is on none of the package indexes "
                             f"({', '.join(tried)}); set indexes.pypi with --sources")

    def _find(self, index: str, project: str, file: str) -> str | None:
        """The URL (or local path) of ``file`` on ``index``, or None where it is absent."""
        local = _local_path(index)
        if local is not None:
            for candidate in (local / file, local / project / file):
                if candidate.is_file():
                    return str(candidate)
            page_file = local / project / "index.html"
            if not page_file.is_file():
                return None
            page, base = page_file.read_text(errors="replace"), page_file.as_uri()
        else:
            base = f"{index.rstrip('/')}/{project}/"
            try:
                page = self.fetcher.get_bytes(base, f"package index {index}").decode(errors="replace")
            except OperationError as error:
                if re.search(r"\b404\b", str(error)):
                    return None
                raise
        for link in project_links(page):
            if link.file == file:
                return urljoin(base, link.href.split("#", 1)[0])
        return None

    def _copy(self, path: Path, sha256: str, file: str) -> Path:
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise OperationError(f"wheel {file} at {path} does not match its pinned sha256")
        return self.fetcher.put_bytes(data)

"""Wheels by name and sha256 from the indexes pip is set up with (the admin kit's source)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from kubeferry.bundler.fetch import Fetcher
from kubeferry.bundler.pyindex import DEFAULT_INDEX, WheelSource, pip_cert, pip_index_urls
from kubeferry.errors import OperationError


def test_pip_configuration_is_read_as_pip_reads_it(tmp_path: Path) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://mirror.example/simple\n"
                      "extra-index-url = https://extra.example/simple\n  file:///srv/simple\n"
                      "find-links = wheels\n")
    env = {"PIP_CONFIG_FILE": str(config), "HOME": str(tmp_path), "XDG_CONFIG_DIRS": str(tmp_path)}
    urls = pip_index_urls(env)
    assert urls[:3] == ["https://mirror.example/simple", "https://extra.example/simple",
                        "file:///srv/simple"]
    assert urls[3].startswith("file:///") and urls[3].endswith("/wheels")
    assert pip_index_urls({**env, "PIP_INDEX_URL": "https://env.example/simple"})[0] == (
        "https://env.example/simple")
    assert pip_index_urls({"PIP_CONFIG_FILE": os.devnull, "HOME": str(tmp_path)}) == [DEFAULT_INDEX]
    config.write_text(config.read_text() + "cert = /etc/site-ca.pem\n")
    assert pip_cert(env) == "/etc/site-ca.pem" and pip_cert({**env, "PIP_CERT": "/x.pem"}) == "/x.pem"


def _index(tmp_path: Path, data: bytes) -> tuple[Path, str]:
    """A PEP 503 file:// index with one project and one wheel; (root, sha256)."""
    project = tmp_path / "simple" / "demo"
    project.mkdir(parents=True)
    wheel = tmp_path / "files" / "demo-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    wheel.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    (project / "index.html").write_text(
        f'<html><body><a href="../../files/{wheel.name}#sha256={digest}">{wheel.name}</a></body></html>')
    return tmp_path / "simple", digest


def test_a_wheel_comes_from_the_first_index_that_has_it_then_from_the_cache(tmp_path: Path) -> None:
    root, digest = _index(tmp_path, b"wheel bytes")
    fetcher = Fetcher(tmp_path / "cache")
    source = WheelSource([(tmp_path / "empty").as_uri(), root.as_uri()], fetcher)
    path = source.get("demo", "demo-1.0-py3-none-any.whl", digest)
    assert path.read_bytes() == b"wheel bytes" and path.name == digest
    (tmp_path / "files" / "demo-1.0-py3-none-any.whl").unlink()
    assert source.get("demo", "demo-1.0-py3-none-any.whl", digest) == path  # no index needed


def test_a_wheel_that_differs_from_its_pin_is_refused(tmp_path: Path) -> None:
    root, _ = _index(tmp_path, b"tampered")
    source = WheelSource([root.as_uri()], Fetcher(tmp_path / "cache"))
    with pytest.raises(OperationError, match="does not match its pinned sha256"):
        source.get("demo", "demo-1.0-py3-none-any.whl", hashlib.sha256(b"original").hexdigest())

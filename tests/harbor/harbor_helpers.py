"""Helpers shared by the Harbor tests (not fixtures): settings, raw API calls, skopeo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import requests

from kubeferry.installer.inventory import RegistrySettings
from kubeferry.lab.harbor import HarborStandIn
from kubeferry.lab.registry import write_docker_config

API = "/api/v2.0"


def settings_for(harbor: HarborStandIn, project: str = "google_containers",
                 ca_file: str | None = None) -> RegistrySettings:
    return RegistrySettings(url=harbor.url, project=project, username=harbor.admin_username,
                            ca_file=ca_file or harbor.ca_file)


def call(harbor: HarborStandIn, method: str, path: str, *, auth: tuple[str, str] | None = None,
         **kwargs: object) -> requests.Response:
    """One raw API request with no session state (a fresh connection, no cookies)."""
    with requests.Session() as session:
        session.trust_env = False
        return session.request(method, harbor.url + API + path, auth=auth, verify=harbor.ca_file,
                               timeout=10, **kwargs)


def admin(harbor: HarborStandIn) -> tuple[str, str]:
    return harbor.admin_username, harbor.admin_password


def cert_dir(harbor: HarborStandIn, where: Path) -> Path:
    """A directory skopeo reads CAs from (``*.crt``)."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy(harbor.ca_file, where / "harbor-ca.crt")
    return where


def auth_file(harbor: HarborStandIn, where: Path) -> Path:
    """A docker config with the admin login (the password never goes on a command line)."""
    return write_docker_config(where, harbor.host, harbor.admin_username, harbor.admin_password)


def skopeo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)

"""``bundle build --image-source docker``: images from Debian's real dockerd, not a registry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import docker
import pytest

from kubeferry.bundle.reader import Bundle
from kubeferry.lab.containerd import Containerd
from kubeferry.lab.dockerd import DockerDaemon
from kubeferry.lab.standin_images import docker_archive
from kubeferry.versions import image_set

pytestmark = pytest.mark.real


def test_bundle_from_a_local_docker_engine(tmp_path: Path, containerd: Containerd) -> None:
    names = image_set("1.25.0").images
    with DockerDaemon() as daemon:
        client = docker.DockerClient(base_url=daemon.base_url, timeout=60)
        try:
            for name in names:
                client.images.load(docker_archive(name, [b"shared base\n", name.encode()]))
        finally:
            client.close()
        result = subprocess.run(
            [sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", "1.25.0",
             "--include", "images", "--image-source", "docker", "--cache-dir", str(tmp_path / "cache"),
             "--output", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL,
            env={**os.environ, "DOCKER_HOST": daemon.base_url})
    assert result.returncode == 0, result.stderr
    bundle_path = next((tmp_path / "out").glob("*.tar"))
    bundle = Bundle.open(bundle_path)
    bundle.verify()
    assert [image["name"] for image in bundle.images] == list(names)
    layout = tmp_path / "images.tar"
    with open(layout, "wb") as handle:
        bundle.write_images_layout(handle)
    containerd.ctr("images", "import", str(layout))
    held = containerd.images()
    assert all(held.get(image["name"]) == image["digest"] for image in bundle.images)


def test_docker_engine_down_is_one_clear_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubeferry.cli", "bundle", "build", "--k8s", "1.25.0", "--include", "images",
         "--image-source", "docker", "--cache-dir", str(tmp_path / "c"), "--output", str(tmp_path)],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/nothing.sock"})
    assert result.returncode == 1
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Docker Engine" in result.stderr

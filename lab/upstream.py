"""The internet's registries on loopback: a release's images under their real repository paths.

``seed_upstream`` pushes stand-in content for every image of a Kubernetes release into a
local registry; a build then uses it through ``--mirror registry.k8s.io=URL --mirror
docker.io=URL`` and the bundle keeps the real names. Content is deterministic per image
name and tag, so the next patch release shares what upstream would share (etcd, coredns,
pause, calico), and layers named alike are one blob across images.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import yaml

from kubeferry.lab.standin_images import PushedImage, push_image, standin_layer
from kubeferry.oci.reference import ImageReference
from kubeferry.versions import image_set

SPEC = Path(__file__).with_name("upstream.yaml")
PROFILES = {"tiny": 1000, "realistic": 1}


@cache
def _spec() -> dict:
    return yaml.safe_load(SPEC.read_text())


def _image_key(repository: str) -> str:
    """``coredns/coredns`` -> ``coredns``; ``calico/node`` stays; ``kube-proxy`` stays."""
    return "coredns" if repository.endswith("coredns") else repository


def mirrors(registry_url: str) -> tuple[str, ...]:
    """The ``--mirror`` flags that point a build at a seeded stand-in registry."""
    return (f"registry.k8s.io={registry_url}", f"docker.io={registry_url}")


def seed_upstream(registry_url: str, kubernetes: str, profile: str = "tiny",
                  arch: str = "amd64", platforms: tuple[str, ...] = ("amd64", "arm64"),
                  ca_file: str | None = None, auth: tuple[str, str] | None = None,
                  ) -> dict[str, PushedImage]:
    """Push every image of ``kubernetes`` into ``registry_url``; full upstream name -> image."""
    spec = _spec()
    divisor = PROFILES[profile]
    pushed: dict[str, PushedImage] = {}
    for name in image_set(kubernetes).images:
        ref = ImageReference.parse(name)
        key = _image_key(ref.repository)
        layers = []
        for layer, size in spec["images"][key]["layers"].items():
            # a layer named after the image changes with its tag; shared bases do not
            seed = ref.tag if layer.endswith(key.split("/")[-1]) else "base"
            layers.append(standin_layer(f"{layer}-{seed}", max(2048, size // divisor)))
        shape = spec["shapes"].get(key, spec["shapes"]["default"])
        pushed[name] = push_image(registry_url, ref.repository, ref.tag, layers, shape=shape,
                                  arch=arch, platforms=platforms, ca_file=ca_file, auth=auth)
    return pushed

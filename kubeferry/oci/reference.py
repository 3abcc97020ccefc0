"""Image references, normalised the way docker and containerd name images.

The bundle keeps full upstream names (``docker.io/calico/node:v3.24.5``) so that
``ctr images import`` creates exactly the names kubelet asks for; parsing therefore
applies docker's normalisation once, here, and everything else uses the result.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from kubeferry.errors import InputError

DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = {"index.docker.io", "registry-1.docker.io"}

# Grammar from distribution/reference (reference.go), restricted to what registries accept.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_DOMAIN_RE = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[0-9a-fA-F:.]+\])(?::[0-9]+)?$"
)
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$")
DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class ImageReference:
    """A fully normalised image name: registry, repository and a tag and/or a digest."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, name: str) -> ImageReference:
        """Parse ``name`` with docker's rules; a name with neither tag nor digest gets ``latest``.

        No registry part means docker.io, a one-part docker.io name gets ``library/``, and the
        first component is a registry only if it has a '.' or ':' or is 'localhost'.
        """
        if not isinstance(name, str) or not name or name != name.strip():
            raise InputError(f"image name {name!r} is empty or has surrounding spaces")
        rest, digest = name, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not DIGEST_RE.match(digest):
                raise InputError(
                    f"image name {name!r}: digest must be sha256: and 64 lowercase hex digits"
                )
        tag = None
        last_slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > last_slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.match(tag):
                raise InputError(f"image name {name!r}: invalid tag {tag!r}")
        first, sep, remainder = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, repository = first, remainder
            if not _DOMAIN_RE.match(registry):
                raise InputError(f"image name {name!r}: invalid registry {registry!r}")
        else:
            registry, repository = DOCKER_HUB, rest
        if registry in _DOCKER_HUB_ALIASES:
            registry = DOCKER_HUB
        if registry == DOCKER_HUB and "/" not in repository:
            repository = f"library/{repository}"
        if not _REPOSITORY_RE.match(repository):
            raise InputError(
                f"image name {name!r}: invalid repository {repository!r} "
                "(lowercase letters, digits and . _ - separators)"
            )
        if len(f"{registry}/{repository}") > 255:
            raise InputError(f"image name {name!r} is longer than 255 characters")
        if tag is None and digest is None:
            tag = "latest"
        return cls(registry, repository, tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """Registry and repository without tag or digest (``docker.io/calico/node``)."""
        return f"{self.registry}/{self.repository}"

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest if pinned, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> ImageReference:
        if not _TAG_RE.match(tag):
            raise InputError(f"invalid tag {tag!r} for {self.name}")
        return replace(self, tag=tag)

    def with_digest(self, digest: str | None) -> ImageReference:
        if digest is not None and not DIGEST_RE.match(digest):
            raise InputError(f"invalid digest {digest!r} for {self.name}")
        return replace(self, digest=digest)

    def with_registry(self, registry: str) -> ImageReference:
        if not _DOMAIN_RE.match(registry):
            raise InputError(f"invalid registry {registry!r}")
        return replace(self, registry=registry)

    def with_repository(self, repository: str) -> ImageReference:
        if not _REPOSITORY_RE.match(repository):
            raise InputError(f"invalid repository {repository!r}")
        return replace(self, repository=repository)

"""calico.yaml for the site: images from the site registry, the IPv4 pool = podSubnet.

A careful line transform, not a YAML round trip: every other byte of the upstream
manifest stays as it was (comments, key order, quoting), so the applied text is the
upstream file plus exactly these edits. The result is parsed afterwards and checked:
every container image rewritten and calico-node's CALICO_IPV4POOL_CIDR equal to podSubnet.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Iterator

import yaml

from kubeferry.errors import OperationError

POOL_ENV = "CALICO_IPV4POOL_CIDR"
_IMAGE = re.compile(r"^(?P<head>\s*(?:-\s+)?image:\s*)(?P<q>[\"']?)(?P<name>[^\"'\s#>|][^\"'\s#]*)(?P=q)"
                    r"(?P<tail>\s*(?:#.*)?)$")
_POOL_NAME = re.compile(rf"^(?P<indent>\s*)(?P<comment>#\s?)?- name:\s*[\"']?{POOL_ENV}[\"']?\s*$")
_VALUE = re.compile(r"^\s*(?:#\s*)?value:")


def _ending(line: str) -> str:
    return line[len(line.rstrip("\r\n")):]


def rewrite(manifest: str, pod_subnet: str, image_for: Callable[[str], str]) -> str:
    """``manifest`` with each ``image:`` mapped by ``image_for`` and the pool set to ``pod_subnet``."""
    lines = manifest.splitlines(keepends=True)
    pools = 0
    index = 0
    mapped: list[str] = []
    while index < len(lines):
        line = lines[index]
        body, end = line.rstrip("\r\n"), _ending(line)
        image = _IMAGE.match(body)
        if image:
            name = image_for(image["name"])
            mapped.append(name)
            lines[index] = f"{image['head']}{image['q']}{name}{image['q']}{image['tail']}{end}"
        pool = _POOL_NAME.match(body)
        if pool:
            if index + 1 >= len(lines) or not _VALUE.match(lines[index + 1]):
                raise OperationError(f"calico manifest line {index + 1}: {POOL_ENV} has no value"
                                     " line after it")
            indent = pool["indent"]
            following = lines[index + 1]
            lines[index] = f"{indent}- name: {POOL_ENV}{end}"
            lines[index + 1] = f'{indent}  value: "{pod_subnet}"{_ending(following)}'
            pools += 1
            index += 1
        index += 1
    if pools != 1:
        raise OperationError(f"calico manifest: expected one {POOL_ENV} entry (commented or not),"
                             f" found {pools}")
    result = "".join(lines)
    check(result, pod_subnet, set(mapped))
    return result


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec") or {}
    if doc.get("kind") == "Pod":
        yield spec
    template = (spec.get("template") or {}).get("spec")
    if template:
        yield template


def images(manifest: str) -> list[str]:
    """Every container and init container image of ``manifest``, in order."""
    return [str(c.get("image", "")) for spec in _specs(manifest) for c in _containers(spec)]


def _documents(manifest: str) -> list[dict[str, Any]]:
    try:
        return [doc for doc in yaml.safe_load_all(manifest) if isinstance(doc, dict)]
    except yaml.YAMLError as error:
        raise OperationError(f"calico manifest: not valid YAML ({error})") from None


def _specs(manifest: str) -> Iterator[dict[str, Any]]:
    for doc in _documents(manifest):
        yield from _pod_specs(doc)


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return (spec.get("containers") or []) + (spec.get("initContainers") or [])


def check(manifest: str, pod_subnet: str, allowed: set[str]) -> None:
    """OperationError unless every image is in ``allowed`` and the pool is ``pod_subnet``."""
    pool_values = []
    for spec in _specs(manifest):
        for container in _containers(spec):
            image = str(container.get("image", ""))
            if image not in allowed:
                raise OperationError(f"calico manifest: image {image} was not rewritten")
            for env in container.get("env") or []:
                if env.get("name") == POOL_ENV:
                    pool_values.append(str(env.get("value")))
    if pool_values != [pod_subnet]:
        raise OperationError(f"calico manifest: {POOL_ENV} is {pool_values or 'unset'}, not [{pod_subnet!r}]")

"""The YAML data shipped in ``manifests/`` (installed as ``kubeferry.manifests``) and its reader.

The reader lives here, not in ``kubeferry/manifests.py``: a module of that name would
shadow this package (both are ``kubeferry.manifests``) and hide the YAML files.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import yaml


@cache
def load(name: str) -> Any:
    """The parsed YAML file ``manifests/<name>.yaml`` (cached: it never changes at run time)."""
    text = resources.files("kubeferry.manifests").joinpath(f"{name}.yaml").read_text()
    return yaml.safe_load(text)


def path(name: str) -> Any:
    """Where ``manifests/<name>.yaml`` is (a Traversable: a file, or an entry in a zip)."""
    return resources.files("kubeferry.manifests").joinpath(f"{name}.yaml")

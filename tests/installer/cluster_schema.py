"""The lab kubeadm double's strict decoder, loaded from its source for offline checks.

doublelib is lab equipment that runs on nodes (not an importable kubeferry module), so it
is loaded from its file under a private module name.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from importlib import resources
from types import ModuleType


@cache
def doublelib() -> ModuleType:
    path = resources.files("kubeferry.lab").joinpath("doubles", "doublelib.py")
    spec = importlib.util.spec_from_file_location("kubeferry_tests_doublelib", str(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode(text: str) -> list[tuple[str, str]]:
    """(apiVersion, kind) of every document of ``text``, decoded as strictly as the double does."""
    lib = doublelib()
    return [lib.decode_strict(doc) for doc in lib.load_documents(text, "test")]

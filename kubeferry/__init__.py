"""kubeferry: ferries Kubernetes across an air gap.

Build stage: :mod:`kubeferry.bundler` (folder ``bundler/``). Install stage:
:mod:`kubeferry.installer` (folder ``installer/``). Version data: ``manifests/``.
"""

__version__ = "0.1.0"

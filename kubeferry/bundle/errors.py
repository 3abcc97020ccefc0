"""The two ways a file fails to be a good bundle, with their exit codes."""

from __future__ import annotations

from kubeferry.errors import InputError, OperationError


class NotABundle(InputError):
    """The file is unreadable or is not a kubeferry bundle (exit 2)."""


class CorruptBundle(OperationError):
    """The bundle is damaged or was tampered with (exit 1)."""

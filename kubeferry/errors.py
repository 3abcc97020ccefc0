"""Errors an operator can act on.

Every failure kubeferry expects is one of these: the CLI prints its message as one
line and exits with its code, never with a traceback.
"""

from __future__ import annotations


class KubeferryError(Exception):
    """A failed operation (exit code 1): the message names the thing and what to do."""

    exit_code = 1


class InputError(KubeferryError):
    """Bad usage or bad input (exit code 2): a wrong flag, version, file or bundle."""

    exit_code = 2


class OperationError(KubeferryError):
    """Something that should have worked did not (exit code 1): network, remote host."""

    exit_code = 1

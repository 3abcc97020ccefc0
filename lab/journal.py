"""A site's record of everything it made, written before each thing is made.

``down`` walks this record backwards, so whatever an interrupted or crashed ``up`` got as
far as creating is removed, and a resource that never came to exist is simply skipped.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from kubeferry.errors import OperationError

FORMAT = 1


class Journal:
    """``state.json`` of one site: its description (``site``) and its ``resources``, in order."""

    def __init__(self, path: Path, data: dict[str, Any]):
        self.path = path
        self.data = data

    @classmethod
    def load(cls, path: Path) -> Journal | None:
        """The journal at ``path``, or None when there is none."""
        try:
            text = path.read_text()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise OperationError(f"{path} is not valid JSON ({error}); remove it") from error
        if data.get("format") != FORMAT:
            raise OperationError(f"{path} has an unknown format; remove it by hand")
        return cls(path, data)

    @classmethod
    def create(cls, path: Path, site: dict[str, Any]) -> Journal:
        journal = cls(path, {"format": FORMAT, "site": site, "resources": []})
        journal.save()
        return journal

    @property
    def site(self) -> dict[str, Any]:
        return self.data["site"]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return self.data["resources"]

    def add(self, kind: str, **attrs: Any) -> dict[str, Any]:
        """Record a resource about to be made, and save before returning."""
        resource = {"kind": kind, **attrs}
        self.resources.append(resource)
        self.save()
        return resource

    def update(self, resource: dict[str, Any], **attrs: Any) -> None:
        """Add facts learnt after creation (a pid), and save."""
        resource.update(attrs)
        self.save()

    def discard(self, resource: dict[str, Any]) -> None:
        """Forget a resource that is gone, and save."""
        self.resources.remove(resource)
        self.save()

    def save(self) -> None:
        """Write atomically: a crash leaves the old or the new state, never half of one."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as stream:
            json.dump(self.data, stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(tmp, self.path)

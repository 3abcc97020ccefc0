"""Reading an operator's YAML file (--sources, --inventory): every failure is one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from kubeferry.errors import InputError


def read_yaml(path: Path, what: str) -> Any:
    """A small YAML file, every failure one line naming ``what``, the path and where."""
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as error:
        raise InputError(f"{what} {path}: cannot read it ({error.strerror or error})") from None
    except UnicodeDecodeError:
        raise InputError(f"{what} {path}: not a text file (not UTF-8); expected YAML") from None
    try:
        data = yaml.safe_load(text)
        return {} if data is None else data
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "syntax error"
        raise InputError(f"{what} {path}: not valid YAML{where} ({problem})") from None

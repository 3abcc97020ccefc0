"""Terminal output helpers: sizes, progress bars that vanish when not on a terminal."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterator

from tqdm import tqdm


def human_bytes(count: float) -> str:
    """``12.3 MB``: decimal units, as network people count."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(count) < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"  # pragma: no cover


@contextmanager
def progress_bars(quiet: bool) -> Iterator[Callable[[str, int, int], None]]:
    """A ``progress(phase, n, total)`` callback drawing one byte bar per phase.

    Silent with ``--quiet`` or when stderr is not a terminal.
    """
    enabled = not quiet and sys.stderr.isatty()
    bars: dict[str, tqdm] = {}

    def progress(phase: str, done: int, total: int) -> None:
        if not enabled:
            return
        bar = bars.get(phase)
        if bar is None:
            bar = bars[phase] = tqdm(total=total, desc=phase, unit="B", unit_scale=True,
                                     leave=False, file=sys.stderr)
        bar.update(done)

    try:
        yield progress
    finally:
        for bar in bars.values():
            bar.close()

"""Progress bars for the long loops: per-epoch scoring, export accuracy passes, the studies.

tqdm on stderr, drawn only when stderr is a terminal (``disable=None``): logs, pipes and tests get
nothing. A bar never replaces a printed line: results, ✓ lines and log lines stay as they were.
Inner bars (``leave=False``) vanish when done; :func:`above` keeps log lines out of open bars.
The runtime (``pixlm.runtime``) draws no bars: it has no tqdm.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable

from tqdm import tqdm


def bar(
    iterable: Iterable | None = None,
    desc: str | None = None,
    total: float | None = None,
    *,
    leave: bool = True,
    unit: str = "it",
    disable: bool | None = None,
) -> tqdm:
    """A tqdm bar on stderr; ``disable=None`` hides it unless stderr is a terminal."""
    return tqdm(
        iterable,
        desc=desc,
        total=total,
        leave=leave,
        unit=unit,
        file=sys.stderr,
        disable=disable,
        dynamic_ncols=True,
    )


def above(log: Callable[[str], None]) -> Callable[[str], None]:
    """``log`` that clears the open bars, writes its line, then redraws them below it."""

    def write(line: str) -> None:
        with tqdm.external_write_mode(file=sys.stderr):
            log(line)

    return write

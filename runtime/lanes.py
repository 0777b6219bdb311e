"""Fair scheduling between sources: prepared frames wait for the engine in one lane per source.

::

    worker: frame -> regions -> tokens --put--> lane per source
                                                  live: one slot, a newer frame replaces the older
                                                  file: frames of up to `depth` regions, in order
                                                        (back-pressure; always room for one frame)
    engine loop <--take(max_crops)-- round robin: the lane served longest ago first (live first
                                      among equals), one frame per lane per turn

A file decodes far faster than a camera sends. With one shared queue its frames filled every slot
and a camera's frame waited behind them: seconds of latency while a file played beside it. With a
lane per source, a camera's frame waits for at most the engine call in progress and its own when
a batch holds a frame of every source (``--batch`` >= sources x regions), and it is always the
newest one (the source's mailbox, this slot and the batch each hold one frame). The round robin
also works the other way: busy cameras never starve a file.

A file's lane is bounded in regions, not frames: one batch's worth is enough to keep the engine
busy while the worker prepares the next. Bounded at ``depth`` frames, a 2x2 grid at batch 16 held 16
decoded 768x576 frames (21 MB) waiting for 4 frames' worth of engine calls.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol


class Prepared(Protocol):
    """What waits in a lane: a frame already cut into regions and tokenized."""

    @property
    def regions(self) -> list: ...


class Lanes:
    """Per-source waiting room between the preparing worker and the engine loop (thread-safe)."""

    def __init__(self, depth: int) -> None:
        if depth < 1:
            raise ValueError("depth must be >= 1")
        self.depth = depth  # regions a file source may have prepared ahead (at least one frame)
        self.dropped: dict[str, int] = {}  # live frames replaced by a newer one before the engine took them
        self._cond = threading.Condition()
        self._lanes: dict[str, deque] = {}
        self._live: dict[str, bool] = {}
        self._served: dict[str, int] = {}  # when each lane was last served (a running number)
        self._serial = 0
        self._end: object | None = None  # set by finish(): True, or the exception to raise

    def has_room(self, source: str, live: bool) -> bool:
        """Whether the worker should prepare another frame of ``source`` now (a live one: always)."""
        with self._cond:
            lane = self._lanes.get(source, ())
            return live or sum(len(p.regions) for p in lane) < self.depth

    def put(self, source: str, item: Prepared, live: bool) -> None:
        with self._cond:
            lane = self._lanes.setdefault(source, deque())
            self._live[source] = live
            if live and lane:
                self.dropped[source] = self.dropped.get(source, 0) + len(lane)
                lane.clear()
            lane.append(item)
            self._cond.notify_all()

    def finish(self, error: BaseException | None = None) -> None:
        """No more frames will come (every source ended), or the worker failed with ``error``."""
        with self._cond:
            self._end = error or True
            self._cond.notify_all()

    def take(self, max_crops: int, max_frames: int | None, first_wait: float, window: float) -> list | None:
        """The next batch: at most ``max_crops`` regions (a single bigger frame goes alone) and
        ``max_frames`` frames, picked fairly across sources.

        Waits up to ``first_wait`` s for a first frame (then returns ``[]``), and then up to
        ``window`` s more for enough regions to fill the batch. Returns ``None`` once everything has
        been taken after ``finish()``; raises the worker's exception.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._queued() or self._end, first_wait):
                return []
            if not self._queued():
                if isinstance(self._end, BaseException):
                    raise self._end
                return None
            until = time.monotonic() + window
            while self._crops() < max_crops and not self._end:
                left = until - time.monotonic()
                if left <= 0 or not self._cond.wait(left):
                    break
            return self._pick(max_crops, max_frames)

    # -- inside the lock -------------------------------------------------------------------------
    def _queued(self) -> int:
        return sum(map(len, self._lanes.values()))

    def _crops(self) -> int:
        return sum(len(p.regions) for lane in self._lanes.values() for p in lane)

    def _pick(self, max_crops: int, max_frames: int | None) -> list:
        # Served longest ago first; live before file among lanes served at the same time.
        names = sorted(self._lanes, key=lambda n: (self._served.get(n, -1), not self._live[n]))
        batch: list = []
        crops, added = 0, True
        while added:
            added = False
            for name in names:
                lane = self._lanes[name]
                if not lane or (max_frames is not None and len(batch) >= max_frames):
                    continue
                n = len(lane[0].regions)
                if batch and crops + n > max_crops:
                    continue
                batch.append(lane.popleft())
                crops += n
                added = True
                self._served[name] = self._serial
                self._serial += 1
        return batch

"""Delivery to a network peer without ever blocking the stream: a bounded queue and a sender thread.

::

    write/event (stream or reader thread) --put--> bounded queue (oldest dropped beyond it, counted)
                                                        |
                                      sender thread: deliver(oldest) until it succeeds, in order

Nothing is lost while the peer is away, up to ``queue_size`` records; a record is removed only once
the peer has acknowledged it, so a record whose acknowledgement was lost is sent again: delivery is
at least once. ``close`` waits up to ``drain_s`` for the queue to empty and counts what was left.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

log = logging.getLogger(__name__)


class QueuedDelivery:
    """Subclasses implement ``deliver(record) -> bool`` (True: acknowledged) and may override
    ``ready()`` (False while the peer is known to be down) and ``retry_delay(failures)``."""

    name = "delivery"

    def __init__(self, queue_size: int = 1000, drain_s: float = 5.0):
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size, self.drain_s = queue_size, drain_s
        self.stats = {"queued": 0, "delivered": 0, "dropped": 0, "retries": 0, "left_at_close": 0}
        self._queue: deque[dict] = deque()
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._deadline = float("inf")  # set by close_queue(): when the sender gives up
        self._thread = threading.Thread(target=self._run, name=f"pixlm-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, record: dict) -> None:
        with self._cond:
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats["dropped"] += 1
            self._queue.append(record)
            self.stats["queued"] += 1
            self._cond.notify_all()

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def ready(self) -> bool:
        return True

    def retry_delay(self, failures: int) -> float:
        return min(0.5 * 2 ** (failures - 1), 30.0)

    def deliver(self, record: dict) -> bool:
        raise NotImplementedError

    def _run(self) -> None:
        failures = 0
        while not (self._closing.is_set() and time.monotonic() > self._deadline):
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    self._cond.wait(0.5)
                if not self._queue:
                    return  # closing and drained
                record = self._queue[0]
            if not self.ready():
                self._pause(0.1)
                continue
            try:
                ok = self.deliver(record)
            except Exception as e:  # a peer's failure must not end the thread
                log.warning("%s: %s", self.name, e)
                ok = False
            if ok:
                failures = 0
                with self._cond:
                    if self._queue and self._queue[0] is record:  # not dropped meanwhile
                        self._queue.popleft()
                    self.stats["delivered"] += 1
                    self._cond.notify_all()
                continue
            failures += 1
            self.stats["retries"] += 1
            self._pause(self.retry_delay(failures))

    def _pause(self, seconds: float) -> None:
        """Wait before the next try; ``close`` cuts a long backoff short, and while closing the
        waits still happen (no busy loop), bounded by the drain deadline."""
        if self._closing.is_set():
            time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))
        else:
            self._closing.wait(seconds)

    def close_queue(self) -> None:
        """Stop accepting, give the sender ``drain_s`` to empty the queue, count what is left."""
        self._deadline = time.monotonic() + self.drain_s
        with self._cond:
            self._closing.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(self.drain_s + 1)
        with self._cond:
            self.stats["left_at_close"] = len(self._queue)

"""Delivery to a network peer without ever blocking the stream: a bounded queue and a sender thread.

::

    put (stream or reader thread) --> bounded queue (oldest dropped beyond it)
                                           |
                    sender thread: deliver(oldest) until the peer takes or refuses it, in order
                                           |
                     DeliveryStats: delivered | refused | dropped at the bound | unsent at exit

Nothing is lost while the peer is away, up to ``queue_size`` records; a record is removed only once
the peer has acknowledged it, so a record whose acknowledgement was lost is sent again: delivery is
at least once. Every record put ends in exactly one bucket of ``DeliveryStats`` (its home is
``pixlm.runtime.stats``, with the run's other statistics; ``counts()`` copies it for ``RunStats``):

* ``delivered``: the peer acknowledged it (a record dropped at the bound while it was already being
  sent, and then acknowledged, counts here, not as dropped);
* ``refused``: the peer answered with an error that sending again cannot fix (``deliver`` raised
  ``Refused``: a webhook's 4xx, a redirect not followed);
* ``dropped``: the oldest record, pushed out of a full queue;
* ``unsent``: still queued when the drain time ran out at exit, or put after ``close_queue``.

A failure that will not fix itself (a login the broker refuses, a TLS handshake that fails, a host
name that does not resolve) is ``fail(reason)``: said at once through ``on_notice``, kept in
``stats.failure`` until a delivery succeeds again, and ``close_queue`` does not wait for such a
peer. ``Outputs`` turns notices into console lines and status events.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from pixlm.runtime.stats import DeliveryStats  # the type of QueuedDelivery.stats

log = logging.getLogger(__name__)


class Refused(Exception):
    """Raised by ``deliver``: the peer refused this record for good (the message says why)."""


# on_notice(output, kind, message): kind is "refused" (the first refusal of each reason),
# "failed" (a failure that will not fix itself) or "ok" (delivering again after one)
Notice = Callable[["QueuedDelivery", str, str], None]


def log_notice(output: QueuedDelivery, kind: str, message: str) -> None:
    log.warning("%s: %s", output.name, message)


class QueuedDelivery:
    """Subclasses implement ``deliver(record) -> bool`` (True: acknowledged, False: try again later,
    ``raise Refused``: never) and may override ``ready()`` (False while the peer is known to be
    down) and ``retry_delay(failures)``."""

    name = "delivery"

    def __init__(self, queue_size: int = 1000, drain_s: float = 5.0):
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.queue_size, self.drain_s = queue_size, drain_s
        self.stats = DeliveryStats()
        self.on_notice: Notice = log_notice  # Outputs.add routes it to the console and status events
        self._refusals: set[str] = set()  # reasons already said
        self._queue: deque[tuple[int, dict]] = deque()  # (sequence number, record)
        self._seq = 0
        self._cond = threading.Condition()
        self._closing = threading.Event()
        self._final = False  # close_queue has counted what was left: later outcomes are not counted
        self._deadline = float("inf")  # set by close_queue(): when the sender gives up
        self._thread = threading.Thread(target=self._run, name=f"pixlm-{self.name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def put(self, record: dict) -> None:
        with self._cond:
            self.stats.put += 1
            if self._closing.is_set():
                self.stats.unsent += 1
                return
            if len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self.stats.dropped += 1
            self._seq += 1
            self._queue.append((self._seq, record))
            self._cond.notify_all()

    def counts(self) -> DeliveryStats:
        """A copy of ``stats`` taken under the lock: the buckets at one moment (``RunStats.of``)."""
        with self._cond:
            return copy.copy(self.stats)

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

    # -- failures that will not fix themselves ------------------------------------------------------
    def listen(self, notice: Notice) -> None:
        """Send notices to ``notice`` from now on; a failure already said is said there too (the
        sender may have failed before anyone listened)."""
        with self._cond:
            self.on_notice, failure = notice, self.stats.failure
        if failure:
            notice(self, "failed", failure)

    def fail(self, reason: str) -> None:
        """The peer can take nothing until someone fixes this: say it once, keep it for the summary."""
        with self._cond:
            if self.stats.failure == reason:
                return
            self.stats.failure, notice = reason, self.on_notice
        notice(self, "failed", reason)

    def recover(self, message: str) -> None:
        with self._cond:
            was, self.stats.failure, notice = self.stats.failure, None, self.on_notice
        if was is not None:
            notice(self, "ok", message)

    # -- the sender ---------------------------------------------------------------------------------
    def _expired(self) -> bool:
        return self._closing.is_set() and time.monotonic() >= self._deadline

    def _run(self) -> None:
        failures = 0
        while not self._expired():
            with self._cond:
                while not self._queue and not self._closing.is_set():
                    self._cond.wait(0.5)
                if not self._queue:
                    return  # closing and drained
                seq, record = self._queue[0]
            if not self.ready():
                self._pause(0.1)
                continue
            refused = None
            try:
                ok = self.deliver(record)
            except Refused as e:
                ok, refused = True, str(e)
            except Exception as e:  # a peer's failure must not end the thread
                log.debug("%s: %s", self.name, e)
                ok = False
            if not ok:
                failures += 1
                with self._cond:
                    self.stats.retries += 1
                self._pause(self.retry_delay(failures))
                continue
            failures = 0
            with self._cond:
                if self._final:
                    return  # close_queue gave up on it meanwhile and counted it unsent
                if self._queue and self._queue[0][0] == seq:
                    self._queue.popleft()
                else:  # pushed out of a full queue while being sent: it reached the peer after all
                    self.stats.dropped -= 1
                if refused is None:
                    self.stats.delivered += 1
                else:
                    self.stats.refused += 1
                self._cond.notify_all()
            if refused is not None and refused not in self._refusals and refused != self.stats.failure:
                self._refusals.add(refused)
                self.on_notice(
                    self, "refused", f"a {record['type']} event: {refused} (each refusal is counted)"
                )

    def _pause(self, seconds: float) -> None:
        """Wait before the next try; ``close`` cuts a long backoff short, and while closing the
        waits still happen (no busy loop), bounded by the drain deadline."""
        if self._closing.is_set():
            time.sleep(max(0.0, min(seconds, self._deadline - time.monotonic())))
        else:
            self._closing.wait(seconds)

    def close_queue(self) -> None:
        """Stop accepting, give the sender ``drain_s`` to empty the queue (no time at all when the
        output has failed for good), count what is left as unsent."""
        drain = 0.0 if self.stats.failure else self.drain_s
        with self._cond:
            self._deadline = time.monotonic() + drain
            self._closing.set()
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(max(0.0, self._deadline - time.monotonic()))
        with self._cond:
            self._final = True
            self.stats.unsent += len(self._queue)
            self._queue.clear()

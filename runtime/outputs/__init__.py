"""Where streaming results go, one module per transport behind one interface.

::

    Streamer --FrameResult--> Outputs.frame(): EventTracker -> anomaly / label events
                                  |               SnapshotWriter names the JPEGs in anomaly events
    source threads --SourceEvent--> Outputs.status(): status event
                                  v
              every sink: write(frame_result) for results, event(record) for events
              jsonl.py  video.py (--save, --show)  mqtt.py  webhook.py  server.py (--serve, /metrics)

A sink has ``write(fr)``, ``event(record)`` and ``close()``. ``write`` and ``event`` must not
block the stream: network sinks queue (bounded) and send from their own thread. Event records
follow one schema (``events.py``), so a JSON line, an MQTT payload and a webhook body are the same
object. ``pixlm run`` closes every sink on exit, Ctrl-C and SIGTERM included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from pixlm.runtime.outputs.events import KINDS, EventTracker, status_record
from pixlm.runtime.outputs.snapshots import SnapshotWriter
from pixlm.runtime.sources import SourceEvent
from pixlm.runtime.stream import FrameResult

log = logging.getLogger(__name__)


class Sink(Protocol):
    def write(self, fr: FrameResult) -> None: ...

    def event(self, record: dict) -> None: ...

    def close(self) -> None: ...


class CallbackSink:
    """Calls ``fn(frame_result)`` for each frame (the Python API's hook); ``on_event(record)`` too."""

    def __init__(self, fn: Callable[[FrameResult], None], on_event: Callable[[dict], None] | None = None):
        self.fn, self.on_event = fn, on_event

    def write(self, fr: FrameResult) -> None:
        self.fn(fr)

    def event(self, record: dict) -> None:
        if self.on_event is not None:
            self.on_event(record)

    def close(self) -> None:
        pass


class Outputs:
    """Fans results and events out to every sink; builds the events once for all of them."""

    def __init__(self, sinks: list[Sink] | None = None, snapshots: SnapshotWriter | None = None):
        self.sinks: list[Sink] = list(sinks or [])
        self.snapshots = snapshots
        self.tracker = EventTracker()
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._lock = threading.Lock()  # status events come from the sources' reader threads

    def add(self, sink: Sink) -> None:
        self.sinks.append(sink)

    def frame(self, fr: FrameResult) -> list[dict]:
        events = self.tracker.events(fr)
        for e in events:
            if e["type"] == "anomaly" and self.snapshots is not None:
                self.snapshots.take(fr, e)
        for sink in self.sinks:
            sink.write(fr)
        for e in events:
            self._send(e)
        return events

    def status(self, e: SourceEvent) -> None:
        self._send(status_record(e))

    def _send(self, record: dict) -> None:
        with self._lock:
            self.counts[record["type"]] = self.counts.get(record["type"], 0) + 1
        for sink in self.sinks:
            sink.event(record)

    def close(self) -> None:
        """Close every sink, even when one fails (each failure is logged; the first is re-raised)."""
        first = None
        for sink in self.sinks:
            try:
                sink.close()
            except Exception as e:
                log.error("closing %s failed: %s", type(sink).__name__, e)
                first = first or e
        if first is not None:
            raise first


__all__ = ["CallbackSink", "EventTracker", "Outputs", "Sink", "SnapshotWriter", "status_record"]

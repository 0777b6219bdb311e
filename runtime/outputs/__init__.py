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
follow one schema (``pixlm.runtime.records``), so a JSON line, an MQTT payload and a webhook body are the same
object. ``pixlm run`` closes every sink on exit, Ctrl-C and SIGTERM included.

A failing output never stops the stream. A local one (an ``OSError`` from a sink or the snapshot
writer: a full disk, a deleted folder) and a network one that cannot recover by itself
(``QueuedDelivery.fail``: a refused login, a TLS failure, an unknown host) are both said once
through ``on_warning`` and as a ``status`` event whose ``source`` is ``output:NAME``, counted, and
listed by ``failed()``: ``pixlm run`` then exits 1 at the end, naming them. ``close`` drains the
network outputs all at once, within one bound (``close_s``, 5 s), while the local ones close.

``Outputs`` counts the events it sends (by kind and source) and lists the network outputs, whose
delivery buckets they count: ``pixlm.runtime.stats.RunStats.of(streamer, outputs)`` reads both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from pixlm.runtime.outputs.delivery import QueuedDelivery
from pixlm.runtime.outputs.events import EventTracker
from pixlm.runtime.outputs.snapshots import SnapshotWriter
from pixlm.runtime.records import KINDS, status_record
from pixlm.runtime.sources import SourceEvent
from pixlm.runtime.stream import FrameResult

log = logging.getLogger(__name__)
HANGUP_S = 1.5  # of close_s, kept for a network output to hang up once its queue has drained


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


@dataclass
class OutputFailure:
    """A local output that failed: the first error (said once) and how many calls failed."""

    message: str
    count: int = 1


def output_name(sink: object) -> str:
    """``webhook``, ``mqtt`` (their ``name``), else the class without "Sink": ``jsonl``, ``video``."""
    return getattr(sink, "name", None) or type(sink).__name__.removesuffix("Sink").lower()


class Outputs:
    """Fans results and events out to every sink; builds the events once for all of them.

    ``on_warning(line)`` gets what the user must see now (``pixlm run`` prints it on stderr; the
    default logs it); ``close_s`` bounds ``close`` for all network outputs together: their queues
    drain for ``close_s - HANGUP_S``, then they hang up."""

    def __init__(
        self,
        sinks: list[Sink] | None = None,
        snapshots: SnapshotWriter | None = None,
        on_warning: Callable[[str], None] | None = None,
        close_s: float = 5.0,
    ):
        self.sinks: list[Sink] = []
        self.snapshots = snapshots
        self.tracker = EventTracker()
        self._sent: dict[str, dict[str, int]] = {kind: {} for kind in KINDS}  # kind -> source -> events
        self.on_warning = on_warning or (lambda line: log.warning("%s", line))
        self.close_s = close_s
        self._failures: dict[str, OutputFailure] = {}
        self._lock = threading.Lock()  # status events come from the sources' reader threads
        for sink in sinks or []:
            self.add(sink)

    def add(self, sink: Sink) -> None:
        if isinstance(sink, QueuedDelivery):
            sink.listen(self._notice)
            sink.drain_s = min(sink.drain_s, max(0.0, self.close_s - HANGUP_S))
        if hasattr(sink, "attach_outputs"):  # the live view: its /metrics shows these events and buckets
            sink.attach_outputs(self)
        self.sinks.append(sink)

    def deliveries(self) -> list[QueuedDelivery]:
        """The network outputs, whose ``stats`` count their delivery buckets."""
        return [s for s in self.sinks if isinstance(s, QueuedDelivery)]

    def events_sent(self) -> dict[str, dict[str, int]]:
        """Events sent so far: kind -> source -> count (every kind in ``KINDS``, in its order)."""
        with self._lock:
            return {kind: dict(by_source) for kind, by_source in self._sent.items()}

    @property
    def counts(self) -> dict[str, int]:
        """Events sent so far, by kind (every kind in ``KINDS``, in its order)."""
        return {kind: sum(by_source.values()) for kind, by_source in self.events_sent().items()}

    def frame(self, fr: FrameResult) -> list[dict]:
        events = self.tracker.events(fr)
        for e in events:
            if e["type"] == "anomaly" and e.get("phase") != "end" and self.snapshots is not None:
                try:
                    self.snapshots.take(fr, e)
                except OSError as err:
                    self._failed("snapshots", None, err)
        for sink in self.sinks:
            try:
                sink.write(fr)
            except OSError as err:
                self._failed(output_name(sink), sink, err)
        for e in events:
            self._send(e)
        return events

    def status(self, e: SourceEvent) -> None:
        self._send(status_record(e))

    def _send(self, record: dict, skip: object = None) -> None:
        with self._lock:
            by_source = self._sent.setdefault(record["type"], {})
            source = record.get("source", "")
            by_source[source] = by_source.get(source, 0) + 1
        for sink in self.sinks:
            if sink is skip:
                continue
            try:
                sink.event(record)
            except OSError as err:
                self._failed(output_name(sink), sink, err)

    # -- failing outputs ----------------------------------------------------------------------------
    def _failed(self, name: str, sink: object, err: Exception) -> None:
        """Count a local output's failure; the first is said, and sent as a status event."""
        message = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        if isinstance(err, OSError) and err.filename:
            message = f"{err.filename}: {message}"
        with self._lock:
            failure = self._failures.get(name)
            if failure is not None:
                failure.count += 1
                return
            self._failures[name] = OutputFailure(message)
        self.on_warning(
            f"[output failed] {name}: {message} (the stream goes on; further failures are counted)"
        )
        self._output_status(name, "error", message, skip=sink)

    def _notice(self, output: QueuedDelivery, kind: str, message: str) -> None:
        """A network output's notice (delivery.py): said now; failures also as status events."""
        self.on_warning(f"[output {kind}] {output.name}: {message}")
        if kind in ("failed", "ok"):
            self._output_status(output.name, "error" if kind == "failed" else "ok", message, skip=output)

    def _output_status(self, name: str, status: str, message: str, skip: object) -> None:
        self._send(status_record(SourceEvent(f"output:{name}", status, time.time(), message)), skip=skip)

    def failed(self) -> dict[str, str]:
        """Output name -> why it failed: local failures, and network outputs failed at this moment."""
        with self._lock:
            out = {
                name: f.message + (f" ({f.count} failed calls)" if f.count > 1 else "")
                for name, f in self._failures.items()
            }
        for sink in self.deliveries():
            if sink.stats.failure:
                out[sink.name] = sink.stats.failure
        return out

    def close(self) -> None:
        """Close every sink. The network outputs drain in parallel threads, all within one bound
        (``close_s``), while the local ones close here; a sink still closing after that is left
        behind (said). A sink whose close fails is a failed output."""
        start = time.monotonic()
        closing = []
        for sink in self.deliveries():
            t = threading.Thread(
                target=self._close, args=(sink,), name=f"pixlm-close-{sink.name}", daemon=True
            )
            t.start()
            closing.append((sink, t))
        for sink in self.sinks:
            if not isinstance(sink, QueuedDelivery):
                self._close(sink)
        deadline = start + self.close_s
        for sink, t in closing:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                self.on_warning(f"{sink.name}: still closing after {deadline - start:.0f} s; left behind")

    def _close(self, sink: Sink) -> None:
        try:
            sink.close()
        except Exception as e:  # closing one output must not keep the others open
            self._failed(output_name(sink), sink, e)


__all__ = [
    "CallbackSink",
    "EventTracker",
    "OutputFailure",
    "Outputs",
    "Sink",
    "SnapshotWriter",
    "output_name",
    "status_record",
]

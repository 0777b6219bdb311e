"""Run statistics: what each part of a run counts, and one snapshot of them all.

::

    Source (sources.py)         frames read, dropped in its mailbox, corrupt, reconnects -> SourceStats
    Streamer (stream.py)        results, ms per stage, latency, skipped, engine calls    -> StreamCounters
    Recognizer (recognizer.py)  prefix reuse, its ``stats`` dict                         -> ReuseStats
    Outputs (outputs/)          events sent; each network output its delivery buckets    -> DeliveryStats
                  \\                                                                   /
                   `-------------- RunStats.of(streamer, outputs): one moment ----------'
                                                   |
        .line(since): the [metrics] line        outputs/metrics.py render(): /metrics
        .to_dict(): pixlm run --stats-json       pixlm run's closing summary; the demo reads the JSON

The counters stay with what counts them, each guarded by its owner; ``RunStats.of`` is the one
place that reads them all, and whatever shows statistics reads a ``RunStats``. ``RateMeter`` is the
one arrival-rate meter (frames per second over the last 30 arrivals): a source's ``fps`` and the
FPS drawn on the overlays.
"""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

STAGES = ("capture_wait", "tokenize", "infer", "post")  # ms per frame, in the metrics line's order
FRAME_STAGES = STAGES[1:]  # timed per frame (``FrameResult.timings``); capture_wait is per batch
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)  # seconds
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds
RECENT = 2048  # latencies kept for the metrics line's median: bounded, streams run for days
RATE_WINDOW = 30  # arrivals a RateMeter averages over


class RateMeter:
    """Frames per second over the last ``window`` arrivals; 0.0 until two have arrived. Not locked:
    where threads share one, its owner's lock guards it."""

    def __init__(self, window: int = RATE_WINDOW) -> None:
        self._times: deque[float] = deque(maxlen=window)

    def tick(self, now: float | None = None) -> None:
        """One arrival at ``now`` (``time.monotonic()``, the default)."""
        self._times.append(time.monotonic() if now is None else now)

    def fps(self) -> float:
        t = self._times
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


class Histogram:
    """Observations counted at or below each bound (cumulative, as Prometheus reads them), with
    their sum and count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * len(self.buckets)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float, n: int = 1) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += n
        self.sum += value * n
        self.count += n

    def copy(self) -> Histogram:
        h = Histogram(self.buckets)
        h.counts, h.sum, h.count = list(self.counts), self.sum, self.count
        return h


# -- the counters, each owned by what counts it -----------------------------------------------------
@dataclass(frozen=True)
class SourceStats:
    """A source's own counters (``Source.stats()``). ``fps`` is the rate frames arrive from it."""

    read: int  # frames decoded from the source
    delivered: int  # frames returned by read()
    dropped: int  # live only: frames overwritten in the mailbox before anyone read them
    skipped: int  # frames left out by the stride
    corrupt: int  # empty or undecodable frames, skipped
    reconnects: int  # successful reopens of a live source
    fps: float


@dataclass
class DeliveryStats:
    """One network output's counts (``QueuedDelivery.stats``); the closing summary and the exit
    status read them."""

    put: int = 0  # records handed to the output: the sum of the four buckets once closed
    delivered: int = 0
    refused: int = 0
    dropped: int = 0  # at the queue bound
    unsent: int = 0  # at exit
    retries: int = 0  # failed tries that were tried again (not a bucket: one record may retry often)
    failure: str | None = None  # why the peer can take nothing until someone fixes it

    def summary(self) -> str:
        return (
            f"{self.delivered} delivered, {self.refused} refused, "
            f"{self.dropped} dropped at the queue bound, {self.unsent} unsent at exit"
        )


@dataclass(frozen=True)
class ReuseStats:
    """Prefix reuse, running totals of the recognizer's ``stats`` dict: regions run, regions that
    reused a cached prefix, tokens fed to the engine or taken from the cache, tokens taken from it."""

    frames: int = 0
    reuse_hits: int = 0
    tokens_total: int = 0
    tokens_saved: int = 0

    @classmethod
    def of(cls, counts: Mapping[str, int]) -> ReuseStats:
        """From ``Recognizer.stats`` (keys frames, reuse_hits, tokens_total, tokens_saved)."""
        counts = dict(counts)  # one moment: the engine thread goes on counting
        return cls(*(int(counts.get(k, 0)) for k in ("frames", "reuse_hits", "tokens_total", "tokens_saved")))

    def __sub__(self, other: ReuseStats) -> ReuseStats:
        """What was counted between two readings."""
        return ReuseStats(
            self.frames - other.frames,
            self.reuse_hits - other.reuse_hits,
            self.tokens_total - other.tokens_total,
            self.tokens_saved - other.tokens_saved,
        )


class StreamCounters:
    """What a ``Streamer`` counts, running totals from its start: results and latency per source,
    ms per stage, frames skipped for a size that cannot hold their regions, engine calls by regions
    per call. ``replaced`` (live frames a newer one replaced before the engine took them) is the
    lanes' own count, read here. Locked: the worker thread counts skipped frames, and a scrape of
    ``/metrics`` reads while the stream counts."""

    def __init__(self, replaced: Mapping[str, int] | None = None) -> None:
        self._lock = threading.Lock()
        self.started = time.monotonic()
        self.ended: float | None = None  # when the iteration ended
        self.frames: dict[str, int] = {}
        self.stage_ms = dict.fromkeys(STAGES, 0.0)
        self.stages = {s: Histogram(STAGE_BUCKETS) for s in FRAME_STAGES}  # seconds per frame
        self.latency: dict[str, Histogram] = {}  # capture to result, seconds, per source
        self.recent_latency_ms: deque[float] = deque(maxlen=RECENT)
        self.skipped: dict[str, int] = {}
        self.replaced: Mapping[str, int] = replaced if replaced is not None else {}
        self.engine_calls: Counter[int] = Counter()  # regions per engine call -> calls

    def waited(self, ms: float) -> None:
        """The engine waited ``ms`` for a batch (capture_wait)."""
        with self._lock:
            self.stage_ms["capture_wait"] += ms

    def skip(self, source: str) -> None:
        """A frame of ``source`` whose size cannot hold its regions."""
        with self._lock:
            self.skipped[source] = self.skipped.get(source, 0) + 1

    def engine_call(self, regions: int) -> None:
        with self._lock:
            self.engine_calls[regions] += 1

    def served(self, frames: Sequence[tuple[str, float]], timings: Mapping[str, float]) -> None:
        """A batch's results: (source, latency ms) of each frame, and the batch's ms per frame by
        stage (``FrameResult.timings``)."""
        n = len(frames)
        with self._lock:
            for source, latency_ms in frames:
                self.frames[source] = self.frames.get(source, 0) + 1
                self.latency.setdefault(source, Histogram(LATENCY_BUCKETS)).observe(latency_ms / 1e3)
                self.recent_latency_ms.append(latency_ms)
            for stage, ms in timings.items():
                self.stage_ms[stage] += ms * n
                if stage in self.stages:
                    self.stages[stage].observe(ms / 1e3, n)

    def end(self) -> None:
        """The iteration ended: ``RunStats.seconds`` stops here."""
        with self._lock:
            self.ended = time.monotonic()


# -- the snapshot ----------------------------------------------------------------------------------
class _Source(Protocol):
    name: str

    @property
    def status(self) -> str: ...

    def stats(self) -> SourceStats: ...


class _Recognizer(Protocol):
    stats: dict[str, int]


class _Streamer(Protocol):
    """What ``RunStats.of`` reads of a ``pixlm.runtime.stream.Streamer``."""

    counters: StreamCounters
    rec: _Recognizer

    @property
    def sources(self) -> Sequence[_Source]: ...


class _Delivery(Protocol):
    name: str

    def counts(self) -> DeliveryStats: ...


class _Outputs(Protocol):
    """What ``RunStats.of`` reads of ``pixlm.runtime.outputs.Outputs``."""

    def events_sent(self) -> dict[str, dict[str, int]]: ...

    def deliveries(self) -> Sequence[_Delivery]: ...


@dataclass(frozen=True)
class SourceRun:
    """One source in a snapshot: its status, its own counters, and what the stream made of it."""

    name: str
    status: str
    reader: SourceStats  # the source's own counters (its reader thread's)
    frames: int = 0  # results the stream produced from it
    replaced: int = 0  # live frames a newer one replaced in the stream's lane before the engine
    skipped: int = 0  # frames whose size could not hold the regions
    latency: Histogram | None = None  # capture to result, seconds; None before its first result

    @property
    def dropped(self) -> int:
        """Live frames lost to a newer one: in the source's mailbox or in the stream's lane."""
        return self.reader.dropped + self.replaced


def _no_stages() -> dict[str, Histogram]:
    return {s: Histogram(STAGE_BUCKETS) for s in FRAME_STAGES}


@dataclass(frozen=True)
class RunStats:
    """A run's statistics at one moment: running totals from the stream's start, copied, never
    updated. Build it with :meth:`of`; ``RunStats()`` is a run that has counted nothing yet."""

    seconds: float = 0.0  # from the streamer's making to now, or to the end of its iteration
    sources: tuple[SourceRun, ...] = ()  # in the streamer's order
    stage_ms: Mapping[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    stages: Mapping[str, Histogram] = field(default_factory=_no_stages)  # seconds per frame
    recent_latency_ms: tuple[float, ...] = ()  # the newest results' latencies (RECENT at most)
    engine_calls: Mapping[int, int] = field(default_factory=dict)  # regions per call -> calls
    reuse: ReuseStats = ReuseStats()
    events: Mapping[str, Mapping[str, int]] = field(default_factory=dict)  # kind -> source -> sent
    deliveries: tuple[tuple[str, DeliveryStats], ...] = ()  # (network output, its buckets)

    @classmethod
    def of(cls, streamer: _Streamer | None = None, outputs: _Outputs | None = None) -> RunStats:
        """Read every counter now: the streamer's, its sources' and its recognizer's, and the
        outputs' events and delivery buckets (either may be None: its part stays empty)."""
        parts: dict = {}
        if streamer is not None:
            c = streamer.counters
            sources = [(s.name, s.status, s.stats()) for s in list(streamer.sources)]
            reuse = ReuseStats.of(streamer.rec.stats)
            with c._lock:
                parts = dict(
                    seconds=(c.ended if c.ended is not None else time.monotonic()) - c.started,
                    sources=tuple(
                        SourceRun(
                            name,
                            status,
                            reader,
                            frames=c.frames.get(name, 0),
                            replaced=c.replaced.get(name, 0),
                            skipped=c.skipped.get(name, 0),
                            latency=c.latency[name].copy() if name in c.latency else None,
                        )
                        for name, status, reader in sources
                    ),
                    stage_ms=dict(c.stage_ms),
                    stages={k: h.copy() for k, h in c.stages.items()},
                    recent_latency_ms=tuple(c.recent_latency_ms),
                    engine_calls=dict(c.engine_calls),
                    reuse=reuse,
                )
        if outputs is not None:
            parts["events"] = outputs.events_sent()
            parts["deliveries"] = tuple((d.name, d.counts()) for d in outputs.deliveries())
        return cls(**parts)

    @property
    def frames(self) -> int:
        """Results in all, every source."""
        return sum(s.frames for s in self.sources)

    def events_by_kind(self) -> dict[str, int]:
        """Events sent, by kind (every kind the outputs know, in their order)."""
        return {kind: sum(by_source.values()) for kind, by_source in self.events.items()}

    def line(self, since: RunStats | None = None) -> str:
        """The ``[metrics]`` line: ms per frame by stage, each source's results per second and the
        median latency, over the results since ``since`` (the previous line's snapshot; None: since
        the start); then running totals: frames dropped, corrupt, skipped, and prefix reuse."""
        before = since or RunStats()
        was = {s.name: s.frames for s in before.sources}
        new = {s.name: s.frames - was.get(s.name, 0) for s in self.sources}
        count = sum(new.values())
        n = max(count, 1)
        dt = max(self.seconds - before.seconds, 1e-9)
        ms = {k: v - before.stage_ms.get(k, 0.0) for k, v in self.stage_ms.items()}
        stages = " ".join(f"{k} {v / n:.2f}" for k, v in ms.items())
        fps = " ".join(f"{s.name}={new[s.name] / dt:.1f}" for s in self.sources)
        dropped = sum(s.dropped for s in self.sources)
        corrupt = sum(s.reader.corrupt for s in self.sources)
        skipped = sum(s.skipped for s in self.sources)
        recent = self.recent_latency_ms[max(len(self.recent_latency_ms) - count, 0) :] if count else ()
        lat = f"{statistics.median(recent):.1f}" if recent else "-"
        r, hit = self.reuse, ""
        if r.tokens_saved:
            hit = f" | prefix reuse: hits {r.reuse_hits}/{r.frames}, tokens saved "
            hit += f"{r.tokens_saved}/{r.tokens_total}"
        return (
            f"[metrics] ms/frame {stages} | fps {fps} | dropped {dropped} corrupt {corrupt} "
            f"skipped {skipped} | "
            f"latency p50 {lat} ms{hit}"
        )

    def to_dict(self) -> dict:
        """The snapshot as JSON, over the whole run (``pixlm run --stats-json``; docs/runtime.md)."""
        n, dt = max(self.frames, 1), max(self.seconds, 1e-9)
        return {
            "seconds": self.seconds,
            "frames": self.frames,
            "ms_per_frame": {k: v / n for k, v in self.stage_ms.items()},
            "latency_p50_ms": statistics.median(self.recent_latency_ms) if self.recent_latency_ms else None,
            "sources": [
                {
                    "name": s.name,
                    "status": s.status,
                    "frames": s.frames,
                    "fps": s.frames / dt,
                    "dropped": s.dropped,
                    "replaced": s.replaced,
                    "skipped": s.skipped,
                    "reader": asdict(s.reader),
                }
                for s in self.sources
            ],
            "engine_calls": {str(k): v for k, v in sorted(self.engine_calls.items())},
            "prefix_reuse": asdict(self.reuse),
            "events": {kind: dict(by_source) for kind, by_source in self.events.items()},
            "deliveries": [{"output": name, **asdict(d)} for name, d in self.deliveries],
        }

    def write_json(self, path: str | os.PathLike) -> None:
        """``to_dict`` to ``path``, atomically: a reader sees the old file or the whole new one."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
            os.replace(tmp, path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk leaves no partial file behind
            raise

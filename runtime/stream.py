"""Streaming: many sources -> regions -> batched engine calls -> one result per frame.

::

    source threads --frames--> worker: regions (ROI / grid) -> crops -> tokens
                                  |  one lane per source (runtime/lanes.py): live keeps the newest
                                  v
                 batch: up to max_batch crops or max_wait_ms, fair across sources, live first
                                  |
                                  v
                      engine (full prefill, or prefix reuse per region) -> FrameResult

Like DeepStream's stream muxer, crops from all sources share one engine call, bounded by a maximum
batch and a maximum wait. A file playing beside a camera never delays the camera's newest frame.
With ``prefix_reuse`` each region keeps its previous tokens and KV cache, and the engine runs only
from the first token that changed (exact, see ``pixlm.runtime.prefix_reuse``).
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from pixlm.runtime import manifest as mf
from pixlm.runtime.alerts import AlertBook, AlertRules, Phase, blank, scene_time
from pixlm.runtime.engine import Engine
from pixlm.runtime.lanes import Lanes
from pixlm.runtime.motion import Motion
from pixlm.runtime.prefix_reuse import Prefix, PrefixMemory, waves
from pixlm.runtime.records import result_record
from pixlm.runtime.regions import Region, Zones, check_grid, fit_regions, rois_per_source
from pixlm.runtime.regions import grid_regions as grid_regions  # its home is regions.py; old imports work
from pixlm.runtime.scoring import Result
from pixlm.runtime.sources import Frame, Source, SourceEvent, open_source, source_names
from pixlm.runtime.stats import RunStats, StreamCounters
from pixlm.runtime.tokenizer import Tokenizer


class Predictor(Protocol):
    """What a Streamer uses of its recognizer, a ``pixlm.runtime.recognizer.Recognizer``. Named here
    so that this module need not import the recognizer, whose ``stream`` method builds a Streamer."""

    tokenizer: Tokenizer
    engine: Engine
    stats: dict[str, int]  # frames, reuse_hits, tokens_total, tokens_saved: for the metrics line

    def predict_tokens(self, tokens: np.ndarray, nll_map: bool = False) -> list[Result]: ...

    def predict_reusing(
        self, tokens: np.ndarray, memory: Sequence[Prefix | None], nll_map: bool = False
    ) -> tuple[list[Result], list[Prefix]]: ...


def alert_rules(
    rules: AlertRules | None,
    threshold: float | None,
    score: str | None,
    after_s: float | None = None,
    end_after_s: float | None = None,
    update_every_s: float | None = None,
) -> AlertRules | None:
    """The rules a stream alerts by: a bundle's calibrated ``rules``, with ``threshold`` (one for
    every region), ``score`` and the times overriding theirs when given (``score`` None: the rules'
    own, else mean); None (no alerts) when neither a rule nor a threshold is given."""
    score = score or (rules.score if rules is not None else "mean")
    if score not in ANOMALY_SCORES:
        raise ValueError(f"anomaly_score must be one of {tuple(ANOMALY_SCORES)}, got {score!r}")
    if rules is None and threshold is None:
        return None
    base = rules or AlertRules(score=score)
    if threshold is not None:
        base = replace(base, thresholds={}, default=threshold, score=score)
    times = {"after_s": after_s, "end_after_s": end_after_s, "update_every_s": update_every_s}
    return replace(base, **{k: v for k, v in times.items() if v is not None})


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


# What --anomaly-threshold compares, by name: the region's mean surprise, or the mean of its most
# surprising tenth of tokens (better for small objects: docs/studies.md, "A static camera's scene").
ANOMALY_SCORES = {"mean": "anomaly", "peak": "anomaly_peak"}


@dataclass
class RegionResult:
    region: Region
    result: Result
    anomalous: bool  # the region's alert score is above its threshold (pixlm.runtime.alerts)
    alert: Phase | None = None  # its alert's life cycle in this frame (None: alerts off)
    model: str = ""  # which model said it, when a stream runs several (its bundle's folder name)


@dataclass
class FrameResult:
    """Everything about one frame: its regions' results and how long each stage took."""

    source: str
    index: int  # frame number in its source
    timestamp: float  # capture time, time.time()
    image: np.ndarray  # the frame, BGR
    regions: list[RegionResult]
    latency_ms: float  # capture -> result
    timings: dict[str, float] = field(default_factory=dict)  # ms per frame: tokenize, infer, post
    fps: float | None = None  # the source's own frame rate, when it has one (a video file)
    tamper: Phase | None = None  # the camera's own alert (most regions hot at once); None: alerts off

    def records(self) -> list[dict]:
        """JSON Lines ``result`` records, one per region (``pixlm.runtime.records.result_record``)."""
        return [
            result_record(
                self.source,
                self.index,
                self.timestamp,
                rr.region,
                rr.result,
                anomalous=rr.anomalous,
                latency_ms=self.latency_ms,
                timings=self.timings,
                alert_score=None if rr.alert is None else rr.alert.score,
                model=rr.model,
            )
            for rr in self.regions
        ]


def __getattr__(name: str):  # PEP 562
    if name == "Metrics":  # the stream's counters and its metrics line moved to stats.py
        warnings.warn(
            "pixlm.runtime.stream.Metrics moved to pixlm.runtime.stats.StreamCounters (the metrics "
            "line: RunStats.line); import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return StreamCounters
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass
class _Prepared:
    """A frame cut into regions and tokenized by the worker thread, waiting for the engine."""

    frame: Frame
    regions: list[Region]
    tokens: list[np.ndarray | None]  # per model (len(regions), n_tokens); None: no motion yet
    tokenize_ms: float


@dataclass
class _Model:
    """One model a stream runs: its recognizer and what it keeps between frames."""

    rec: Predictor
    name: str  # "" when the stream runs one model; else its bundle's folder name, in every result
    book: AlertBook | None  # alert state per (source, region); None: alerts off
    motion: Motion | None  # a motion model's previous frame per source; None: a pixel model
    memory: PrefixMemory = field(default_factory=PrefixMemory)  # keyed by (source, region)


class Streamer:
    """Iterate over ``FrameResult`` from several sources. Use as a context manager.

    ``recognizer``: a ``Recognizer``, or several run on the same frames (an appearance and a motion
    bundle on one camera: each region's results come once per model, ``RegionResult.model``
    naming it; ``alerts`` is then one rule set per model); :class:`Predictor` names what is used of
    it. ``rec.stream(...)`` takes the same arguments and iterates over a Streamer. A motion model
    (``pixlm.runtime.motion``) has nothing to say on a source's first frame, nor on the first after
    a reconnect or a new pass: those frames come without its regions.
    ``rois``: regions (x, y, w, h) for every source, or ``{source: [(x, y, w, h), ...]}`` keyed by
    URI or by name in results (``rois_per_source``: an unknown key is refused here; a source
    without one reads the whole frame); ``grid``: (rows, cols) tiles instead; neither: the whole
    frame. A source whose first frame cannot hold its regions is skipped with an ``error`` status
    event, and the others go on. ``max_frames``: stop after that many frames in all. ``loop``: play
    files that many times, 0 = forever (a file as a demo camera; frame numbers restart each pass).
    ``on_event``: receives source status events (ok, timeout, reconnecting, eos, error);
    ``on_metrics``: receives a metrics line every ``metrics_every`` seconds.
    """

    def __init__(
        self,
        recognizer: Predictor | Sequence[Predictor],
        sources: Sequence[str],
        *,
        rois: Sequence[tuple[int, int, int, int]] | dict | None = None,
        grid: tuple[int, int] | None = None,
        max_batch: int = 16,
        max_wait_ms: float = 20.0,
        prefix_reuse: bool = False,
        anomaly_threshold: float | None = None,
        anomaly_score: str | None = None,
        alerts: AlertRules | Sequence[AlertRules | None] | None = None,
        alert_after: float | None = None,
        alert_end_after: float | None = None,
        alert_update_every: float | None = None,
        zones: Zones | None = None,
        nll_map: bool = False,
        max_frames: int | None = None,
        stride: int = 1,
        realtime: bool = False,
        loop: int = 1,
        timeout_s: float = 5.0,
        reconnect_attempts: int = 10,
        on_event: Callable[[SourceEvent], None] | None = None,
        on_metrics: Callable[[str], None] | None = None,
        metrics_every: float = 5.0,
    ) -> None:
        if not sources:
            raise ValueError("no sources given")
        if rois is not None and grid is not None:
            raise ValueError("give regions of interest or a grid, not both")
        if loop < 0:
            raise ValueError("loop must be >= 0 (0 = forever)")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if grid is not None:
            check_grid(*grid)
        recs = list(recognizer) if isinstance(recognizer, (list, tuple)) else [recognizer]
        if not recs:
            raise ValueError("no model given")
        self.rec = recs[0]  # the one whose counters the metrics line shows
        self.uris = list(sources)
        self._names = source_names(self.uris)  # a URI given twice: "clip.mp4", "clip.mp4#2"
        self.rois, self.grid = rois, grid
        # boxes by source name (None: the whole frame); frames carry the name, not the URI
        self._boxes = dict(zip(self._names, rois_per_source(rois, self.uris, self._names), strict=True))
        self._unfit: set[str] = set()  # sources whose first frame could not hold their regions
        self.max_batch, self.max_wait = max_batch, max_wait_ms / 1e3
        self.prefix_reuse = prefix_reuse
        inexact = [r for r in recs if not mf.exact_under_reuse(str(getattr(r, "file_key", "")))]
        if prefix_reuse and inexact:
            raise ValueError(
                f"prefix reuse is exact only with a static file, not {inexact[0].file_key!r} (its "
                "activation scales change with each call): open the recognizer with exact_reuse=True"
            )
        given = list(alerts) if isinstance(alerts, (list, tuple)) else [alerts] * len(recs)
        if len(given) != len(recs):
            raise ValueError(f"{len(recs)} models but {len(given)} alert rule sets")
        self._last_index: dict[str, int] = {}  # per source: a frame number that goes back is a new pass
        names = _model_names(recs)
        self.models: list[_Model] = []
        for rec, rules, name in zip(recs, given, names, strict=True):
            a = alert_rules(
                rules, anomaly_threshold, anomaly_score, alert_after, alert_end_after, alert_update_every
            )
            if a is not None and a.thresholds and a.grid and tuple(a.grid) != (tuple(grid) if grid else None):
                raise ValueError(
                    f"{name or 'the'} alert thresholds are per tile of a {a.grid[0]}x{a.grid[1]} grid: "
                    "stream with that grid, or give anomaly_threshold (one for every region)"
                )
            motion = rec.tokenizer.config.motion
            book = AlertBook(a, rec.tokenizer.palette, name) if a else None
            self.models.append(_Model(rec, name, book, Motion(motion) if motion else None))
        first = self.models[0].book
        self.alerts = first.rules if first is not None else None  # the first model's, for those who ask
        self.zones = zones
        # per-token maps: for an output that draws them (the overlay) and for the alerts' persistence
        self.nll_map = nll_map or any(m.book is not None for m in self.models)
        self.max_frames, self.loop = max_frames, loop
        self.on_event, self.on_metrics, self.metrics_every = on_event, on_metrics, metrics_every
        self._stop = threading.Event()
        # One batch of prepared regions in all, shared out among the sources (each may still hold
        # one frame): a lane per source a whole batch deep held 4 frames of every camera.
        self._lanes = Lanes(depth=-(-max_batch // max(1, len(self.uris))))
        # what the stream counts, read by RunStats.of (the lanes count the live frames they replace)
        self.counters = StreamCounters(replaced=self._lanes.dropped)
        self._regions: dict[tuple[str, int, int], list[Region] | None] = {}  # (source, w, h)
        self._reconnects: dict[str, int] = {}  # per source, to start its motion afresh after one
        self._open = dict(
            stride=stride,
            realtime=realtime,
            timeout_s=timeout_s,
            reconnect_attempts=reconnect_attempts,
            on_event=on_event,
        )
        self.sources: list[Source] = []
        self._passes: dict[str, int] = {}

    def __enter__(self) -> Streamer:
        try:
            for uri in self.uris:
                self.sources.append(open_source(uri, name=self._names[len(self.sources)], **self._open))
                self._passes[self.sources[-1].name] = 1
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stop(self) -> None:
        """Ask the iteration to end after the current batch (safe from a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        for s in self.sources:
            s.close()

    # -- the loop ------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[FrameResult]:
        if not self.sources:
            self.__enter__()
        worker = threading.Thread(target=self._prepare_loop, name="pixlm-prepare", daemon=True)
        worker.start()
        done = 0
        last_metrics, shown = time.monotonic(), None  # shown: the last metrics line's snapshot
        try:
            while not self._stop.is_set():
                left = None if self.max_frames is None else self.max_frames - done
                t0 = time.perf_counter()
                batch = self._lanes.take(self.max_batch, left, first_wait=0.1, window=self.max_wait)
                self.counters.waited(1e3 * (time.perf_counter() - t0))
                if batch is None:  # every source ended and every frame was served
                    break
                if batch:
                    for result in self._run(batch):
                        done += 1
                        yield result
                    if left is not None and done >= self.max_frames:
                        break
                if self.on_metrics and time.monotonic() - last_metrics >= self.metrics_every:
                    now = RunStats.of(self)
                    self.on_metrics(now.line(since=shown))
                    shown, last_metrics = now, time.monotonic()
        finally:
            self._stop.set()
            worker.join(timeout=5)
            self.counters.end()
        if self.on_metrics:  # the frames since the last line, if any
            now = RunStats.of(self)
            if now.frames > (shown.frames if shown else 0):
                self.on_metrics(now.line(since=shown))

    def _prepare_loop(self) -> None:
        """Worker thread: poll the sources, crop and tokenize each new frame, queue it.

        Runs beside the engine calls of the main thread (OpenCV and numpy release the GIL), so
        decoding and tokenizing overlap inference. Live sources are polled first; a file whose lane
        is full is left alone until the engine takes from it (back-pressure).
        """
        try:
            while not self._stop.is_set():
                got = False
                for i in sorted(range(len(self.sources)), key=lambda i: not self.sources[i].live):
                    s = self.sources[i]
                    if s.name in self._unfit or not self._lanes.has_room(s.name, s.live):
                        continue
                    frame = s.read(timeout=0)
                    if frame is None and s.eos and self._replays(s):
                        self._passes[s.name] += 1  # benchmarks: replay a file
                        s.close()
                        self.sources[i] = s = open_source(self.uris[i], name=self._names[i], **self._open)
                        frame = s.read(timeout=1.0)
                    if frame is None:
                        continue
                    got = True
                    t0 = time.perf_counter()
                    regions = self._regions_of(frame, s)
                    if regions is None:
                        if s.name not in self._unfit:
                            self.counters.skip(s.name)
                        continue
                    try:
                        tokens = self._tokens_of(frame, s, regions)
                    except ValueError as e:  # e.g. a grey frame for a colour model
                        raise ValueError(f"{frame.source}: frame {frame.index}: {e}") from None
                    if all(t is None for t in tokens):  # a motion model's first frame since a (re)start
                        continue
                    prepared = _Prepared(frame, regions, tokens, 1e3 * (time.perf_counter() - t0))
                    self._lanes.put(s.name, prepared, s.live)
                if not got:
                    # a file with passes left is not finished, even when its lane is full now
                    if all(s.status == "error" or (s.eos and not self._replays(s)) for s in self.sources):
                        break
                    time.sleep(0.002)
        except BaseException as e:  # handed to the consumer, which raises it
            self._lanes.finish(e)
            return
        self._lanes.finish()

    def _tokens_of(self, frame: Frame, source: Source, regions: list[Region]) -> list[np.ndarray | None]:
        """Each model's tokens of the frame's regions, cut from the frame (grey for a grey model) or,
        for a motion model, from its motion image (None: a source's first frame, or the first after
        a reconnect, a new pass or a gap, has no motion)."""
        fresh = self._reconnects.get(source.name) != source.reconnects
        self._reconnects[source.name] = source.reconnects
        out: list[np.ndarray | None] = []
        for m in self.models:
            if m.motion is None:
                image = m.rec.tokenizer.match_channels(frame.image)  # once, not per region
            elif not source.live and not frame.fps and not self._open["realtime"]:
                raise ValueError(
                    "a motion bundle needs a clock: a video file (its frame rate), a camera, or "
                    "images played with --realtime; a folder read as fast as it can be has none"
                )
            else:
                if fresh:
                    m.motion.reset(source.name)
                t = scene_time(frame.index, frame.timestamp, frame.fps)
                image = m.motion.image(source.name, frame.image, t)
            out.append(
                None if image is None else m.rec.tokenizer.encode_batch([r.crop(image) for r in regions])
            )
        return out

    def _replays(self, source: Source) -> bool:
        """Whether ``source``, once at its end, is played again (``loop``)."""
        return self.loop == 0 or self._passes[source.name] < self.loop

    def _regions_of(self, frame: Frame, source: Source) -> list[Region] | None:
        """The regions of a frame of this size (recomputed when a source's frame size changes).

        A source's first frame must hold its regions; when it cannot (an ROI outside it, grid tiles
        smaller than the model's input), that source is skipped: it ends in ``error`` with the
        reason, and the others go on. A later size that cannot (a camera back at another
        resolution, a smaller image in a folder) skips that frame, counted, and the source goes on.
        Both return None.
        """
        h, w = frame.image.shape[:2]
        key = (frame.source, w, h)
        if key in self._regions:
            return self._regions[key]
        first = not any(k[0] == frame.source for k in self._regions)
        sizes = [m.rec.tokenizer.config for m in self.models]
        least = (max(c.width for c in sizes), max(c.height for c in sizes))
        try:
            regions = fit_regions(w, h, boxes=self._boxes[frame.source], grid=self.grid, min_tile=least)
        except ValueError as e:
            if first:
                self._unfit.add(source.name)
                source.fail(f"{e}: source skipped, the others go on")
                return None
            regions = None
        self._regions[key] = regions
        return regions

    def _run(self, batch: list[_Prepared]) -> list[FrameResult]:
        t1 = time.perf_counter()
        per_model = [
            self._infer(m, [p for p in batch if p.tokens[i] is not None], i)
            for i, m in enumerate(self.models)
        ]
        t2 = time.perf_counter()
        out = []
        for p in batch:
            f = p.frame
            t = scene_time(f.index, f.timestamp, f.fps)
            if f.index < self._last_index.get(f.source, -1):
                for m in self.models:  # --loop: a new pass starts its alerts afresh
                    if m.book is not None:
                        m.book.forget(f.source)
            self._last_index[f.source] = f.index
            rr: list[RegionResult] = []
            tamper = None
            for i, m in enumerate(self.models):
                tokens = p.tokens[i]
                if tokens is None:
                    continue
                own = self._post(m, p, tokens, per_model[i][id(p)], t)
                rr += own
                if tamper is None and m.book is not None and len(own) > 1:
                    hot, flat = [x.anomalous for x in own], [blank(c) for c in tokens]
                    tamper = m.book.tamper(f.source, t, hot, flat)
            latency = 1e3 * (time.time() - f.timestamp)
            out.append(
                FrameResult(f.source, f.index, f.timestamp, f.image, rr, latency, fps=f.fps, tamper=tamper)
            )
        t3 = time.perf_counter()
        n = len(batch)
        tok_ms = sum(p.tokenize_ms for p in batch) / n
        timings = {"tokenize": tok_ms, "infer": 1e3 * (t2 - t1) / n, "post": 1e3 * (t3 - t2) / n}
        for fr in out:
            fr.timings = timings
        self.counters.served([(fr.source, fr.latency_ms) for fr in out], timings)
        return out

    def _infer(self, m: _Model, batch: list[_Prepared], i: int) -> dict[int, list[Result]]:
        """Model ``i``'s results for the frames of a batch it has tokens of, by ``id`` of the frame."""
        if not batch:
            return {}
        keys = [(p.frame.source, r.name) for p in batch for r in p.regions]
        tokens = np.concatenate([p.tokens[i] for p in batch])
        # No engine call exceeds max_batch regions, nor the engine's own limits (TensorRT profiles;
        # positions per CPU call, which bound ONNX Runtime's arena): a batch of many regions is
        # split over several calls.
        cap = min(self.max_batch, getattr(m.rec.engine, "max_batch", None) or self.max_batch)
        positions = getattr(m.rec.engine, "call_positions", None)
        if positions:
            cap = min(cap, max(1, positions // (tokens.shape[1] + 1)))
        results: list = [None] * len(keys)
        if self.prefix_reuse:
            # A region seen twice in one batch (several frames of one file) reuses its own previous
            # frame: the batch runs in waves, each holding a region at most once.
            for wave in waves(keys):
                for part in _chunks(wave, cap):
                    self.counters.engine_call(len(part))
                    memory = m.memory.recall([keys[j] for j in part])
                    got, prefixes = m.rec.predict_reusing(tokens[part], memory, self.nll_map)
                    for j, r in zip(part, got, strict=True):
                        results[j] = r
                    m.memory.remember([keys[j] for j in part], prefixes)
        else:
            for part in _chunks(list(range(len(keys))), cap):
                self.counters.engine_call(len(part))
                for j, r in zip(part, m.rec.predict_tokens(tokens[part], nll_map=self.nll_map), strict=True):
                    results[j] = r
        out, k = {}, 0
        for p in batch:
            out[id(p)] = results[k : k + len(p.regions)]
            k += len(p.regions)
        return out

    def _post(
        self, m: _Model, p: _Prepared, tokens: np.ndarray, results: list[Result], t: float
    ) -> list[RegionResult]:
        """A model's region results in one frame, with their alerts' life cycle."""
        ppt = m.rec.tokenizer.config.patch**2
        rr = []
        f = p.frame
        for j, (r, res) in enumerate(zip(p.regions, results, strict=True)):
            if m.book is None or (self.zones and self.zones.mutes(f.source, r)):
                rr.append(RegionResult(r, res, False, model=m.name))
                continue
            phase = m.book.observe(f.source, r.name, t, res.nll_map / ppt, tokens[j])
            rr.append(RegionResult(r, res, phase.hot, phase, model=m.name))
        return rr


def _model_names(recs: Sequence[Predictor]) -> list[str]:
    """ "" for one model; else each bundle's folder name (numbered when two share one)."""
    if len(recs) == 1:
        return [""]
    names: list[str] = []
    for i, rec in enumerate(recs):
        bundle = getattr(rec, "bundle", None)
        name = Path(bundle.root).name if bundle is not None else f"model{i + 1}"
        names.append(name if name not in names else f"{name}#{i + 1}")
    return names

"""Prometheus metrics for fleets (``/metrics`` of ``--serve``), in the text exposition format,
written by hand: a few counters and histograms do not need a client library.

==========================================  ==========  =========================================
metric                                      type        labels
==========================================  ==========  =========================================
pixlm_frames_total                          counter     source
pixlm_dropped_frames_total                  counter     source (live frames replaced by newer)
pixlm_corrupt_frames_total                  counter     source
pixlm_reconnects_total                      counter     source
pixlm_source_up                             gauge       source (1 while its status is ok)
pixlm_events_total                          counter     source, kind (anomaly, label, status)
pixlm_stage_seconds                         histogram   stage (tokenize, infer, post; per frame)
pixlm_latency_seconds                       histogram   source (capture to result)
pixlm_engine_batch_regions                  histogram   (regions per engine call)
pixlm_prefix_reuse_hits_total               counter     (regions that reused cached tokens)
pixlm_prefix_reuse_tokens_saved_total       counter
pixlm_tokens_total                          counter
==========================================  ==========  =========================================
"""

from __future__ import annotations

import threading
from collections import Counter

from pixlm.runtime.stream import FrameResult

STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(**kv: str) -> str:
    if not kv:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


class Histogram:
    def __init__(self, buckets: tuple[float, ...]):
        self.buckets, self.counts, self.sum, self.count = buckets, [0] * len(buckets), 0.0, 0

    def observe(self, value: float, n: int = 1) -> None:
        for i, b in enumerate(self.buckets):
            if value <= b:
                self.counts[i] += n
        self.sum += value * n
        self.count += n

    def lines(self, name: str, **labels: str) -> list[str]:
        out = [
            f"{name}_bucket{_labels(**labels, le=f'{b:g}')} {c}"
            for b, c in zip(self.buckets, self.counts, strict=True)
        ]
        out.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {self.count}")
        out.append(f"{name}_sum{_labels(**labels)} {self.sum:.6g}")
        out.append(f"{name}_count{_labels(**labels)} {self.count}")
        return out


class FleetMetrics:
    """Collects from results and events; ``render`` adds the sources' and engine's own counters."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.frames: Counter[str] = Counter()
        self.events: Counter[tuple[str, str]] = Counter()
        self.stages = {s: Histogram(STAGE_BUCKETS) for s in ("tokenize", "infer", "post")}
        self.latency: dict[str, Histogram] = {}

    def observe(self, fr: FrameResult) -> None:
        with self._lock:
            self.frames[fr.source] += 1
            for stage, ms in fr.timings.items():
                if stage in self.stages:
                    self.stages[stage].observe(ms / 1e3)
            self.latency.setdefault(fr.source, Histogram(LATENCY_BUCKETS)).observe(fr.latency_ms / 1e3)

    def event(self, record: dict) -> None:
        with self._lock:
            self.events[(record.get("source", ""), record["type"])] += 1

    def render(self, streamer=None) -> str:
        """The exposition text; ``streamer`` (a running Streamer) adds source and engine counters."""
        lines: list[str] = []

        def family(name: str, kind: str, help_: str) -> None:
            lines.append(f"# HELP {name} {help_}")
            lines.append(f"# TYPE {name} {kind}")

        with self._lock:
            family("pixlm_frames_total", "counter", "Frames processed.")
            lines += [f"pixlm_frames_total{_labels(source=s)} {n}" for s, n in sorted(self.frames.items())]
            family("pixlm_events_total", "counter", "Events emitted, by kind.")
            lines += [
                f"pixlm_events_total{_labels(source=s, kind=k)} {n}"
                for (s, k), n in sorted(self.events.items())
            ]
            family("pixlm_stage_seconds", "histogram", "Time per frame in each pipeline stage.")
            for stage, h in self.stages.items():
                lines += h.lines("pixlm_stage_seconds", stage=stage)
            family("pixlm_latency_seconds", "histogram", "Capture to result.")
            for source, h in sorted(self.latency.items()):
                lines += h.lines("pixlm_latency_seconds", source=source)
        if streamer is not None:
            stats = [(s.name, s.stats(), s.status) for s in list(streamer.sources)]
            replaced = dict(streamer.metrics.replaced)
            for name, key, help_ in (
                ("pixlm_dropped_frames_total", "dropped", "Live frames replaced by a newer one before use."),
                ("pixlm_corrupt_frames_total", "corrupt", "Empty or undecodable frames skipped."),
                ("pixlm_reconnects_total", "reconnects", "Successful reopens of a live source."),
            ):
                family(name, "counter", help_)
                for source, st, _ in stats:
                    extra = replaced.get(source, 0) if key == "dropped" else 0
                    lines.append(f"{name}{_labels(source=source)} {getattr(st, key) + extra}")
            family("pixlm_source_up", "gauge", "1 while the source delivers (status ok).")
            lines += [f"pixlm_source_up{_labels(source=s)} {int(status == 'ok')}" for s, _, status in stats]
            family("pixlm_engine_batch_regions", "histogram", "Regions per engine call.")
            h = Histogram(BATCH_BUCKETS)
            for size, n in sorted(streamer.engine_calls.items()):
                h.observe(size, n)
            lines += h.lines("pixlm_engine_batch_regions")
            rs = dict(streamer.rec.stats)
            for name, key, help_ in (
                ("pixlm_prefix_reuse_hits_total", "reuse_hits", "Regions that reused cached tokens."),
                (
                    "pixlm_prefix_reuse_tokens_saved_total",
                    "tokens_saved",
                    "Tokens whose KV came from the cache.",
                ),
                ("pixlm_tokens_total", "tokens_total", "Tokens fed to the engine or taken from the cache."),
            ):
                family(name, "counter", help_)
                lines.append(f"{name} {rs.get(key, 0)}")
        return "\n".join(lines) + "\n"

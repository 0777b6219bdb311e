"""Prometheus metrics for fleets (``/metrics`` of ``--serve``): one ``RunStats`` snapshot
(``pixlm.runtime.stats``) in the text exposition format, written by hand: a few counters and
histograms do not need a client library.

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
pixlm_delivery_records_total                counter     output, outcome (delivered, refused,
                                                        dropped, unsent)
pixlm_delivery_retries_total                counter     output
pixlm_delivery_up                           gauge       output (0 while it has failed for good)
==========================================  ==========  =========================================
"""

from __future__ import annotations

import warnings

from pixlm.runtime import stats
from pixlm.runtime.moved import moved_names
from pixlm.runtime.stats import Histogram, RunStats

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
OUTCOMES = ("delivered", "refused", "dropped", "unsent")  # the buckets every delivered record ends in


def _labels(**kv: str) -> str:
    if not kv:
        return ""
    esc = {k: str(v).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for k, v in kv.items()}
    return "{" + ",".join(f'{k}="{v}"' for k, v in esc.items()) + "}"


def histogram_lines(name: str, h: Histogram, **labels: str) -> list[str]:
    """A histogram's samples: a cumulative ``_bucket`` per bound and ``+Inf``, ``_sum``, ``_count``."""
    out = [
        f"{name}_bucket{_labels(**labels, le=f'{b:g}')} {c}" for b, c in zip(h.buckets, h.counts, strict=True)
    ]
    out.append(f"{name}_bucket{_labels(**labels, le='+Inf')} {h.count}")
    out.append(f"{name}_sum{_labels(**labels)} {h.sum:.6g}")
    out.append(f"{name}_count{_labels(**labels)} {h.count}")
    return out


def render(run: RunStats) -> str:
    """The exposition text of one snapshot."""
    lines: list[str] = []

    def family(name: str, kind: str, help_: str) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")

    by_name = sorted(run.sources, key=lambda s: s.name)
    family("pixlm_frames_total", "counter", "Frames processed.")
    lines += [f"pixlm_frames_total{_labels(source=s.name)} {s.frames}" for s in by_name if s.frames]
    family("pixlm_events_total", "counter", "Events emitted, by kind.")
    events = sorted(
        (source, kind, n) for kind, by_source in run.events.items() for source, n in by_source.items()
    )
    lines += [f"pixlm_events_total{_labels(source=s, kind=k)} {n}" for s, k, n in events]
    family("pixlm_stage_seconds", "histogram", "Time per frame in each pipeline stage.")
    for stage, h in run.stages.items():
        lines += histogram_lines("pixlm_stage_seconds", h, stage=stage)
    family("pixlm_latency_seconds", "histogram", "Capture to result.")
    for s in by_name:
        if s.latency is not None:
            lines += histogram_lines("pixlm_latency_seconds", s.latency, source=s.name)
    for name, count, help_ in (
        (
            "pixlm_dropped_frames_total",
            lambda s: s.dropped,
            "Live frames replaced by a newer one before use.",
        ),
        ("pixlm_corrupt_frames_total", lambda s: s.reader.corrupt, "Empty or undecodable frames skipped."),
        ("pixlm_reconnects_total", lambda s: s.reader.reconnects, "Successful reopens of a live source."),
    ):
        family(name, "counter", help_)
        lines += [f"{name}{_labels(source=s.name)} {count(s)}" for s in run.sources]
    family("pixlm_source_up", "gauge", "1 while the source delivers (status ok).")
    lines += [f"pixlm_source_up{_labels(source=s.name)} {int(s.status == 'ok')}" for s in run.sources]
    family("pixlm_engine_batch_regions", "histogram", "Regions per engine call.")
    h = Histogram(BATCH_BUCKETS)
    for size, n in sorted(run.engine_calls.items()):
        h.observe(size, n)
    lines += histogram_lines("pixlm_engine_batch_regions", h)
    for name, value, help_ in (
        ("pixlm_prefix_reuse_hits_total", run.reuse.reuse_hits, "Regions that reused cached tokens."),
        (
            "pixlm_prefix_reuse_tokens_saved_total",
            run.reuse.tokens_saved,
            "Tokens whose KV came from the cache.",
        ),
        ("pixlm_tokens_total", run.reuse.tokens_total, "Tokens fed to the engine or taken from the cache."),
    ):
        family(name, "counter", help_)
        lines.append(f"{name} {value}")
    family("pixlm_delivery_records_total", "counter", "Events a network output has settled, by outcome.")
    for output, d in run.deliveries:
        lines += [
            f"pixlm_delivery_records_total{_labels(output=output, outcome=o)} {getattr(d, o)}"
            for o in OUTCOMES
        ]
    family("pixlm_delivery_retries_total", "counter", "Failed tries a network output tried again.")
    lines += [
        f"pixlm_delivery_retries_total{_labels(output=output)} {d.retries}" for output, d in run.deliveries
    ]
    family(
        "pixlm_delivery_up", "gauge", "0 while a network output has failed in a way that will not fix itself."
    )
    lines += [
        f"pixlm_delivery_up{_labels(output=output)} {int(d.failure is None)}" for output, d in run.deliveries
    ]
    return "\n".join(lines) + "\n"


class _FleetMetrics:
    """What rendered ``/metrics`` before ``RunStats``, kept one version for old imports. It counts
    nothing of its own any more (the streamer counts its results, ``Outputs`` its events):
    ``render(streamer)`` is ``render(RunStats.of(streamer))``."""

    def observe(self, fr: object) -> None:
        pass

    def event(self, record: dict) -> None:
        pass

    def render(self, streamer: object = None) -> str:
        return render(RunStats.of(streamer))


# Names whose home moved: still importable from here for one version, with a DeprecationWarning.
# (``Histogram``, the type of what it renders, lives in pixlm.runtime.stats and is imported here.)
_MOVED = {"STAGE_BUCKETS": stats, "LATENCY_BUCKETS": stats}
_moved = moved_names(__name__, _MOVED)


def __getattr__(name: str):  # PEP 562
    if name == "FleetMetrics":
        warnings.warn(
            "pixlm.runtime.outputs.metrics.FleetMetrics is replaced by render(RunStats.of(streamer, "
            "outputs)) (pixlm.runtime.stats)",
            DeprecationWarning,
            stacklevel=2,
        )
        return _FleetMetrics
    return _moved(name)

"""The records that leave the process: one builder each, so every output carries the same JSON.

::

    FrameResult (stream.py) --result_record-->  result  one per region per frame (--jsonl)
    EventTracker (events.py) --event_record-->  anomaly, label   \
    SourceEvent (sources.py) --status_record--> status           / events: JSON Lines, MQTT,
                                                                   webhooks, the live view

Fields, in this order (docs/runtime.md has their meaning):

* ``result``: type, source, frame, timestamp, region, the ``Result``'s own fields (label, known,
  score, top_k, anomaly, anomaly_peak, ood_score, reused_tokens), anomaly_event, alert_score
  (only when alerts are on), latency_ms, timings_ms.
* ``anomaly``: type, source, frame, timestamp, region, phase (start, update, end), alert_id,
  alert_score, peak, started, duration_s (scene seconds), label, known, score, anomaly,
  anomaly_peak, snapshot, crop (the JPEGs ``--snapshots`` wrote, file names in that folder, else
  null).
* ``label``: type, source, frame, timestamp, region, label, previous, score.
* ``status``: type, source, status, timestamp, message.

``region`` is ``{"name", "xywh"}``. Times are rounded to the microsecond and scores to six places,
so a record is the same bytes wherever it goes.
"""

from __future__ import annotations

from collections.abc import Mapping

from pixlm.runtime.regions import Region
from pixlm.runtime.scoring import Result
from pixlm.runtime.sources import SourceEvent

KINDS = ("anomaly", "label", "status")  # the events a sink may subscribe to (--events)


def region_record(region: Region) -> dict:
    """A region as records carry it: ``{"name": "r0c1", "xywh": [x, y, w, h]}``."""
    return {"name": region.name, "xywh": region.to_list()}


def _where(kind: str, source: str, frame: int, timestamp: float, region: Region, model: str = "") -> dict:
    """The fields every result and frame event opens with (``model`` only when a stream runs
    several: which one it was)."""
    out = {
        "type": kind,
        "source": source,
        "frame": frame,
        "timestamp": round(timestamp, 6),
        "region": region_record(region),
    }
    if model:
        out["model"] = model
    return out


def result_record(
    source: str,
    frame: int,
    timestamp: float,
    region: Region,
    result: Result,
    *,
    anomalous: bool,
    latency_ms: float,
    timings: Mapping[str, float],
    alert_score: float | None = None,
    model: str = "",
) -> dict:
    """One region's result in one frame: what the model said, whether its alert score is above
    its threshold (and that score, when alerts are on), and how long the frame took (ms: capture
    -> result, and per stage). ``model``: which one said it, when a stream runs several."""
    out = {
        **_where("result", source, frame, timestamp, region, model),
        **result.to_dict(),
        "anomaly_event": anomalous,
    }
    if alert_score is not None:
        out["alert_score"] = round(alert_score, 6)
    out["latency_ms"] = round(latency_ms, 3)
    out["timings_ms"] = {k: round(v, 4) for k, v in timings.items()}
    return out


def event_record(
    kind: str,
    source: str,
    frame: int,
    timestamp: float,
    region: Region,
    result: Result,
    *,
    previous: str | None = None,
    alert: Mapping | None = None,
    model: str = "",
) -> dict:
    """An ``anomaly`` event (``alert``: its phase, id, scores and duration, from
    ``pixlm.runtime.alerts.Phase.fields``; its snapshot and crop null until ``--snapshots`` names
    them) or a ``label`` event (``previous``: the region's label before, None for its first)."""
    out = _where(kind, source, frame, timestamp, region, model)
    if kind == "anomaly":
        out.update(alert or {})
        out.update(
            label=result.label,
            known=result.known,
            score=round(result.score, 6),
            anomaly=round(result.anomaly, 6),
            anomaly_peak=round(result.anomaly_peak, 6),
            snapshot=None,
            crop=None,
        )
    elif kind == "label":
        out.update(label=result.label, previous=previous, score=round(result.score, 6))
    else:
        raise ValueError(f"a frame event is 'anomaly' or 'label', not {kind!r}")
    return out


def status_record(e: SourceEvent) -> dict:
    """A source's (or an output's, ``output:NAME``) status change."""
    return {
        "type": "status",
        "source": e.source,
        "status": e.status,
        "timestamp": round(e.time, 6),
        "message": e.message,
    }

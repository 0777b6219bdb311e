"""The one event schema: what the JSON Lines, MQTT, webhooks and the live view all carry.

Three kinds besides the per-region ``result`` records (``FrameResult.records``):

* ``status``: a source's status changed. Fields: type, source, status, timestamp, message.
* ``anomaly``: a region's anomaly score rose above the threshold (once per crossing). Fields:
  type, source, frame, timestamp, region {name, xywh}, label, known, score, anomaly,
  anomaly_peak, snapshot, crop.
* ``label``: a region's label changed (its first label counts as a change). Fields: type,
  source, frame, timestamp, region, label, previous, score.

An anomaly event fires on the rising edge only: a region above the threshold for 50 frames is one
event, not 50, and it fires again after the score has fallen below. ``snapshot``/``crop`` name the
JPEGs ``--snapshots`` wrote (file names in that folder), else null.
"""

from __future__ import annotations

from pixlm.runtime.sources import SourceEvent, source_slug  # noqa: F401 - re-exported for the sinks
from pixlm.runtime.stream import FrameResult

KINDS = ("anomaly", "label", "status")


def status_record(e: SourceEvent) -> dict:
    return {
        "type": "status",
        "source": e.source,
        "status": e.status,
        "timestamp": round(e.time, 6),
        "message": e.message,
    }


class EventTracker:
    """Turns each frame's results into anomaly and label events (see the module docstring)."""

    def __init__(self) -> None:
        self._hot: dict[tuple[str, str], bool] = {}
        self._label: dict[tuple[str, str], str] = {}

    def events(self, fr: FrameResult) -> list[dict]:
        out = []
        for rr in fr.regions:
            key = (fr.source, rr.region.name)
            res = rr.result
            fire = rr.anomalous and not self._hot.get(key, False)
            change = bool(res.label) and res.label != self._label.get(key)  # a label-free model has none
            if not (fire or change):  # the common case, per region per frame: nothing to build
                self._hot[key] = rr.anomalous
                continue
            base = {
                "source": fr.source,
                "frame": fr.index,
                "timestamp": round(fr.timestamp, 6),
                "region": {"name": rr.region.name, "xywh": rr.region.to_list()},
            }
            if fire:
                out.append(
                    {
                        "type": "anomaly",
                        **base,
                        "label": res.label,
                        "known": res.known,
                        "score": round(res.score, 6),
                        "anomaly": round(res.anomaly, 6),
                        "anomaly_peak": round(res.anomaly_peak, 6),
                        "snapshot": None,
                        "crop": None,
                    }
                )
            self._hot[key] = rr.anomalous
            if change:
                previous = self._label.get(key)
                self._label[key] = res.label
                out.append(
                    {
                        "type": "label",
                        **base,
                        "label": res.label,
                        "previous": previous,
                        "score": round(res.score, 6),
                    }
                )
        return out

"""When a region's result becomes an event: the rising edge of an anomaly, a change of label.

Two kinds come from the frames (``status`` comes from the sources); their fields are built in
``pixlm.runtime.records``, the one home of every record's schema:

* ``anomaly``: a region's anomaly score rose above the threshold (once per crossing).
* ``label``: a region's label changed (its first label counts as a change).

An anomaly event fires on the rising edge only: a region above the threshold for 50 frames is one
event, not 50, and it fires again after the score has fallen below. ``snapshot``/``crop`` name the
JPEGs ``--snapshots`` wrote (file names in that folder), else null.
"""

from __future__ import annotations

from pixlm.runtime import records, sources
from pixlm.runtime.moved import moved_names
from pixlm.runtime.records import event_record
from pixlm.runtime.stream import FrameResult

# Names whose home moved: still importable from here for one version, with a DeprecationWarning.
_MOVED = {"KINDS": records, "status_record": records, "source_slug": sources, "SourceEvent": sources}


__getattr__ = moved_names(__name__, _MOVED)


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
            self._hot[key] = rr.anomalous
            if not (fire or change):  # the common case, per region per frame: nothing to build
                continue
            where = (fr.source, fr.index, fr.timestamp, rr.region, res)
            if fire:
                out.append(event_record("anomaly", *where))
            if change:
                previous = self._label.get(key)
                self._label[key] = res.label
                out.append(event_record("label", *where, previous=previous))
        return out

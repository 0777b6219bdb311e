"""When a region's result becomes an event: an alert's phase, a change of label.

Two kinds come from the frames (``status`` comes from the sources); their fields are built in
``pixlm.runtime.records``, the one home of every record's schema:

* ``anomaly``: a phase of a region's alert (``pixlm.runtime.alerts``): ``start`` when the region
  has stayed surprising for ``--alert-after``, ``update`` while it stays so (at most one per
  ``update_every_s``), ``end`` once it has been quiet for ``end_after_s``. One alert id runs
  through its phases. Region ``tamper`` (the whole frame): the camera's own alert, when at least
  half its regions are hot at once (covered, moved, defocused).
* ``label``: a region's label changed (its first label counts as a change).

``snapshot``/``crop`` name the JPEGs ``--snapshots`` wrote for a start or an update (file names in
that folder), else null.
"""

from __future__ import annotations

from pixlm.runtime import records, sources
from pixlm.runtime.alerts import TAMPER, scene_time
from pixlm.runtime.moved import moved_names
from pixlm.runtime.records import event_record
from pixlm.runtime.regions import Region
from pixlm.runtime.scoring import Result
from pixlm.runtime.stream import FrameResult

# Names whose home moved: still importable from here for one version, with a DeprecationWarning.
_MOVED = {"KINDS": records, "status_record": records, "source_slug": sources, "SourceEvent": sources}


__getattr__ = moved_names(__name__, _MOVED)


class EventTracker:
    """Turns each frame's results into anomaly and label events (see the module docstring)."""

    def __init__(self) -> None:
        self._label: dict[tuple[str, str, str], str] = {}  # (source, model, region) -> label

    def events(self, fr: FrameResult) -> list[dict]:
        out = []
        for rr in fr.regions:
            key = (fr.source, rr.model, rr.region.name)
            res = rr.result
            fire = rr.alert is not None and rr.alert.phase is not None
            change = bool(res.label) and res.label != self._label.get(key)  # a label-free model has none
            if not (fire or change):  # the common case, per region per frame: nothing to build
                continue
            where = (fr.source, fr.index, fr.timestamp, rr.region, res)
            if fire:
                t = scene_time(fr.index, fr.timestamp, fr.fps)
                out.append(event_record("anomaly", *where, alert=rr.alert.fields(t), model=rr.model))
            if change:
                previous = self._label.get(key)
                self._label[key] = res.label
                out.append(event_record("label", *where, previous=previous, model=rr.model))
        if fr.tamper is not None and fr.tamper.phase is not None:  # the camera's own alert
            h, w = fr.image.shape[:2]
            whole = Region(TAMPER, 0, 0, w, h)
            blank = Result("", -1, 0.0, [], 0.0)
            t = scene_time(fr.index, fr.timestamp, fr.fps)
            out.append(
                event_record(
                    "anomaly", fr.source, fr.index, fr.timestamp, whole, blank, alert=fr.tamper.fields(t)
                )
            )
        return out

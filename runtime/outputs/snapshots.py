"""``--snapshots DIR``: a JPEG of the frame (region boxed) and one of the region's crop per anomaly
event; the event names both files. The folder is bounded: beyond ``keep`` pairs the oldest go, so a
camera box never fills its disk. Each file appears whole (written aside, then renamed)."""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

import cv2

from pixlm.runtime.outputs.events import source_slug
from pixlm.runtime.stream import FrameResult


class SnapshotWriter:
    def __init__(self, folder: str | os.PathLike, keep: int = 1000, quality: int = 90):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{self.folder}: cannot create the snapshot folder ({e.strerror})") from e
        if not os.access(self.folder, os.W_OK):
            raise ValueError(f"{self.folder}: the snapshot folder is not writable")
        self.keep, self.quality = keep, quality
        self._files: deque[Path] = deque()
        self.written = 0

    def take(self, fr: FrameResult, event: dict) -> None:
        """Write the event's two JPEGs and put their names into ``event``."""
        x, y, w, h = event["region"]["xywh"]
        stem = f"{source_slug(fr.source)}-f{fr.index:06d}-{event['region']['name']}"
        frame = fr.image.copy()
        cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), (0, 0, 255), 2)
        names = {"snapshot": f"{stem}.jpg", "crop": f"{stem}-crop.jpg"}
        for key, image in (("snapshot", frame), ("crop", fr.image[y : y + h, x : x + w])):
            path = self.folder / names[key]
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data.tobytes())
            os.replace(tmp, path)
            event[key] = names[key]
            self._files.append(path)
        self.written += 1
        while len(self._files) > 2 * self.keep:
            self._files.popleft().unlink(missing_ok=True)

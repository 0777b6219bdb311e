"""``--snapshots DIR``: a JPEG of the frame (region boxed) and one of the region's crop per anomaly
event; the event names both files.

Names are unique in the folder, across ``--loop`` passes and runs: ``SOURCE-eEVENT-fFRAME-REGION.jpg``
(and ``...-crop.jpg``), where ``SOURCE`` is the source's short name (unique per run,
``sources.source_slug``) and ``EVENT`` a counter that goes on from the highest one already in the
folder. The folder is bounded: beyond ``keep`` pairs or ``max_bytes`` the oldest pictures go (an
earlier run's included), the newest pair always stays, so a camera box never fills its disk.
Each file appears whole (written aside, then renamed). A write that fails (a full disk, the folder
deleted) leaves no temporary file, the event names only what was written, and ``take`` raises the
``OSError`` for ``Outputs`` to count; the stream goes on.
"""

from __future__ import annotations

import errno
import os
import re
from collections import deque
from pathlib import Path

import cv2

from pixlm.runtime.sources import source_slug
from pixlm.runtime.stream import FrameResult

NAME = re.compile(r"-e(\d{6,})-f\d+-.+\.jpg$")  # the files this writer makes: the event number


class SnapshotWriter:
    def __init__(
        self,
        folder: str | os.PathLike,
        keep: int = 1000,
        max_bytes: int | None = None,
        quality: int = 90,
    ):
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ValueError(f"{self.folder}: cannot create the snapshot folder ({e.strerror})") from e
        if not os.access(self.folder, os.W_OK):
            raise ValueError(f"{self.folder}: the snapshot folder is not writable")
        self.keep, self.max_bytes, self.quality = keep, max_bytes, quality
        self.written = 0  # events whose two pictures were both written
        self._files: deque[tuple[Path, int]] = deque()  # (file, bytes), oldest first
        self._bytes = 0
        self._next = self._adopt_existing()
        self._prune()

    def _adopt_existing(self) -> int:
        """Count an earlier run's pictures against the bounds; delete its leftover temporary files.
        Returns the next event number."""
        found = []
        for path in self.folder.iterdir():
            if path.name.startswith(".") and path.name.endswith(".jpg.tmp"):
                path.unlink(missing_ok=True)  # a run killed mid-write
            elif (m := NAME.search(path.name)) is not None and path.is_file():
                found.append((int(m[1]), path.name.endswith("-crop.jpg"), path, path.stat().st_size))
        for _, _, path, size in sorted(found):
            self._files.append((path, size))
            self._bytes += size
        return max((n for n, *_ in found), default=0) + 1

    def take(self, fr: FrameResult, event: dict) -> None:
        """Write the event's two JPEGs and put the names of those written into ``event``; raises the
        ``OSError`` of a picture that could not be written, after trying both."""
        x, y, w, h = event["region"]["xywh"]
        stem = f"{source_slug(fr.source)}-e{self._next:06d}-f{fr.index:06d}-{event['region']['name']}"
        self._next += 1
        frame = fr.image.copy()
        cv2.rectangle(frame, (x, y), (x + w - 1, y + h - 1), (0, 0, 255), 2)
        names = {"snapshot": f"{stem}.jpg", "crop": f"{stem}-crop.jpg"}
        error: OSError | None = None
        for key, image in (("snapshot", frame), ("crop", fr.image[y : y + h, x : x + w])):
            path = self.folder / names[key]
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:
                error = OSError(errno.EIO, "OpenCV could not encode the JPEG")
                continue
            tmp = path.with_name(f".{path.name}.tmp")
            try:
                tmp.write_bytes(data.tobytes())
                os.replace(tmp, path)
            except OSError as e:
                error = e
                _remove(tmp)
                continue
            event[key] = names[key]
            self._files.append((path, data.size))
            self._bytes += data.size
        self._prune()
        if error is not None:
            raise OSError(error.errno, error.strerror, str(self.folder))
        self.written += 1

    def _prune(self) -> None:
        """Delete the oldest pictures while the folder is over a bound; the newest pair stays."""
        while len(self._files) > 2 and (
            len(self._files) > 2 * self.keep or (self.max_bytes is not None and self._bytes > self.max_bytes)
        ):
            path, size = self._files.popleft()
            self._bytes -= size
            _remove(path)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the folder itself went away, or the disk is read-only: nothing more to do here

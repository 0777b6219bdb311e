"""Pictures of the results: an overlay video (``--save``), a desktop window (``--show``), and the
overlay drawing the live view's MJPEG streams share."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from pixlm.runtime.sources import source_names
from pixlm.runtime.stats import RateMeter
from pixlm.runtime.stream import FrameResult


class VideoSink:
    """An mp4 of the frames with regions, labels, scores, the anomaly heat map and FPS drawn on.

    Written to ``NAME.partial.mp4``, opened again on close to check that it plays, and renamed, so
    the named file is always playable. OpenCV's writer reports no write errors: a file that does not
    play (a full disk cuts off the index at the end of an mp4) is deleted, and ``close`` raises an
    ``OSError`` that names it; ``write`` raises one for each frame of a source whose file would not
    open. ``Outputs`` counts them; the stream goes on.
    One file per source: with several sources, ``out.mp4`` becomes ``out-0.mp4``, ``out-1.mp4`` ...
    A video file's overlay plays at the file's own frame rate; cameras and folders at ``fps``.
    """

    def __init__(self, path: str | os.PathLike, sources: list[str], fps: float = 10.0):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".mp4", ".avi", ".mkv"):
            raise ValueError(f"{self.path}: the overlay video must end in .mp4, .avi or .mkv")
        if not self.path.parent.is_dir() or not os.access(self.path.parent, os.W_OK):
            raise ValueError(f"{self.path}: folder missing or not writable")
        self.fps = fps
        self._targets = {  # keyed by the names results carry (redacted, "#2" for a repeated URI)
            s: self.path if len(sources) == 1 else self.path.with_stem(f"{self.path.stem}-{i}")
            for i, s in enumerate(source_names(sources))
        }
        self._writers: dict[str, tuple[cv2.VideoWriter, Path, Path]] = {}
        self._frames: dict[str, int] = {}  # frames handed to each writer
        self._unwritable: set[str] = set()  # sources whose writer would not open
        self._rates: dict[str, RateMeter] = {}  # results arriving here: the FPS drawn on the overlay
        self._sizes: dict[str, tuple[int, int]] = {}  # each writer's frame size: the source's first
        self._written: list[Path] = []

    def write(self, fr: FrameResult) -> None:
        if fr.source in self._unwritable:
            final = self._targets.get(fr.source, self.path)
            raise OSError(errno.EIO, "OpenCV cannot write this video", str(final))
        image = draw_overlay(fr, self._fps(fr.source))
        if fr.source not in self._writers:
            final = self._targets.get(fr.source, self.path)
            tmp = final.with_name(f"{final.stem}.partial{final.suffix}")
            fourcc = cv2.VideoWriter_fourcc(*("mp4v" if final.suffix.lower() == ".mp4" else "MJPG"))
            fps = fr.fps or self.fps
            writer = cv2.VideoWriter(str(tmp), fourcc, fps, (image.shape[1], image.shape[0]))
            if not writer.isOpened():
                _remove(tmp)
                self._unwritable.add(fr.source)
                raise OSError(errno.EIO, "OpenCV cannot write this video", str(final))
            self._writers[fr.source] = (writer, tmp, final)
            self._frames[fr.source] = 0
            self._sizes[fr.source] = (image.shape[1], image.shape[0])
        size = self._sizes[fr.source]
        if (image.shape[1], image.shape[0]) != size:  # a source whose frame size changed mid-run
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        self._writers[fr.source][0].write(image)
        self._frames[fr.source] += 1

    def _fps(self, source: str) -> float:
        rate = self._rates.setdefault(source, RateMeter())
        rate.tick()
        return rate.fps()

    def event(self, record: dict) -> None:
        pass

    def close(self) -> None:
        """Finish every file; raises the first failure after trying them all."""
        error = None
        for source, (writer, tmp, final) in self._writers.items():
            writer.release()
            try:
                if not _plays(tmp):
                    full = shutil.disk_usage(tmp.parent).free < 1 << 20
                    why = "no space left on device" if full else "unfinished"
                    raise OSError(errno.ENOSPC if full else errno.EIO, f"the video does not play ({why})")
                os.replace(tmp, final)
            except OSError as e:
                _remove(tmp)
                lost = f"{e.strerror}: deleted, {self._frames[source]} frame(s) lost"
                error = error or OSError(e.errno, lost, str(final))
                continue
            self._written.append(final)
        self._writers.clear()
        if error is not None:
            raise error

    @property
    def files(self) -> list[Path]:
        """The videos written so far (after ``close``: every finished file)."""
        return self._written + [final for _, _, final in self._writers.values()]


def _plays(path: Path) -> bool:
    """Whether the video opens and its first frame decodes (a cut-off mp4 has no index: it does not)."""
    cap = cv2.VideoCapture(str(path))
    try:
        return cap.isOpened() and cap.read()[0]
    finally:
        cap.release()


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # the folder went away: nothing is left to remove


class WindowSink:
    """A desktop window (``--show``); needs an OpenCV build with a GUI backend."""

    def __init__(self) -> None:
        gui = cv2.getBuildInformation().partition("GUI:")[2].split("\n")[0].strip()
        if gui in ("", "NONE"):
            raise ValueError("--show needs OpenCV with a GUI (opencv-python, not opencv-python-headless)")

    def write(self, fr: FrameResult) -> None:
        cv2.imshow(f"pixlm: {fr.source}", draw_overlay(fr, 0.0))
        cv2.waitKey(1)

    def event(self, record: dict) -> None:
        pass

    def close(self) -> None:
        cv2.destroyAllWindows()


def draw_overlay(fr: FrameResult, fps: float) -> np.ndarray:
    """The frame with each region's box, label, score and anomaly heat map; FPS in the corner. A
    region that several models scored (two bundles) gets one heat map (the first model's), a red
    box when any of them alerts, and a line of text per model."""
    image = fr.image.copy()
    seen: dict[str, int] = {}  # region name -> lines of text drawn so far
    hot = {rr.region.name for rr in fr.regions if rr.anomalous}
    for rr in fr.regions:
        r, res = rr.region, rr.result
        line = seen.get(r.name, 0)
        seen[r.name] = line + 1
        if res.nll_map is not None and line == 0:
            heat = np.clip(res.nll_map / max(float(res.nll_map.max()), 1e-6), 0, 1)
            heat = cv2.resize((heat * 255).astype(np.uint8), (r.w, r.h), interpolation=cv2.INTER_NEAREST)
            coloured = cv2.applyColorMap(heat, cv2.COLORMAP_JET)
            roi = image[r.y : r.y + r.h, r.x : r.x + r.w]
            roi[:] = cv2.addWeighted(roi, 0.65, coloured, 0.35, 0)
        colour = (0, 0, 255) if r.name in hot else (0, 255, 0)
        cv2.rectangle(image, (r.x, r.y), (r.x + r.w - 1, r.y + r.h - 1), colour, 2)
        text = " | ".join(filter(None, (rr.model, res.describe(), f"{res.anomaly:.2f} b/px")))
        y = r.y + 18 + 16 * line
        cv2.putText(image, text, (r.x + 4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3)
        cv2.putText(image, text, (r.x + 4, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1)
    label = f"{fps:.1f} FPS  frame {fr.index}"
    cv2.putText(image, label, (6, image.shape[0] - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    return image

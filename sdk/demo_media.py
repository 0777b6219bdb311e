"""What `pixlm demo` films and draws: synthetic clips with known ground truth, and its figures.

::

    Fashion-MNIST items --slide across a black belt, stop under the camera--> conveyor clip
                                                        + the item under the ROI, per frame
    vtest.avi frames --tinted bags pasted at known places and frame ranges--> street clip
                                                        + each object's box and frames
    results --> contact sheet, completion grid, open-set panel, anomaly timeline

Everything is numpy + OpenCV (as the studies' figures), so nothing here needs torch or a
plotting library. Clips are written to ``NAME.partial.mp4`` and renamed when finished.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FONT = cv2.FONT_HERSHEY_SIMPLEX
GREEN, RED, ORANGE, BLUE, SHADE = (60, 200, 60), (40, 40, 230), (0, 150, 255), (180, 119, 31), (200, 235, 200)
WHITE, GREY, BLACK = (255, 255, 255), (150, 150, 150), (0, 0, 0)


# -- files -------------------------------------------------------------------------------------
def write_image(path: Path, image: np.ndarray) -> Path:
    """PNG (compression 9) or, for .jpg, JPEG quality 85; atomically (temporary file + rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    if not cv2.imwrite(str(tmp), image, params):
        raise ValueError(f"{path}: cannot write the image")
    os.replace(tmp, path)
    return path


def write_video(path: Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """Frames (BGR, one size) to an mp4; returns how many. With the ffmpeg command, H.264 with
    full-resolution colour (4:4:4): the scene model is sensitive to colour texture, and on vtest.avi's
    held-out part re-encoded 4:2:0, even losslessly, 13.8% of the tiles passed 3 bits of peak
    surprise against 8.2% of the original frames' (4:4:4: 8.0%). Without ffmpeg, OpenCV's MPEG-4
    part 2 (14.3%). Written as ``NAME.partial.mp4`` and renamed after the last frame."""
    tmp = path.with_name(f"{path.stem}.partial{path.suffix}")
    frames = iter(frames)
    first = next(frames, None)
    if first is None:
        raise ValueError(f"{path}: no frames to write")
    (h, w), n = first.shape[:2], 0
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "bgr24", "-s", f"{w}x{h}"]
        cmd += ["-r", str(fps), "-i", "-", "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv444p", str(tmp)]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            for frame in itertools.chain([first], frames):
                proc.stdin.write(np.ascontiguousarray(frame).tobytes())
                n += 1
        except BrokenPipeError:
            pass  # ffmpeg stopped: its message follows
        except BaseException:
            proc.kill()  # the frames failed: no half-written video, no orphan encoder
            raise
        finally:
            proc.stdin.close()
        if proc.wait() != 0:
            raise ValueError(f"{path}: ffmpeg failed ({proc.stderr.read().decode().strip()[-200:]})")
    else:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
        if not writer.isOpened():
            raise ValueError(f"{path}: OpenCV cannot write this video")
        for frame in itertools.chain([first], frames):
            writer.write(frame)
            n += 1
        writer.release()
    os.replace(tmp, path)
    return n


def video_info(path: str | os.PathLike) -> tuple[int, float, tuple[int, int]]:
    """Frames (from the header), frame rate (10 when unknown) and (width, height) of a video."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise ValueError(f"{path}: OpenCV cannot read this video")
        n, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), cap.get(cv2.CAP_PROP_FPS) or 10.0
        size = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    finally:
        cap.release()
    if n < 10:
        raise ValueError(f"{path}: {n} frames, too short for the demo")
    return n, fps, size


def read_video_frames(path: str | os.PathLike, wanted: Iterable[int]) -> dict[int, np.ndarray]:
    """The frames numbered ``wanted`` (0-based, decode order) of a video, read sequentially."""
    wanted = set(wanted)
    cap, out, i = cv2.VideoCapture(str(path)), {}, 0
    while wanted - out.keys():
        ok, frame = cap.read()
        if not ok:
            break
        if i in wanted:
            out[i] = frame
        i += 1
    cap.release()
    return out


# -- the conveyor clip -------------------------------------------------------------------------
@dataclass
class ConveyorClip:
    """A belt carrying items under a fixed camera ROI; ``item_at[f]``: the item wholly (>= 90%)
    inside the ROI in frame f, -1 while the belt moves between two."""

    path: Path
    roi: tuple[int, int, int, int]  # x, y, w, h: where the belt stops each item
    item_at: list[int]
    fps: float


def conveyor_clip(
    path: Path, items: np.ndarray, scale: int = 6, move: int = 4, hold: int = 8, fps: float = 10.0
) -> ConveyorClip:
    """Film ``items`` (N, 28, 28) on an indexing belt: each slides in over ``move`` frames, then
    stops ``hold`` frames under the camera, whose ROI is the item's enlarged footprint.

    The belt is black, as Fashion-MNIST's background, so what the ROI sees is a test item; while
    the belt moves it sees parts of two items, and the open-set gate may call that "unknown".
    """
    size = items.shape[1] * scale
    w, h, gap = 640, 360, 72
    x0, y0, step = (w - size) // 2, (h - size) // 2, size + gap
    big = [cv2.resize(im, (size, size), interpolation=cv2.INTER_NEAREST) for im in items]
    item_at: list[int] = []

    def frames():
        for k in range(len(items)):
            for t in range(move + hold):
                ease = min(1.0, (t + 1) / move)
                ease = ease * ease * (3 - 2 * ease)  # smoothstep: the belt starts and stops gently
                shift = (k - 1 + ease) * step  # item k reaches x0 at the end of its move
                frame = np.full((h, w, 3), 40, np.uint8)
                frame[y0 - 18 : y0 + size + 18] = 0  # the belt
                for rail in (y0 - 26, y0 + size + 18):  # rails with marks that move with the belt
                    frame[rail : rail + 8] = 90
                    for mx in range(-int(shift) % 40, w, 40):
                        frame[rail : rail + 8, mx : mx + 6] = 160
                best, best_overlap = -1, 0.0
                for i, im in enumerate(big):
                    x = int(round(x0 + i * step - shift))
                    if x >= w or x + size <= 0:
                        continue
                    a, b = max(x, 0), min(x + size, w)
                    frame[y0 : y0 + size, a:b] = im[:, a - x : b - x, None]
                    overlap = max(0, min(x + size, x0 + size) - max(x, x0)) / size
                    if overlap > best_overlap:
                        best, best_overlap = i, overlap
                item_at.append(best if best_overlap >= 0.9 else -1)
                cv2.putText(frame, f"conveyor: item {k + 1}/{len(items)}", (10, 22), FONT, 0.5, WHITE, 1)
                yield frame

    write_video(path, frames(), fps)
    return ConveyorClip(path, (x0, y0, size, size), item_at, fps)


# -- the street clip with pasted objects -------------------------------------------------------
@dataclass
class PastedObject:
    """A foreign object: where it lies and in which frames of the street clip (end exclusive)."""

    name: str
    start: int
    end: int
    box: tuple[int, int, int, int]  # x, y, w, h in pixels

    def present(self, frame: int) -> bool:
        return self.start <= frame < self.end

    def coverage(self, xywh: Sequence[int]) -> float:
        """Share of the object's box inside the rectangle ``xywh``."""
        x, y, w, h = xywh
        bx, by, bw, bh = self.box
        ix = max(0, min(x + w, bx + bw) - max(x, bx))
        iy = max(0, min(y + h, by + bh) - max(y, by))
        return ix * iy / (bw * bh)


def plan_objects(
    n: int, n_frames: int, frame_size: tuple[int, int], fps: float, rng: np.random.Generator
) -> list[PastedObject]:
    """``n`` objects, one after another: each in its own 1/n of the clip, left there 4-8 s (less
    when the clip is short), 40-60 px, on the lower 60% of the frame (the pavement)."""
    w, h = frame_size
    span = n_frames / n
    out = []
    for i in range(n):
        length = int(min(rng.uniform(4, 8) * fps, 0.7 * span))
        start = int(i * span + rng.uniform(0.1, 0.9) * (span - length))
        s = int(rng.integers(40, 61))
        x, y = int(rng.integers(16, w - s - 16)), int(rng.integers(int(0.4 * h), h - s - 16))
        out.append(PastedObject(f"object {i + 1}", start, start + max(length, 1), (x, y, s, s)))
    return out


def street_clip(
    video: str,
    path: Path,
    first: int,
    count: int,
    objects: list[PastedObject],
    shapes: np.ndarray,
    rng: np.random.Generator,
) -> None:
    """Frames [first, first + count) of ``video`` with ``objects`` pasted in while present, as the
    scene study pastes them (a Fashion-MNIST shape, tinted a random colour, its dark pixels
    transparent); written to ``path`` at the video's frame rate."""
    cap = cv2.VideoCapture(str(video))
    fps = cap.get(cv2.CAP_PROP_FPS) or 10.0
    patches = []
    for obj in objects:
        s = obj.box[2]
        shape = cv2.resize(shapes[rng.integers(len(shapes))], (s, s), interpolation=cv2.INTER_AREA)
        tint = rng.integers(30, 256, 3).astype(np.float32)
        alpha = (shape > 20).astype(np.float32)[..., None]
        patches.append((alpha, (shape.astype(np.float32) / 255)[..., None] * tint))

    def frames():
        for i in range(first + count):
            ok, frame = cap.read()
            if not ok:
                break
            if i < first:
                continue
            for obj, (alpha, shade) in zip(objects, patches, strict=True):
                if obj.present(i - first):
                    x, y, w, h = obj.box
                    under = frame[y : y + h, x : x + w].astype(np.float32)
                    frame[y : y + h, x : x + w] = (alpha * shade + (1 - alpha) * under).astype(np.uint8)
            yield frame

    try:
        write_video(path, frames(), fps)
    finally:
        cap.release()


# -- figures -----------------------------------------------------------------------------------
def _text(img: np.ndarray, text: str, xy: tuple[int, int], colour=WHITE, scale: float = 0.4) -> None:
    cv2.putText(img, text, xy, FONT, scale, colour, 1, cv2.LINE_AA)


def contact_sheet(
    images: np.ndarray, truth: Sequence[str], said: Sequence[str], cols: int, title: str, zoom: int = 3
) -> np.ndarray:
    """Items enlarged ``zoom`` times with what the model said (green: right) and, when wrong, the
    true label; wrong items get a red border, "unknown" ones an orange one."""
    side = images.shape[1] * zoom
    cw, ch = side + 12, side + 36
    rows = -(-len(images) // cols)
    sheet = np.full((34 + rows * ch, cols * cw, 3), 24, np.uint8)
    _text(sheet, title, (8, 22), WHITE, 0.5)
    for i, (im, t, s) in enumerate(zip(images, truth, said, strict=True)):
        r, c = divmod(i, cols)
        x, y = c * cw + 6, 34 + r * ch
        sheet[y : y + side, x : x + side] = cv2.resize(im, (side, side), interpolation=cv2.INTER_NEAREST)[
            ..., None
        ]
        if s != t:
            colour = ORANGE if s == "unknown" else RED
            cv2.rectangle(sheet, (x - 3, y - 3), (x + side + 2, y + side + 2), colour, 3)
        _text(sheet, s, (x, y + side + 14), GREEN if s == t else RED, 0.38)
        if s != t:
            _text(sheet, f"is {t}", (x, y + side + 28), GREY, 0.36)
    return sheet


def completion_grid(
    rows: Sequence[Sequence[np.ndarray]], headers: Sequence[str], zoom: int = 3
) -> np.ndarray:
    """One row per item: original | masked | completions, each enlarged, under column headers."""
    side = rows[0][0].shape[0] * zoom
    cell = side + 8
    grid = np.full((28 + len(rows) * cell, len(headers) * cell, 3), 24, np.uint8)
    for c, head in enumerate(headers):
        _text(grid, head, (c * cell + 4, 18), WHITE, 0.4)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            big = cv2.resize(im, (side, side), interpolation=cv2.INTER_NEAREST)
            grid[28 + r * cell : 28 + r * cell + side, c * cell + 4 : c * cell + 4 + side] = (
                big[..., None] if big.ndim == 2 else big
            )
    return grid


def open_set_panel(
    street: np.ndarray, street_said: str, item: np.ndarray, item_said: str, footer: str
) -> np.ndarray:
    """Side by side: a street region and a clothing item, each with what the same model says."""
    h = 192
    left = cv2.resize(street, (int(street.shape[1] * h / street.shape[0]), h), interpolation=cv2.INTER_AREA)
    right = cv2.cvtColor(cv2.resize(item, (h, h), interpolation=cv2.INTER_NEAREST), cv2.COLOR_GRAY2BGR)
    x1 = left.shape[1] + 20
    panel = np.full((h + 84, x1 + h + 10, 3), 24, np.uint8)
    panel[26 : 26 + h, 10 : x1 - 10], panel[26 : 26 + h, x1 : x1 + h] = left, right
    _text(panel, "a street region (vtest.avi)", (10, 18), GREY, 0.42)
    _text(panel, "a test item", (x1, 18), GREY, 0.42)
    _text(panel, street_said, (10, h + 50), ORANGE, 0.6)
    _text(panel, item_said, (x1, h + 50), GREEN, 0.6)
    _text(panel, footer, (10, h + 74), GREY, 0.4)
    return panel


def timeline(
    t: np.ndarray,
    series: Sequence[tuple[str, np.ndarray, tuple[int, int, int]]],
    threshold: float,
    spans: Sequence[tuple[float, float]],
    events: Sequence[tuple[float, bool]],
    title: str,
    raster: tuple[np.ndarray, np.ndarray] | None = None,
    t_end: float | None = None,
    width: int = 900,
) -> np.ndarray:
    """Scores over time (s): ``series`` of (name, values, colour; NaN leaves a gap), the threshold
    dashed, ground-truth spans shaded, events as ticks above the plot (green: on a pasted object,
    red: false). ``raster`` = (in an event, object there), both (frames, tiles) bool: below the
    plot, one row per tile, dark where it is in an event, green where an object lies in it.
    ``t_end``: where the time axis ends (the clip's length; default: the last time)."""
    tiles = 0 if raster is None else raster[0].shape[1]
    w, h = width, 300 + (4 * tiles + 22 if tiles else 0)
    left, right, top, bottom = 44, 12, 58, 34 + (4 * tiles + 22 if tiles else 0)
    img = np.full((h, w, 3), 255, np.uint8)
    t1 = float(max(t_end or t.max(initial=1.0), 1e-6))
    y1 = float(np.ceil(max(max(np.nanmax(v, initial=0.0) for _, v, _ in series), threshold) * 1.05))
    tstep = next(s for s in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000) if t1 / s <= 12)

    def px(x: float) -> int:
        return int(round(left + x / t1 * (w - left - right)))

    def py(y: float) -> int:
        return int(round(h - bottom - y / y1 * (h - top - bottom)))

    for a, b in spans:
        cv2.rectangle(img, (px(a), top), (px(b), h - bottom), SHADE, -1)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), BLACK, 1)
    for v in np.arange(0, y1 + 0.5, 1 if y1 <= 8 else 2):
        cv2.line(img, (left - 3, py(v)), (left, py(v)), BLACK, 1)
        _text(img, f"{v:.0f}", (26, py(v) + 4), BLACK, 0.35)
    for v in np.arange(0, t1 + 1e-6, tstep):
        cv2.line(img, (px(v), h - bottom), (px(v), h - bottom + 3), BLACK, 1)
        _text(img, f"{v:.0f}", (px(v) - 4, h - bottom + 16), BLACK, 0.35)
    for x in range(left, w - right, 12):  # the threshold, dashed
        cv2.line(img, (x, py(threshold)), (min(x + 6, w - right), py(threshold)), RED, 1)
    for _, values, colour in series:
        for part in np.split(np.arange(len(t)), np.flatnonzero(np.isnan(values))):
            part = [i for i in part if not np.isnan(values[i])]
            pts = np.array([[px(t[i]), py(values[i])] for i in part], np.int32).reshape(-1, 2)
            cv2.polylines(img, [pts], False, colour, 1, cv2.LINE_AA)
    for x, true in events:
        cv2.line(img, (px(x), top - 9), (px(x), top - 1), GREEN if true else RED, 2)
    _text(img, title, (left, 16), BLACK, 0.45)
    _text(img, "seconds", (w // 2, h - bottom + 30), BLACK, 0.38)
    legend = [(SHADE, "object present"), (RED, "threshold; ticks: false events")]
    legend += [(colour, name) for name, _, colour in series] + [(GREEN, "event on an object")]
    x = left
    for colour, name in legend:
        cv2.rectangle(img, (x, 26), (x + 10, 36), colour, -1)
        _text(img, name, (x + 14, 35), BLACK, 0.38)
        x += 24 + cv2.getTextSize(name, FONT, 0.38, 1)[0][0]
    if tiles:  # the tiles x time raster, on the plot's time axis
        flags, held = raster
        y0 = h - 4 * tiles - 4
        _text(
            img,
            "tiles (rows) in an event: dark; a pasted object in the tile: green",
            (left, y0 - 6),
            BLACK,
            0.38,
        )
        edges = [px(a) for a in t] + [w - right]
        for i in range(len(t)):
            for j in range(tiles):
                colour = (60, 60, 60) if flags[i, j] else None
                colour = GREEN if held[i, j] and flags[i, j] else (SHADE if held[i, j] else colour)
                if colour is not None:
                    cv2.rectangle(
                        img,
                        (edges[i], y0 + 4 * j),
                        (max(edges[i + 1] - 1, edges[i]), y0 + 4 * j + 2),
                        colour,
                        -1,
                    )
        cv2.rectangle(img, (left, y0 - 1), (w - right, y0 + 4 * tiles), BLACK, 1)
    return img

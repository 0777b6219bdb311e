"""Regions: the rectangles of a frame the engine reads, regions of interest or a grid of tiles.

One home for region geometry: ``pixlm run --roi/--grid``, ``pixlm train --tile``, the studies and
the streamer parse, check and cut regions here, so one rule holds for all of them.

::

    --roi [SOURCE=]x,y,w,h  --parse_roi-->  boxes per source (rois_per_source: an unknown SOURCE
                                            is refused before anything opens)
    --grid RxC / --tile RxC --parse_grid->  rows x columns, at most MAX_REGIONS tiles
                                     |
    a source's frame size (w x h) ---+--fit_regions-->  [Region, ...], or ValueError when they do not
                                                        fit (the streamer then skips that source)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from pixlm.runtime.sources import source_names

MAX_REGIONS = 1024  # regions per frame: beyond it a grid is a typo, and memory grows with it

Box = tuple[int, int, int, int]  # x, y, w, h in pixels


@dataclass(frozen=True)
class Region:
    """A rectangle of a frame, in pixels."""

    name: str
    x: int
    y: int
    w: int
    h: int

    def crop(self, image: np.ndarray) -> np.ndarray:
        return image[self.y : self.y + self.h, self.x : self.x + self.w]

    def to_list(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]


def grid_regions(width: int, height: int, rows: int, cols: int) -> list[Region]:
    """An R x C grid of tiles covering the frame, named ``r{row}c{col}``."""
    if rows < 1 or cols < 1 or rows > height or cols > width:
        raise ValueError(f"grid {rows}x{cols} does not fit a {width}x{height} frame")
    ys = np.linspace(0, height, rows + 1).round().astype(int)
    xs = np.linspace(0, width, cols + 1).round().astype(int)
    return [
        Region(f"r{r}c{c}", int(xs[c]), int(ys[r]), int(xs[c + 1] - xs[c]), int(ys[r + 1] - ys[r]))
        for r in range(rows)
        for c in range(cols)
    ]


def check_grid(rows: int, cols: int) -> tuple[int, int]:
    """A grid of at least one row and one column and at most ``MAX_REGIONS`` tiles; ValueError else."""
    if rows < 1 or cols < 1:
        raise ValueError(f"grid {rows}x{cols} needs at least one row and one column")
    if rows * cols > MAX_REGIONS:
        raise ValueError(f"grid {rows}x{cols}: more than {MAX_REGIONS} regions per frame")
    return rows, cols


def parse_grid(text: str) -> tuple[int, int]:
    """'2x3' -> (2, 3): rows x columns (``check_grid``'s rule); ValueError otherwise."""
    try:
        rows, cols = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"{text!r} must look like 2x2 (rows x columns)") from None
    return check_grid(rows, cols)


def check_box(box: Sequence) -> Box:
    """(x, y, w, h) in whole pixels, inside any frame's top-left quadrant: x, y >= 0, w, h >= 1."""
    try:
        x, y, w, h = (int(v) for v in box)
    except (TypeError, ValueError):
        raise ValueError(f"region {box!r} must be four integers x, y, w, h") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ValueError(f"region {[x, y, w, h]}: x and y must be >= 0, width and height >= 1")
    return x, y, w, h


def parse_roi(text: str) -> tuple[str | None, Box]:
    """'x,y,w,h' -> (None, box): a region of every source; 'SOURCE=x,y,w,h' -> (SOURCE, box): of that
    source only (its URI, or its name in results: a second copy of a URI is 'URI#2')."""
    key, sep, xywh = text.rpartition("=")  # the last '=': a URI may hold '=' itself
    try:
        box = tuple(int(v) for v in xywh.split(","))
        if len(box) != 4:
            raise ValueError
    except ValueError:
        raise ValueError(f"{text!r} must look like x,y,w,h or SOURCE=x,y,w,h in pixels") from None
    if sep and not key:
        raise ValueError(f"{text!r}: the source before '=' is empty")
    return (key if sep else None), check_box(box)


def rois_per_source(
    rois: Sequence[Sequence[int]] | Mapping[str, Sequence[Sequence[int]]] | None,
    uris: Sequence[str | int],
    names: Sequence[str],
) -> list[list[Box] | None]:
    """The boxes of each source (None: the whole frame).

    ``rois`` is a list of boxes for every source, or a mapping from a source to its boxes. A key is
    a source's URI as given (every copy of it, password and all) or its name in results (``names``:
    password redacted, ``URI#2`` for the second copy); a name wins over a URI for its one source.
    Sources without a key read the whole frame. A key that names no source is refused here, before
    anything opens, instead of failing part-way through the stream.
    """
    if rois is None:
        return [None] * len(uris)
    if not isinstance(rois, Mapping):
        boxes = [check_box(b) for b in rois]
        if not boxes:
            raise ValueError("an empty list of regions of interest")
        return [boxes] * len(uris)
    by_uri: dict[int, list[Box]] = {}
    by_name: dict[int, list[Box]] = {}
    unknown = []
    for key, value in rois.items():
        boxes = [check_box(b) for b in value]
        if not boxes:
            raise ValueError(f"an empty list of regions of interest for {_shown(key)!r}")
        hits = [i for i, u in enumerate(uris) if str(u) == str(key)]
        for i in hits:
            by_uri[i] = boxes
        if not hits and str(key) in names:
            by_name[names.index(str(key))] = boxes
        elif not hits:
            unknown.append(_shown(key))
    if unknown:
        raise ValueError(
            f"regions of interest for {', '.join(map(repr, unknown))}: no such source "
            f"(the sources: {', '.join(names)}; a second copy of a URI is named 'URI#2')"
        )
    return [by_name.get(i, by_uri.get(i)) for i in range(len(uris))]


def _shown(key: object) -> str:
    """A key as an error message may show it: never a password typed in it."""
    return source_names([str(key)])[0]


def fit_regions(
    width: int,
    height: int,
    *,
    boxes: Sequence[Box] | None = None,
    grid: tuple[int, int] | None = None,
    min_tile: tuple[int, int] = (1, 1),
) -> list[Region]:
    """The regions of a ``width`` x ``height`` frame: ``boxes`` named roi0, roi1 ..., a ``grid`` of
    tiles no smaller than ``min_tile`` (w, h: the model's input), or else the whole frame.

    ValueError when they do not fit this frame (a box outside it, tiles too small): the streamer then
    skips the source and reports it, and the other sources go on.
    """
    if grid is not None:
        regions = grid_regions(width, height, *grid)
        tw, th = min(r.w for r in regions), min(r.h for r in regions)
        if tw < min_tile[0] or th < min_tile[1]:
            raise ValueError(
                f"grid {grid[0]}x{grid[1]} cuts the {width}x{height} frame into {tw}x{th}-pixel tiles, "
                f"smaller than the model's {min_tile[0]}x{min_tile[1]} input"
            )
        return regions
    if boxes is None:
        return [Region("full", 0, 0, width, height)]
    regions = [Region(f"roi{i}", *b) for i, b in enumerate(boxes)]
    for r in regions:
        if r.x + r.w > width or r.y + r.h > height:
            raise ValueError(f"region {r.to_list()} lies outside the {width}x{height} frame")
    return regions


@dataclass(frozen=True)
class Zones:
    """Where alerts may fire: a region mostly (half its area or more) inside an ``exclude`` box
    raises none (a road, a tree in the wind), nor one mostly outside every ``include`` box when
    there are include boxes. Boxes are (x, y, w, h) in frame pixels, for every source."""

    include: tuple[Box, ...] = ()
    exclude: tuple[Box, ...] = ()

    def mutes(self, source: str, region: Region) -> bool:
        inside = lambda boxes: _covered(region, boxes) >= 0.5  # noqa: E731
        return inside(self.exclude) or (bool(self.include) and not inside(self.include))


def _covered(region: Region, boxes: Sequence[Box]) -> float:
    """Share of the region's area inside the union of ``boxes``."""
    mask = np.zeros((region.h, region.w), bool)
    for x, y, w, h in boxes:
        x0, y0 = max(x - region.x, 0), max(y - region.y, 0)
        x1, y1 = min(x + w - region.x, region.w), min(y + h - region.y, region.h)
        if x1 > x0 and y1 > y0:
            mask[y0:y1, x0:x1] = True
    return float(mask.mean())

"""A scene model's alert thresholds, fitted on calibration frames of the camera's own footage.

::

    checkpoint (trained on frames A of the clip, cut into the grid it names)
    calibration frames B (not A, not the frames any report uses), every ``stride``-th
        -> every tile's per-token surprise map (bits per pixel), through the model
        -> the runtime's persistence (``pixlm.runtime.alerts``): minimum over ``after_s`` seconds,
           reduced to the top tenth's mean
        -> per tile: the ``quantile`` of those scores, at least the ``floor_quantile`` of all
           tiles' values (a lawn tile that never surprised the model still gets a bar)
        -> manifest "alerts": thresholds, persistence, life cycle, grid, stride, which frames

A quantile over the training frames themselves comes out too low (the model has seen them), so
the frames must be others. ``pixlm run`` applies the rules on its own; ``--anomaly-threshold``
overrides the thresholds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from pixlm.data import parse_frame_range, read_frames
from pixlm.model import PixLM
from pixlm.runtime.alerts import AlertRules, Persistence, code_distance, fit_thresholds, reduce_map
from pixlm.runtime.motion import stream_images
from pixlm.runtime.regions import grid_regions
from pixlm.runtime.tokenizer import Tokenizer

# The rule, chosen with `pixlm study alerts --design` on a design split of the clip (a model trained
# on its first 40%, thresholds from 40-50%, objects pasted into 50-60%), never on reported frames:
QUANTILE = 1.0  # of a tile's calibration scores: the highest (calibration is seconds, not hours)
FLOOR_QUANTILE = 0.5  # the least threshold: the median tile's
AFTER_S = 2.0  # a token must stay surprising this long (1 and 1.5 s found fewer at 1 false alert/min)
STILL_LEVELS: float | None = 48.0  # and keep its colour within this many grey levels (None: off)
MARGIN = 1.78  # thresholds x this: the design's factor for <= 1 false alert a minute


def calibration_frames(train_config: dict, given: str | None) -> str | None:
    """The calibration frame range: ``given`` (``--alert-frames``), else the checkpoint's own."""
    return given or train_config.get("calib_frames")


# A motion model's alert: a region moving as the scene never does is news at once (a runner crosses a
# tile in under a second, so no persistence); its threshold is the tile's highest calibration score
# times a margin, chosen with `pixlm study motion --design` (a model trained on 0-40% of the clip,
# thresholds from 40-50%, anomalies staged in 50-60%) as the least at <= 1 false alert a minute.
MOTION_AFTER_S = 0.0
MOTION_MARGIN = 2.38


@torch.no_grad()
def tile_maps(
    model: PixLM, tok: Tokenizer, images: list[np.ndarray], grid: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Per-token surprise in bits per pixel (F, tiles, rows, cols) and the token codes (F, tiles,
    tokens) of what a stream cuts regions from (``pixlm.runtime.motion.stream_images``), tiles cut
    as ``pixlm run --grid``."""
    h, w = images[0].shape[:2]
    regions = grid_regions(w, h, *grid)
    model.eval()
    maps, codes = [], []
    for image in images:
        tokens = tok.encode_prepared(np.stack([tok.prepare(r.crop(image)) for r in regions]))
        _, bits = model.analyze(torch.from_numpy(tokens))
        maps.append(bits.numpy().reshape(len(regions), *tok.grid) / tok.config.patch**2)
        codes.append(tokens)
    return np.stack(maps), np.stack(codes)


def fit_alert_rules(
    model: PixLM,
    tok: Tokenizer,
    video: str,
    frames: str,
    train_config: dict,
    log: Callable[[str], None] = lambda s: None,
) -> AlertRules:
    """Per-tile thresholds from ``frames`` of ``video`` (a range as ``pixlm train --frames``)."""
    if not train_config.get("tile"):
        raise ValueError(
            "alert thresholds need a scene model trained on a video's tiles (pixlm train --tile)"
        )
    grid = (int(train_config["tile"][0]), int(train_config["tile"][1]))
    clip = read_frames(video, 3)
    span = parse_frame_range(frames, len(clip))
    picked = list(range(len(clip)))[span]
    train_span = parse_frame_range(train_config.get("frames"), len(clip))
    if set(picked) & set(range(len(clip))[train_span]):
        raise ValueError(
            f"calibration frames {frames} overlap the training frames {train_config.get('frames')}"
        )
    fps = cv2.VideoCapture(str(video)).get(cv2.CAP_PROP_FPS) or 0.0
    images = stream_images(tok, [clip[i] for i in picked], [i / (fps or 10.0) for i in picked])
    times = np.array([picked[i] for i in images]) / (fps or 10.0)
    maps, codes = tile_maps(model, tok, list(images.values()), grid)
    motion = tok.kind == "motion"
    after_s, levels = (MOTION_AFTER_S, None) if motion else (AFTER_S, STILL_LEVELS)
    margin = MOTION_MARGIN if motion else MARGIN
    still = None if motion else code_distance(tok.palette)
    names = [r.name for r in grid_regions(clip[0].shape[1], clip[0].shape[0], *grid)]
    scores: dict[str, list[float]] = {n: [] for n in names}
    for r, name in enumerate(names):
        p = Persistence(after_s, still, levels)
        for i, t in enumerate(times):
            m = p.push(float(t), maps[i, r], codes[i, r])
            if m is not None:
                scores[name].append(reduce_map(m, "peak"))
    if not all(scores.values()):
        raise ValueError(f"calibration frames {frames}: shorter than the {after_s:g} s an alert needs")
    th = fit_thresholds(scores, QUANTILE, FLOOR_QUANTILE, margin)
    stride = span.step or 1
    log(f"{len(picked)} frames, thresholds {min(th.values()):.2f}-{max(th.values()):.2f} bits/px")
    return AlertRules(
        thresholds=th,
        after_s=after_s,
        still_levels=levels,
        grid=grid,
        calibration={
            "video": Path(video).name,
            "frames": frames,
            "train_frames": train_config.get("frames"),
            "report_from": _end_of(frames),
            "stride": stride,
            "quantile": QUANTILE,
            "floor_quantile": FLOOR_QUANTILE,
            "margin": margin,
            "calibration_frames": len(picked),
        },
    )


def _end_of(frames: str) -> str:
    """Where the calibration range ends: the first frame a report may use."""
    return frames.split(":")[1]

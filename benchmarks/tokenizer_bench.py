"""Tokenizer speed and agreement on real 1280x720 frames, one core.

    .venv/bin/python benchmarks/tokenizer_bench.py

For each tokenizer: frames/s of ``Tokenizer.encode`` on a 1280x720 BGR frame with the "fast"
sampling and with the exact INTER_AREA reference, and the share of tokens on which they agree.
Then the motion tokenizer (``pixlm.runtime.motion``): frames/s of the motion image alone (optical
flow since the previous frame) and with the whole frame's tokens, and of the 6x8 grid's tokens
(48 regions, as ``pixlm run --grid 6x8`` cuts them). Frames: vtest.avi (Debian's opencv-doc),
upscaled to 1280x720.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np

from pixlm.palette import fit_palette
from pixlm.runtime.defaults import VTEST
from pixlm.runtime.motion import Motion, MotionConfig
from pixlm.runtime.regions import grid_regions
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig


def frames(n: int = 60) -> list[np.ndarray]:
    cap = cv2.VideoCapture(VTEST)
    out = []
    while len(out) < n:
        ok, f = cap.read()
        if not ok:
            break
        out.append(cv2.resize(f, (1280, 720), interpolation=cv2.INTER_LINEAR))
    return out


def fps(tok: Tokenizer, fs: list[np.ndarray], seconds: float = 1.5) -> float:
    tok.encode(fs[0])
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        tok.encode(fs[n % len(fs)])
        n += 1
    return n / (time.perf_counter() - t0)


def main() -> None:
    cv2.setNumThreads(1)
    fs = frames()
    grey_small = np.stack(
        [cv2.cvtColor(cv2.resize(f, (56, 56), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY) for f in fs]
    )
    colour_small = np.stack([cv2.resize(f, (32, 32), interpolation=cv2.INTER_AREA) for f in fs])
    configs = {
        "grey 14x14 per-pixel, 16 levels": TokenizerConfig(
            14, 14, 1, 1, palette=fit_palette(grey_small, 16, 1)
        ),
        "grey 28x28, 4x4 patches, 512 codes": TokenizerConfig(
            28, 28, 1, 4, palette=fit_palette(grey_small, 512, 4)
        ),
        "grey 28x28, 2x2 patches, 256 codes": TokenizerConfig(
            28, 28, 1, 2, palette=fit_palette(grey_small, 256, 2)
        ),
        "colour 32x32 per-pixel, 512 colours": TokenizerConfig(
            32, 32, 3, 1, palette=fit_palette(colour_small, 512, 1)
        ),
    }
    print(f"{'tokenizer (1280x720 BGR in)':<38} {'fast fps':>9} {'area fps':>9} {'fast=area tokens':>17}")
    for name, cfg in configs.items():
        fast, area = Tokenizer(cfg), Tokenizer(replace(cfg, sampling="area"))
        agree = np.mean([(fast.encode(f) == area.encode(f)).mean() for f in fs])
        print(f"{name:<38} {fps(fast, fs):9.0f} {fps(area, fs):9.0f} {100 * agree:16.1f}%")
    print()
    print(f"{'motion tokenizer (1280x720 BGR in)':<38} {'image fps':>9} {'+ frame':>9} {'+ 6x8 grid':>11}")
    for width in (160, 320, 640):
        print(f"{f'flow at {width} columns, 28x28, 2x2, 256':<38} " + " ".join(motion_fps(fs, width)))


def motion_fps(fs: list[np.ndarray], width: int, seconds: float = 1.5) -> list[str]:
    """Frames/s of the motion image, then with the whole frame's tokens, then the 6x8 grid's."""
    config = MotionConfig(width=width)
    motion = Motion(config)
    images = [im for i, f in enumerate(fs) if (im := motion.image("fit", f, i / 10)) is not None]
    small = np.stack([cv2.resize(im, (56, 56), interpolation=cv2.INTER_AREA) for im in images])
    tok = Tokenizer(
        TokenizerConfig(28, 28, 3, 2, palette=fit_palette(small, 256, 2), motion=config.to_dict())
    )
    regions = grid_regions(1280, 720, 6, 8)
    out = []
    for what in ("image", "frame", "grid"):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            image = motion.image("cam", fs[n % len(fs)], 100 + n / 10)
            if image is not None and what == "frame":
                tok.encode(image)
            elif image is not None and what == "grid":
                tok.encode_batch([r.crop(image) for r in regions])
            n += 1
        out.append(f"{n / (time.perf_counter() - t0):{9 if what != 'grid' else 11}.0f}")
    return out


if __name__ == "__main__":
    main()

"""Tokenizer speed and agreement on real 1280x720 frames, one core.

    .venv/bin/python benchmarks/tokenizer_bench.py

For each tokenizer: frames/s of ``Tokenizer.encode`` on a 1280x720 BGR frame with the "fast"
sampling and with the exact INTER_AREA reference, and the share of tokens on which they agree.
Frames: vtest.avi (Debian's opencv-doc), upscaled to 1280x720.
"""

from __future__ import annotations

import time
from dataclasses import replace

import cv2
import numpy as np

from pixlm.palette import fit_palette
from pixlm.runtime.defaults import VTEST
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


if __name__ == "__main__":
    main()

"""Characters drawn with OpenCV's Hershey fonts, like scanned handwriting: white on black, 28x28.

Two studies draw them: the open-set study as a set the gate never saw (random characters), and
the new-task study as a labelled folder a user might bring (named characters, distorted harder).
"""

from __future__ import annotations

import cv2
import numpy as np

GLYPHS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
HERSHEY = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_PLAIN,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_SCRIPT_SIMPLEX,
    cv2.FONT_HERSHEY_SCRIPT_COMPLEX,
)


def draw_glyph(ch: str, font: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """One character at a random size, stroke width, slant and position, a little blurred,
    centred in 20x20 inside ``size`` x ``size`` as MNIST is."""
    out = np.zeros((size, size), np.uint8)
    canvas = np.zeros((96, 96), np.uint8)
    scale, thick = rng.uniform(1.2, 2.4), int(rng.integers(2, 7))
    cv2.putText(canvas, ch, (24, 70), font, scale, 255, thick, cv2.LINE_AA)
    shear = rng.uniform(-0.35, 0.35)
    canvas = cv2.warpAffine(canvas, np.float32([[1, shear, -shear * 48], [0, 1, 0]]), (96, 96))
    ys, xs = np.nonzero(canvas > 40)
    if len(ys) == 0:
        return out
    glyph = canvas[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    fit = rng.uniform(14, 21) / max(glyph.shape)
    gh, gw = max(1, round(glyph.shape[0] * fit)), max(1, round(glyph.shape[1] * fit))
    glyph = cv2.resize(glyph, (gw, gh), interpolation=cv2.INTER_AREA)
    y = int(np.clip((size - gh) // 2 + rng.integers(-3, 4), 0, size - gh))
    x = int(np.clip((size - gw) // 2 + rng.integers(-3, 4), 0, size - gw))
    out[y : y + gh, x : x + gw] = glyph
    return cv2.GaussianBlur(out, (3, 3), rng.uniform(0.3, 0.9))


def hershey_glyphs(n: int, rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """``n`` random digits and letters in random Hershey fonts (:func:`draw_glyph`)."""
    out = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        font, ch = HERSHEY[rng.integers(len(HERSHEY))], GLYPHS[rng.integers(len(GLYPHS))]
        out[i] = draw_glyph(ch, font, rng, size)
    return out


def distort(image: np.ndarray, rng: np.random.Generator, strength: float = 1.0) -> np.ndarray:
    """A harder scan: rotated up to 25 degrees, squashed or stretched up to 25% along one axis, a
    stray stroke half the time, uneven ink and sensor noise; ``strength`` scales all of them."""
    size = image.shape[0]
    c = size / 2
    angle = np.deg2rad(rng.uniform(-25, 25) * strength)
    scale = np.ones(2)
    scale[rng.integers(2)] = 1 + rng.uniform(-0.25, 0.25) * strength
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = rot @ np.diag(scale)
    affine = np.hstack([m, (np.array([c, c]) - m @ np.array([c, c]))[:, None]]).astype(np.float32)
    out = cv2.warpAffine(image, affine, (size, size)).astype(np.float32)
    if rng.random() < 0.5 * strength:  # a stray stroke, as from a neighbouring character
        (x0, y0), (x1, y1) = rng.integers(0, size, (2, 2)).tolist()
        stroke = np.zeros_like(out)
        cv2.line(stroke, (x0, y0), (x1, y1), 255.0, int(rng.integers(1, 3)))
        out = np.maximum(out, stroke * rng.uniform(0.4, 0.9))
    out *= rng.uniform(1 - 0.5 * strength, 1.0)  # faint ink
    out += rng.normal(0, 25 * strength, out.shape)  # sensor noise
    return np.clip(out, 0, 255).astype(np.uint8)

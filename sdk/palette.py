"""Fit a tokenizer palette by k-means on training cells (pixels or patches), in numpy.

Image GPT fitted 512 colours by k-means on ImageNet pixels; here the same is done for grey
levels, colours, or ``patch x patch`` cells. Centroids are rounded to uint8 so the tokenizer's
integer nearest-entry search is exact and identical on every machine.
"""

from __future__ import annotations

import numpy as np

from pixlm.runtime.tokenizer import cells_of


def kmeans(x: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> np.ndarray:
    """k-means++ init then Lloyd iterations on (M, D) float32 -> (k, D) centroids."""
    rng = np.random.default_rng(seed)
    x = x.astype(np.float32)
    uniq = np.unique(x, axis=0)
    if len(uniq) <= k:  # fewer distinct cells than codes: every distinct cell is a code
        return uniq
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        c = x[rng.choice(len(x), p=d2 / d2.sum())] if d2.sum() > 0 else x[rng.integers(len(x))]
        centres.append(c)
        d2 = np.minimum(d2, ((x - c) ** 2).sum(1))
    c = np.stack(centres)
    xx = (x * x).sum(1)
    for _ in range(iters):
        assign = (xx[:, None] - 2 * x @ c.T + (c * c).sum(1)[None]).argmin(1)
        counts = np.bincount(assign, minlength=k).astype(np.float32)
        sums = np.zeros_like(c)
        np.add.at(sums, assign, x)
        empty = counts == 0
        c = np.where(empty[:, None], c, sums / np.maximum(counts, 1)[:, None])
        if empty.any():  # re-seed empty clusters on random cells
            c[empty] = x[rng.integers(len(x), size=int(empty.sum()))]
    return c


def fit_palette(
    images: np.ndarray, k: int, patch: int, samples: int = 200_000, seed: int = 0
) -> list[list[int]]:
    """Palette of ``k`` entries from prepared uint8 images (N, H, W[, C]); sorted for stability."""
    cells = cells_of(images, patch)
    cells = cells.reshape(-1, cells.shape[-1])
    rng = np.random.default_rng(seed)
    if len(cells) > samples:
        cells = cells[rng.choice(len(cells), samples, replace=False)]
    centres = np.clip(np.rint(kmeans(cells, k, seed=seed)), 0, 255).astype(np.int64)
    centres = np.unique(centres, axis=0)  # rounding may merge two; unique also sorts
    return centres.tolist()

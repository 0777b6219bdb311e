"""A cheap background model of token images, for a likelihood ratio (numpy only).

A pixel model's likelihood mostly measures how simple an image is: plain strokes on black are
likelier than the clothes it learned, so raw likelihood calls digits typical (Nalisnick et al.
2019). Ren et al. (2019) divide the likelihood by that of a *background* model, which learns only
low-level statistics, so the ratio keeps what is specific to the data. Here the background is a
local context model over the same palette tokens::

    token above, token left --(each mapped to one of GROUPS grey-level groups)--> context c
    p_bg(token | c) = (count(c, token) + ALPHA) / (count(c) + ALPHA * n_codes)

    ratio bits per pixel = (model bits - background bits) / pixels per token

It is fitted on training images (no labels, no outliers), stored in the bundle as one small
array, and costs a table lookup per token at run time.
"""

from __future__ import annotations

import numpy as np

GROUPS = 16  # grey-level groups a neighbouring token is reduced to (keeps the table small)
ALPHA = 0.5  # add-alpha smoothing of the counts
BACKGROUND_KIND = "local-context-v1"  # manifest "background.kind"


def code_groups(palette: np.ndarray, groups: int = GROUPS) -> np.ndarray:
    """(n_codes,) group of each palette code: codes ranked by mean value, cut into equal parts."""
    mean = np.asarray(palette, dtype=np.float64).reshape(len(palette), -1).mean(1)
    rank = np.empty(len(mean), dtype=np.int64)
    rank[np.argsort(mean, kind="stable")] = np.arange(len(mean))
    return (rank * groups // len(mean)).astype(np.int64)


class BackgroundModel:
    """log2 p(token | group above, group left), as a (GROUPS + 1, GROUPS + 1, n_codes) table.

    Group ``GROUPS`` stands for "outside the image" (the first row and column)."""

    def __init__(self, log2p: np.ndarray, groups: np.ndarray, grid: tuple[int, int]):
        g = len(np.unique(groups)) if len(groups) else 0
        if log2p.ndim != 3 or log2p.shape[0] != log2p.shape[1] or log2p.shape[2] != len(groups):
            raise ValueError(f"background table {log2p.shape} does not match {len(groups)} codes")
        if g > log2p.shape[0] - 1 or not np.isfinite(log2p).all() or (log2p > 0).any():
            raise ValueError("background table: not log-probabilities")
        self.log2p, self.groups, self.grid = log2p.astype(np.float32), groups, grid

    @classmethod
    def fit(cls, tokens: np.ndarray, palette: np.ndarray, grid: tuple[int, int]) -> BackgroundModel:
        """Count (context, token) pairs over ``tokens`` (B, rows*cols) of training images."""
        groups = code_groups(palette)
        n = len(groups)
        up, left = cls._contexts(tokens, groups, grid)
        counts = np.zeros((GROUPS + 1, GROUPS + 1, n), dtype=np.float64)
        np.add.at(counts, (up.ravel(), left.ravel(), tokens.ravel()), 1.0)
        p = (counts + ALPHA) / (counts.sum(2, keepdims=True) + ALPHA * n)
        return cls(np.log2(p), groups, grid)

    @staticmethod
    def _contexts(tokens: np.ndarray, groups: np.ndarray, grid: tuple[int, int]) -> tuple[np.ndarray, ...]:
        rows, cols = grid
        g = groups[np.asarray(tokens, dtype=np.int64)].reshape(len(tokens), rows, cols)
        up = np.full_like(g, GROUPS)
        left = np.full_like(g, GROUPS)
        up[:, 1:, :] = g[:, :-1, :]
        left[:, :, 1:] = g[:, :, :-1]
        return up.reshape(len(tokens), -1), left.reshape(len(tokens), -1)

    def token_bits(self, tokens: np.ndarray) -> np.ndarray:
        """(B, N) image tokens -> (B, N) background NLL of each token, in bits."""
        tokens = np.asarray(tokens, dtype=np.int64)
        up, left = self._contexts(tokens, self.groups, self.grid)
        return -self.log2p[up, left, tokens].astype(np.float64)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"log2p": self.log2p, "groups": self.groups, "grid": np.asarray(self.grid)}

    @classmethod
    def from_arrays(cls, a: dict) -> BackgroundModel:
        grid = tuple(int(v) for v in np.asarray(a["grid"]).ravel())
        if len(grid) != 2:
            raise ValueError(f"background grid {grid}: expected rows, cols")
        return cls(np.asarray(a["log2p"]), np.asarray(a["groups"], dtype=np.int64), grid)  # type: ignore[arg-type]

"""What every study shares: AUROC and ROC curves, per-image scores, results files and figures.

Figures are drawn with OpenCV (already a dependency) rather than a plotting library: line plots
with axes, ticks and a legend are all the studies need, and the PNGs stay small enough to commit.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from pixlm.model import PixLM
from pixlm.progress import bar
from pixlm.runtime import novelty
from pixlm.runtime.tokenizer import Tokenizer

LEGEND_CHARS = 20  # a legend entry is cut after this many characters
COLOURS = [
    (180, 119, 31),
    (14, 127, 255),
    (44, 160, 44),
    (40, 39, 214),
    (189, 103, 148),
    (75, 86, 140),
    (194, 119, 227),
]


# -- metrics -----------------------------------------------------------------------------------
def auroc(normal: np.ndarray, anomalous: np.ndarray) -> float:
    """Probability that an anomalous item scores higher than a normal one (ties count half):
    the area under the ROC curve, from ranks (Mann-Whitney U)."""
    s = np.concatenate([normal, anomalous]).astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    order = s.argsort(kind="mergesort")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # ties share their mean rank
    n0, n1 = len(normal), len(anomalous)
    return float((ranks[n0:].sum() - n1 * (n1 + 1) / 2) / (n0 * n1))


def roc_curve(normal: np.ndarray, anomalous: np.ndarray, points: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """(false positive rates, true positive rates) over thresholds, for plotting."""
    s = np.concatenate([normal, anomalous])
    thresholds = np.quantile(s, np.linspace(1, 0, points))
    fpr = (normal[None, :] >= thresholds[:, None]).mean(1)
    tpr = (anomalous[None, :] >= thresholds[:, None]).mean(1)
    return np.r_[0.0, fpr, 1.0], np.r_[0.0, tpr, 1.0]


# -- per-image outputs of a model ---------------------------------------------------------------
@torch.no_grad()
def image_scores(
    model: PixLM,
    tok: Tokenizer,
    images: np.ndarray,
    batch_size: int = 256,
    layer: int | None = None,
    desc: str = "scoring",
) -> dict[str, np.ndarray]:
    """Everything the studies score images with, from one forward pass per batch.

    ``bits``: per-token NLL (B, N); ``probs``: label probabilities (B, L); ``head``: the logits after
    the last image token (B, V); ``png``: PNG bits per pixel of the image the tokens decode to;
    ``features``: mean-pooled middle-layer activations. ``desc`` names the progress bar (a
    terminal only; it vanishes when done).
    """
    model.eval()
    out: dict[str, list] = {"bits": [], "probs": [], "head": [], "png": [], "features": []}
    with bar(desc=desc, total=len(images), leave=False, unit="img") as progress:
        for i in range(0, len(images), batch_size):
            tokens = torch.from_numpy(tok.encode_prepared(images[i : i + batch_size]))
            probs, bits, head = model.analyze(tokens, head=True)
            out["bits"].append(bits.numpy())
            out["probs"].append(probs.numpy())
            out["head"].append(head.numpy())
            out["features"].append(model.features(tokens, layer).numpy())
            out["png"].append(novelty.png_bits_per_pixel(np.stack([tok.decode(t) for t in tokens.numpy()])))
            progress.update(len(tokens))
    return {k: np.concatenate(v) for k, v in out.items()}


@torch.no_grad()
def features_of(
    model: PixLM, tok: Tokenizer, images: np.ndarray, batch_size: int = 256, desc: str = "features"
) -> np.ndarray:
    """Only the mean-pooled middle-layer features (B, d_model): what probes and Mahalanobis read."""
    out = []
    with bar(desc=desc, total=len(images), leave=False, unit="img") as progress:
        for i in range(0, len(images), batch_size):
            batch = images[i : i + batch_size]
            out.append(model.features(torch.from_numpy(tok.encode_prepared(batch))).numpy())
            progress.update(len(batch))
    return np.concatenate(out)


def gate_features(s: dict[str, np.ndarray], tok: Tokenizer) -> np.ndarray:
    """The runtime's open-set summary features (``pixlm.runtime.novelty.FEATURES``) from
    ``image_scores``."""
    return novelty.features(s["bits"], s["probs"], s["png"], tok.config.patch**2)


def gate_inputs(s: dict[str, np.ndarray], tok: Tokenizer) -> novelty.GateInputs:
    """What the runtime's open-set gate reads (summary and head), from ``image_scores``."""
    return novelty.gate_inputs(s["bits"], s["head"], tok.n_codes, s["png"], tok.config.patch**2)


# -- files -------------------------------------------------------------------------------------
def write_json(path: Path, data: dict) -> None:
    """Atomically (temporary file + rename): an interrupted study keeps its previous results."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's file is private; results are ordinary files
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def resume_results(path: Path, key: str, setup: dict, log: Callable[[str], None] = print) -> dict:
    """The results an earlier run of a study left in ``path``, to resume, if they were made with
    the same ``setup`` (stored under ``key``); otherwise empty results with this setup, so that a
    changed protocol never mixes old runs into new figures."""
    setup = json.loads(json.dumps(setup))  # as it reads back: tuples become lists
    old = read_json(path)
    if old and old.get(key) != setup:
        log(f"{path}: made with another {key}; starting afresh")
        old = {}
    old[key] = setup
    return old


def write_png(path: Path, image: np.ndarray) -> None:
    """A figure: PNG for plots; a path ending in .jpg (photographs, heat maps) is JPEG, 85."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    params = [cv2.IMWRITE_JPEG_QUALITY, 85] if path.suffix == ".jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 9]
    cv2.imwrite(str(tmp), image, params)
    os.replace(tmp, path)


# -- figures -----------------------------------------------------------------------------------
def line_plot(
    series: Sequence[tuple[str, np.ndarray, np.ndarray]],
    title: str,
    xlabel: str,
    ylabel: str,
    xlim: tuple[float, float] = (0.0, 1.0),
    ylim: tuple[float, float] = (0.0, 1.0),
    size: tuple[int, int] = (360, 300),
    diagonal: bool = False,
    errors: Sequence[np.ndarray | None] | None = None,
    log_x: bool = False,
) -> np.ndarray:
    """A small line plot (BGR uint8): ``series`` of (name, x, y), optional error bars, a legend."""
    w, h = size
    left, right, top, bottom = 44, 10, 24, 36
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    tx = (lambda v: np.log10(v)) if log_x else (lambda v: np.asarray(v, float))
    x0, x1 = tx(xlim[0]), tx(xlim[1])

    def px(x, y):
        u = left + (tx(x) - x0) / (x1 - x0) * (w - left - right)
        v = h - bottom - (np.asarray(y, float) - ylim[0]) / (ylim[1] - ylim[0]) * (h - top - bottom)
        return np.stack([np.atleast_1d(u), np.atleast_1d(v)], 1).round().astype(np.int32)

    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    for t in np.linspace(ylim[0], ylim[1], 5):
        ((u, v),) = px(xlim[0], t)
        cv2.line(img, (left - 3, v), (left, v), (0, 0, 0), 1)
        cv2.putText(img, f"{t:.2g}", (2, v + 4), font, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    xticks = [xlim[0]] + [x for x in (1, 10, 100, 1000, 10000) if xlim[0] < x < xlim[1]] + [xlim[1]]
    for t in xticks if log_x else np.linspace(xlim[0], xlim[1], 5):
        ((u, v),) = px(t, ylim[0])
        cv2.line(img, (u, v), (u, v + 3), (0, 0, 0), 1)
        cv2.putText(img, f"{t:.3g}", (u - 8, v + 14), font, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, xlabel, (left + 4, h - 6), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, ylabel, (4, top - 8), font, 0.38, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left + 60, top - 8), font, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    if diagonal:
        cv2.line(img, tuple(px(xlim[0], ylim[0])[0]), tuple(px(xlim[1], ylim[1])[0]), (200, 200, 200), 1)
    for i, (name, x, y) in enumerate(series):
        colour = COLOURS[i % len(COLOURS)]
        pts = px(x, y)
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)
        if errors is not None and errors[i] is not None:
            for (u, v), (_, lo), (_, hi) in zip(pts, px(x, y - errors[i]), px(x, y + errors[i]), strict=True):
                cv2.line(img, (u, lo), (u, hi), colour, 1)
                cv2.circle(img, (u, v), 3, colour, -1)
        ly = top + 14 + 14 * i
        cv2.line(img, (w - right - 120, ly - 4), (w - right - 104, ly - 4), colour, 2)
        cv2.putText(img, name[:LEGEND_CHARS], (w - right - 100, ly), font, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    return img


def tile_figures(images: Sequence[np.ndarray], cols: int) -> np.ndarray:
    """Lay equally sized figures out on a grid (white where a row is short)."""
    h, w = images[0].shape[:2]
    rows = -(-len(images) // cols)
    out = np.full((rows * h, cols * w, 3), 255, np.uint8)
    for i, im in enumerate(images):
        r, c = divmod(i, cols)
        out[r * h : (r + 1) * h, c * w : (c + 1) * w] = im
    return out

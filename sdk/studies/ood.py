"""Out-of-distribution rejection with the shipped Fashion-MNIST model: when to say "unknown".

::

    Fashion-MNIST test[:5000]  --> fit the open-set gate (pixlm.runtime.novelty, as the exporter)
    Fashion-MNIST test[5000:]  --\\
    digits, street crops,        --> shipped model --> scores --> AUROC per OOD set,
    street tiles, noise, constant --/                            share rejected at the gate

In distribution: Fashion-MNIST test images (the gate is fitted on the first half, measured on the
second). Out of distribution: scikit-learn's bundled 8x8 hand-written digits upscaled to 20x20
and padded to 28x28 as MNIST is; random square crops (32-288 px) of ``vtest.avi``; every frame of
``vtest.avi`` cut into the 2x2 grid that ``make demo`` streams; uniform noise; constant images.

Scores: ``raw`` bits per pixel (high = unusual); ``png-corrected``: bits per pixel minus PNG bits
per pixel (Serrà et al. 2020); ``confidence``: 1 - the top label probability (Hendrycks & Gimpel
2017, the classifier's own baseline); ``gate``: the runtime's open-set distance.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pixlm import checkpoint
from pixlm.data import load_fashion_mnist, read_frames
from pixlm.runtime.novelty import OODGate
from pixlm.runtime.stream import grid_regions
from pixlm.studies.common import (
    auroc,
    gate_features,
    image_scores,
    line_plot,
    roc_curve,
    tile_figures,
    write_json,
    write_png,
)

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
SCORES = ("raw", "png-corrected", "confidence", "gate")


@dataclass
class OODOptions:
    out: Path = Path("out/studies")
    checkpoint: Path | None = None  # None: the shipped model
    video: str = VTEST
    quick: bool = False  # 1,000 in-distribution images, 200 of each OOD set
    seed: int = 0


def ood_sets(tok, video: str, n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The out-of-distribution sets, prepared to the tokenizer's size (at most ``n`` each)."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(seed)
    h, w = tok.config.height, tok.config.width
    digits = []
    for im in load_digits().images[:n]:  # 8x8, values 0..16: white digit on black, like MNIST
        big = cv2.resize((im * 255 / 16).astype(np.uint8), (20, 20), interpolation=cv2.INTER_LINEAR)
        digits.append(tok.prepare(np.pad(big, 4)))
    frames = [tok.match_channels(f) for f in read_frames(video, tok.config.channels)]
    crops = []
    for _ in range(n):
        f = frames[rng.integers(len(frames))]
        s = int(rng.integers(32, min(f.shape[:2]) + 1))
        y, x = rng.integers(0, f.shape[0] - s + 1), rng.integers(0, f.shape[1] - s + 1)
        crops.append(tok.prepare(f[y : y + s, x : x + s]))
    fh, fw = frames[0].shape[:2]
    tiles = [tok.prepare(r.crop(f)) for f in frames for r in grid_regions(fw, fh, 2, 2)]
    tiles = [tiles[i] for i in np.sort(rng.permutation(len(tiles))[:n])]
    return {
        "digits": np.stack(digits),
        "street crops": np.stack(crops),
        "street 2x2 tiles": np.stack(tiles),
        "uniform noise": rng.integers(0, 256, (n, h, w), dtype=np.uint8),
        "constant": np.broadcast_to(
            np.linspace(0, 255, n).round().astype(np.uint8)[:, None, None], (n, h, w)
        ).copy(),
    }


def run(opts: OODOptions, log: Callable[[str], None] = print) -> dict:
    t0 = time.time()
    model, tok, _ = checkpoint.load(opts.checkpoint or checkpoint.default_checkpoint())
    test = load_fashion_mnist(split="test")
    half = 500 if opts.quick else len(test) // 2
    fit_images, in_images = test.images[:half], test.images[half : 2 * half]
    sets = ood_sets(tok, opts.video, 200 if opts.quick else 2000, opts.seed)

    def scores_of(images: np.ndarray, what: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
        s = image_scores(model, tok, images, desc=f"scoring {what}")
        feats = gate_features(s, tok)
        raw = feats[:, 0]
        return {"raw": raw, "png-corrected": raw - s["png"], "confidence": 1 - s["probs"].max(1)}, feats

    log(f"fitting the gate on {len(fit_images)} Fashion-MNIST test images")
    _, fit_feats = scores_of(fit_images, "gate fit")
    gate = OODGate.fit(fit_feats, accept=0.95)
    inside, in_feats = scores_of(in_images, "Fashion-MNIST")
    inside["gate"] = gate.score(in_feats)
    results = {
        "in_distribution": {
            "images": len(in_images),
            "accepted": float((inside["gate"] <= gate.threshold).mean()),
        },
        "sets": {},
        "gate_threshold": gate.threshold,
        "quick": opts.quick,
    }
    for name, images in sets.items():
        out, feats = scores_of(images, name)
        out["gate"] = gate.score(feats)
        r = {"images": len(images), "auroc": {}, "roc": {}}
        for k in SCORES:
            r["auroc"][k] = auroc(inside[k], out[k])
            fpr, tpr = roc_curve(inside[k], out[k], points=60)
            r["roc"][k] = [np.round(fpr, 4).tolist(), np.round(tpr, 4).tolist()]
        r["rejected"] = float((out["gate"] > gate.threshold).mean())
        results["sets"][name] = r
        log(
            f"{name}: "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["auroc"].items())
            + f"; unknown {r['rejected']:.1%}"
        )
    name = "ood-quick" if opts.quick else "ood"
    results["seconds"] = round(time.time() - t0, 1)
    write_json(opts.out / f"{name}.json", results)
    panels = [
        line_plot(
            [
                (f"{k} {r['auroc'][k]:.2f}", np.array(r["roc"][k][0]), np.array(r["roc"][k][1]))
                for k in SCORES
            ],
            set_name,
            "false pos.",
            "true pos.",
            size=(300, 240),
            diagonal=True,
        )
        for set_name, r in results["sets"].items()
    ]
    write_png(opts.out / f"{name}-roc.png", tile_figures(panels, 5))
    return results


def format_table(results: dict) -> str:
    lines = [
        "| OOD set | " + " | ".join(f"AUROC {k}" for k in SCORES) + " | called unknown |",
        "|---|" + "---:|" * (len(SCORES) + 1),
    ]
    for name, r in results["sets"].items():
        cells = " | ".join(f"{r['auroc'][k]:.3f}" for k in SCORES)
        lines.append(f"| {name} | {cells} | {100 * r['rejected']:.1f}% |")
    acc = results["in_distribution"]
    lines.append(f"| (Fashion-MNIST, in distribution) | | | | | {100 * (1 - acc['accepted']):.1f}% |")
    return "\n".join(lines)

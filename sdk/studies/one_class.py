"""One-class anomaly detection on Fashion-MNIST, the standard protocol (GEOM, GOAD, ...).

For each class c: train a pixel model without labels on class c's training images only; score
all 10,000 test images, class c normal and the other nine anomalous; AUROC per class and mean::

    train[c][:90%] --pixlm train (pixel loss only)--> model_c
    train[c][90%:] (held out) --> mean/covariance of the scores below (nothing else is fitted)
    test (10,000) --model_c--> per image: bits per pixel, PNG bits per pixel, token surprises,
                               mean-pooled middle-layer features --> scores --> AUROC

Scores, side by side: ``raw`` bits per pixel; ``png-corrected`` bits per pixel minus the PNG
length (Serrà et al. 2020); ``typicality``: Mahalanobis distance of (bits per pixel, PNG bits,
largest and spread of token surprises) to the held-out normal images (the runtime's open-set
recipe without the label term); ``features``: Mahalanobis distance of the model's mean-pooled
middle-layer activations to those of the training images (Ledoit-Wolf shrunk covariance).
Baselines on raw pixels, in the same run: a one-class SVM (RBF) and the mean distance to the 5
nearest training images.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pixlm import checkpoint
from pixlm.data import FASHION_MNIST_LABELS, load_fashion_mnist
from pixlm.progress import above, bar
from pixlm.runtime.novelty import OODGate
from pixlm.studies.common import (
    auroc,
    features_of,
    image_scores,
    line_plot,
    read_json,
    roc_curve,
    tile_figures,
    write_json,
    write_png,
)
from pixlm.train import TrainConfig, train

SCORES = ("raw", "png-corrected", "typicality", "features", "pixel-ocsvm", "pixel-knn")
ANCHORS = {  # published means (AUROC, %), Fashion-MNIST one-class protocol
    "GEOM (Golan & El-Yaniv 2018)": 93.5,
    "GOAD (Bergman & Hoshen 2020)": 94.1,
    "raw-pixel OC-SVM (as reported)": 92.8,
}


@dataclass
class OneClassOptions:
    out: Path = Path("out/studies")  # one-class.json and figures
    runs: Path = Path("runs/one-class")  # the ten models (not for git)
    classes: list[int] = field(default_factory=lambda: list(range(10)))
    epochs: float = 4.0
    batch_size: int = 32
    lr: float = 2e-3
    model: dict = field(default_factory=lambda: {"n_layer": 3, "n_head": 4, "d_model": 96})
    threads: int | None = None
    quick: bool = False  # minutes: 400 training images, a tiny model, 1,000 test images
    max_minutes: float | None = None  # per class: stop and save; rerun the study to resume


def _train_class(c: int, opts: OneClassOptions, n_train: int, log: Callable[[str], None]) -> Path:
    out = opts.runs / f"class{c}.pt"
    cfg = TrainConfig(
        data="fashion-mnist",
        output=str(out),
        resume=True,
        classes=[c],
        max_images=n_train,
        epochs=opts.epochs,
        eval_images=0,
        batch_size=opts.batch_size,
        lr=opts.lr,
        warmup_steps=50,
        label_weight=0.0,
        threads=opts.threads,
        precision="bf16",
        max_minutes=opts.max_minutes,
        model=dict(opts.model),
    )
    steps = bar(desc=f"class {c} training", total=_total_steps(n_train, opts), leave=False, unit="step")

    def progress(e: dict) -> None:
        steps.n = e["step"]
        steps.set_postfix(loss=f"{e['loss']:.3f}", refresh=False)
        steps.refresh()

    try:
        result = train(cfg, on_progress=progress, log=lambda s: None)
    finally:
        steps.close()
    if not result.finished:
        raise TimeoutError(f"class {c}: stopped at step {result.step} (--max-minutes); run again to resume")
    return out


def _total_steps(n_train: int, opts: OneClassOptions) -> int:
    return max(1, round(opts.epochs * (n_train // opts.batch_size)))


def _mahalanobis(fit: np.ndarray, test: np.ndarray) -> np.ndarray:
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(fit)
    return lw.mahalanobis(test)


def _pixel_baselines(normal: np.ndarray, test: np.ndarray) -> dict[str, np.ndarray]:
    from sklearn.svm import OneClassSVM

    x = normal.reshape(len(normal), -1).astype(np.float32) / 255
    t = test.reshape(len(test), -1).astype(np.float32) / 255
    svm = OneClassSVM(kernel="rbf", gamma="scale", nu=0.1).fit(x)
    d2 = (t * t).sum(1)[:, None] - 2 * t @ x.T + (x * x).sum(1)[None, :]
    knn = np.sqrt(np.maximum(np.partition(d2, 5, axis=1)[:, :5], 0)).mean(1)
    return {"pixel-ocsvm": -svm.decision_function(t), "pixel-knn": knn}


def score_class(c: int, model_path: Path, calib: np.ndarray, normal: np.ndarray, test) -> dict:
    """AUROC of every score for class ``c`` (normal) against the other classes of ``test``."""
    model, tok, _ = checkpoint.load(model_path)
    cal = image_scores(model, tok, calib, desc=f"class {c} held-out normal")
    seen = features_of(model, tok, normal, desc=f"class {c} training features")  # no PNG, no NLL needed
    tst = image_scores(model, tok, test.images, desc=f"class {c} test scoring")
    ppt = tok.config.patch**2

    def summary(s: dict) -> np.ndarray:  # the runtime gate's features, minus the label term
        bpp = s["bits"].mean(1) / ppt
        return np.stack([bpp, s["png"], s["bits"].max(1), s["bits"].std(1)], 1)

    gate = OODGate.fit(summary(cal))
    scores = {
        "raw": tst["bits"].mean(1) / ppt,
        "png-corrected": tst["bits"].mean(1) / ppt - tst["png"],
        "typicality": gate.score(summary(tst)),
        "features": _mahalanobis(seen, tst["features"]),
        **_pixel_baselines(normal, test.images),
    }
    is_normal = test.labels == c
    out = {"auroc": {}, "roc": {}}
    for name, s in scores.items():
        out["auroc"][name] = auroc(s[is_normal], s[~is_normal])
        fpr, tpr = roc_curve(s[is_normal], s[~is_normal], points=60)
        out["roc"][name] = [np.round(fpr, 4).tolist(), np.round(tpr, 4).tolist()]
    return out


def run(opts: OneClassOptions, log: Callable[[str], None] = print) -> dict:
    """Train (or resume) and score each class; results accumulate in ``out/one-class.json``."""
    log = above(log)  # log lines go above the progress bars
    train_set, test = load_fashion_mnist(split="train"), load_fashion_mnist(split="test")
    if opts.quick:
        test = test.take(np.arange(1000))
    name = "one-class-quick" if opts.quick else "one-class"
    results_path = opts.out / f"{name}.json"
    results = read_json(results_path) or {"classes": {}}
    results["settings"] = {
        "epochs": opts.epochs,
        "batch_size": opts.batch_size,
        "model": opts.model,
        "test_images": len(test),
        "quick": opts.quick,
    }
    for c in bar(opts.classes, "one-class study", unit="class"):
        if str(c) in results["classes"]:
            log(f"class {c} ({FASHION_MNIST_LABELS[c]}): done in an earlier run, kept")
            continue
        t0 = time.time()
        normal = train_set.of_classes([c]).images
        n_train = 400 if opts.quick else int(0.9 * len(normal))
        calib = normal[n_train : n_train + (100 if opts.quick else len(normal))]
        model_path = _train_class(c, opts, n_train, log)
        r = score_class(c, model_path, calib, normal[:n_train], test)
        r["seconds"] = round(time.time() - t0, 1)
        results["classes"][str(c)] = r
        write_json(results_path, results)
        log(
            f"class {c} ({FASHION_MNIST_LABELS[c]}): "
            + ", ".join(f"{k} {v:.3f}" for k, v in r["auroc"].items())
            + f" ({r['seconds']:.0f}s)"
        )
    done = results["classes"]
    results["mean"] = {k: float(np.mean([done[c]["auroc"][k] for c in done])) for k in SCORES}
    results["min"] = {k: float(np.min([done[c]["auroc"][k] for c in done])) for k in SCORES}
    write_json(results_path, results)
    _figure(results, opts.out / f"{name}-roc.png")
    return results


def _figure(results: dict, path: Path) -> None:
    panels = []
    for c, r in sorted(results["classes"].items(), key=lambda kv: int(kv[0])):
        series = [
            (f"{k} {r['auroc'][k]:.2f}", np.array(r["roc"][k][0]), np.array(r["roc"][k][1]))
            for k in ("raw", "png-corrected", "features", "pixel-ocsvm")
        ]
        title = FASHION_MNIST_LABELS[int(c)]
        panels.append(line_plot(series, title, "false pos.", "true pos.", size=(300, 240), diagonal=True))
    write_png(path, tile_figures(panels, min(5, len(panels))))


def format_table(results: dict) -> str:
    """Markdown: AUROC per class and score, then the means, with the published anchors."""
    head = "| class | " + " | ".join(SCORES) + " |"
    lines = [head, "|---|" + "---:|" * len(SCORES)]
    for c, r in sorted(results["classes"].items(), key=lambda kv: int(kv[0])):
        cells = " | ".join(f"{r['auroc'][k]:.3f}" for k in SCORES)
        lines.append(f"| {c} {FASHION_MNIST_LABELS[int(c)]} | {cells} |")
    lines.append("| **mean** | " + " | ".join(f"**{results['mean'][k]:.3f}**" for k in SCORES) + " |")
    lines.append("| min | " + " | ".join(f"{results['min'][k]:.3f}" for k in SCORES) + " |")
    return "\n".join(lines)

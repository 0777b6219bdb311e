"""A static camera's scene, learned without labels: are pasted foreign objects found?

::

    vtest.avi frames [0, 60%) --tiles of the grid--> pixlm train (pixel loss only) --> scene model
                         \\--> MOG2 background subtractor (learns, then frozen) ---> baseline
    frames [60%, 100%) --paste bags into half of the tiles (known boxes and masks)-->
        scene model: per-tile token surprises (bits) -> region score and pixel map
        MOG2: per-tile foreground fraction and pixel mask
    --> region AUROC (pasted vs clean tiles) and pixel AUROC (surprise map vs pasted masks)

The pasted objects are Fashion-MNIST "Bag" test images scaled to 30-60 px, tinted a random colour,
at a random place inside a random half of the tiles. People walk through the training footage, so
a tile with a person and no bag counts as clean: a detector that flags every moving thing loses.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pixlm import checkpoint
from pixlm.data import load_fashion_mnist, parse_frame_range, read_frames
from pixlm.progress import above, bar
from pixlm.runtime.defaults import VTEST
from pixlm.runtime.stream import grid_regions
from pixlm.studies.common import auroc, image_scores, line_plot, roc_curve, write_json, write_png
from pixlm.train import TrainConfig, train

REGION_SCORES = ("pixlm mean", "pixlm top-10%", "pixlm max", "MOG2")


@dataclass
class SceneOptions:
    out: Path = Path("out/studies")
    model_path: Path = Path("runs/scene/vtest-scene.pt")
    video: str = VTEST
    grid: tuple[int, int] = (6, 8)  # tiles of 96x96 px on vtest's 768x576 frames
    train_frames: str = "0:0.6:2"  # every 2nd frame of the first 60%
    test_frames: str = "0.6::2"  # every 2nd frame of the rest
    object_px: tuple[int, int] = (30, 60)
    channels: int = 3  # colour tiles: MOG2 sees colour too
    epochs: float = 6.0
    batch_size: int = 64
    lr: float = 2e-3
    model: dict = field(default_factory=lambda: {"n_layer": 3, "n_head": 4, "d_model": 96})
    threads: int | None = None
    max_minutes: float | None = None
    quick: bool = False
    seed: int = 0


def train_scene_model(opts: SceneOptions, log: Callable[[str], None] = print) -> Path:
    """``pixlm train`` on the video's tiles, resumable; returns the checkpoint path."""
    cfg = TrainConfig(
        data=opts.video,
        output=str(opts.model_path),
        resume=True,
        frames=opts.train_frames,
        tile=opts.grid,
        epochs=opts.epochs,
        eval_images=0,
        batch_size=opts.batch_size,
        lr=opts.lr,
        label_weight=0.0,
        channels=opts.channels,
        threads=opts.threads,
        precision="bf16",
        max_minutes=opts.max_minutes,
        model=dict(opts.model),
        seed=opts.seed,
    )
    steps = bar(desc="scene model training", unit="step")

    def progress(e: dict) -> None:
        steps.total = e["total"]
        steps.n = e["step"]
        steps.set_postfix(loss=f"{e['loss']:.3f}", refresh=False)
        steps.refresh()

    try:
        result = train(cfg, on_progress=progress, log=above(log))
    finally:
        steps.close()
    if not result.finished:
        raise TimeoutError(f"scene model stopped at step {result.step} (--max-minutes); run again to resume")
    return opts.model_path


def paste_objects(
    frames: list[np.ndarray], regions, objects: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Paste a tinted object into a random half of the tiles of every frame.

    Returns the new frames, their object masks (F, H, W) bool and the tiles' labels (F, R) bool.
    """
    out, masks, labels = [], [], []
    for frame in frames:
        frame = frame.copy()
        mask = np.zeros(frame.shape[:2], bool)
        pasted = rng.random(len(regions)) < 0.5
        for r, yes in zip(regions, pasted, strict=True):
            if not yes:
                continue
            s = int(rng.integers(size[0], min(size[1], r.w, r.h) + 1))
            obj = cv2.resize(objects[rng.integers(len(objects))], (s, s), interpolation=cv2.INTER_AREA)
            alpha = (obj > 20).astype(np.float32)[..., None]
            tint = rng.integers(30, 256, 3).astype(np.float32)
            shade = (obj.astype(np.float32) / 255)[..., None] * tint
            y, x = r.y + int(rng.integers(0, r.h - s + 1)), r.x + int(rng.integers(0, r.w - s + 1))
            patch = frame[y : y + s, x : x + s].astype(np.float32)
            frame[y : y + s, x : x + s] = (alpha * shade + (1 - alpha) * patch).astype(np.uint8)
            mask[y : y + s, x : x + s] |= alpha[..., 0] > 0
        out.append(frame)
        masks.append(mask)
        labels.append(pasted)
    return out, np.stack(masks), np.stack(labels)


def mog2(train_frames: list[np.ndarray], test_frames: list[np.ndarray]) -> np.ndarray:
    """OpenCV's MOG2 learns the background on the training frames, then is frozen: (F, H, W) masks
    of the test frames (255 foreground, 127 shadow, 0 background)."""
    sub = cv2.createBackgroundSubtractorMOG2(history=500, varThreshold=16, detectShadows=True)
    for f in train_frames:
        sub.apply(f)
    return np.stack([sub.apply(f, learningRate=0) for f in test_frames])


def run(opts: SceneOptions, log: Callable[[str], None] = print) -> dict:
    t0 = time.time()
    model_path = train_scene_model(opts, log)
    train_s = time.time() - t0
    model, tok, state = checkpoint.load(model_path)
    frames = read_frames(opts.video, 3)
    span = parse_frame_range(opts.train_frames, len(frames))
    train_frames = frames[span.start : span.stop]  # MOG2 learns from every training frame
    test_frames = frames[parse_frame_range(opts.test_frames, len(frames))]
    if opts.quick:
        test_frames = test_frames[:12]
    h, w = frames[0].shape[:2]
    regions = grid_regions(w, h, *opts.grid)
    rng = np.random.default_rng(opts.seed)
    bags = load_fashion_mnist(split="test").of_classes([8]).images
    pasted, masks, labels = paste_objects(test_frames, regions, bags, opts.object_px, rng)
    log(f"{len(test_frames)} test frames x {len(regions)} tiles, {labels.mean():.0%} with a pasted object")

    # pixlm: every tile through the scene model, as `pixlm run --grid` would cut it
    tiles = np.stack([tok.prepare(r.crop(tok.match_channels(f))) for f in pasted for r in regions])
    bits = image_scores(model, tok, tiles, desc="scoring tiles")["bits"].reshape(
        len(pasted), len(regions), -1
    )
    k, ppt = max(1, bits.shape[-1] // 10), tok.config.patch**2
    region_scores = {  # bits per pixel, as the runtime's `anomaly` and `anomaly_peak`
        "pixlm mean": bits.mean(-1) / ppt,
        "pixlm top-10%": np.sort(bits, -1)[..., -k:].mean(-1) / ppt,
        "pixlm max": bits.max(-1) / ppt,
    }
    fg = mog2(train_frames, pasted)
    region_scores["MOG2"] = np.stack([[(r.crop(m) == 255).mean() for r in regions] for m in fg])
    results: dict = {
        "settings": _settings(opts, state, train_s, len(test_frames)),
        "region_auroc": {},
        "roc": {},
    }
    for name, s in region_scores.items():
        results["region_auroc"][name] = auroc(s[~labels], s[labels])
        fpr, tpr = roc_curve(s[~labels], s[labels], points=60)
        results["roc"][name] = [np.round(fpr, 4).tolist(), np.round(tpr, 4).tolist()]

    # false alarms at 90% of the pasted objects found: on all clean tiles, and on clean tiles where
    # something moves (MOG2 sees >= 1% foreground there: mostly people walking)
    moving = ~labels & (region_scores["MOG2"] >= 0.01)
    results["false_alarms_at_90pct_recall"] = {
        name: {
            "clean_tiles": float((s[~labels] >= np.quantile(s[labels], 0.1)).mean()),
            "clean_tiles_with_motion": float((s[moving] >= np.quantile(s[labels], 0.1)).mean()),
        }
        for name, s in region_scores.items()
    }
    results["clean_tiles_with_motion"] = int(moving.sum())
    results["thresholds_at_90pct_recall"] = {
        n: float(np.quantile(s[labels], 0.1)) for n, s in region_scores.items()
    }

    # pixels: the surprise map projected onto each frame vs the pasted masks (every 4th pixel)
    rows, cols = tok.grid
    heat = np.zeros((len(pasted), h, w), np.float32)
    for i in range(len(pasted)):
        for j, r in enumerate(regions):
            grid = bits[i, j].reshape(rows, cols).astype(np.float32)
            heat[i, r.y : r.y + r.h, r.x : r.x + r.w] = cv2.resize(
                grid, (r.w, r.h), interpolation=cv2.INTER_LINEAR
            )
    sub = (slice(None), slice(None, None, 4), slice(None, None, 4))
    y = masks[sub].ravel()
    results["pixel_auroc"] = {
        "pixlm": auroc(heat[sub].ravel()[~y], heat[sub].ravel()[y]),
        "MOG2": auroc(fg[sub].ravel()[~y].astype(np.float32), fg[sub].ravel()[y].astype(np.float32)),
    }
    log("region AUROC " + ", ".join(f"{k} {v:.3f}" for k, v in results["region_auroc"].items()))
    log("pixel AUROC " + ", ".join(f"{k} {v:.3f}" for k, v in results["pixel_auroc"].items()))
    name = "scene-quick" if opts.quick else "scene"
    write_json(opts.out / f"{name}.json", results)
    _figures(opts.out, name, results, pasted, masks, heat, fg, labels)
    return results


def _settings(opts: SceneOptions, state: dict, train_s: float, n_test: int) -> dict:
    return {
        "video": Path(opts.video).name,
        "grid": list(opts.grid),
        "train_frames": opts.train_frames,
        "test_frames": opts.test_frames,
        "test_frames_used": n_test,
        "object_px": list(opts.object_px),
        "channels": opts.channels,
        "model": opts.model,
        "epochs": opts.epochs,
        "steps": state.get("step"),
        "train_seconds_this_run": round(train_s, 1),
        "quick": opts.quick,
    }


def _figures(out: Path, name: str, results: dict, frames, masks, heat, fg, labels) -> None:
    series = [
        (f"{k} {results['region_auroc'][k]:.2f}", np.array(v[0]), np.array(v[1]))
        for k, v in results["roc"].items()
    ]
    write_png(
        out / f"{name}-roc.png",
        line_plot(series, "pasted bags, per tile", "false pos.", "true pos.", diagonal=True),
    )
    i = int(np.argmax(labels.sum(1)))  # the frame with the most pasted objects
    frame = frames[i]
    contours, _ = cv2.findContours(masks[i].astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    shown = cv2.drawContours(frame.copy(), contours, -1, (255, 255, 255), 1)
    hm = np.clip(heat[i] / np.quantile(heat[i], 0.995), 0, 1)
    hm = cv2.applyColorMap((hm * 255).astype(np.uint8), cv2.COLORMAP_JET)
    hm = cv2.drawContours(hm, contours, -1, (255, 255, 255), 1)
    mog = cv2.drawContours(cv2.cvtColor(fg[i], cv2.COLOR_GRAY2BGR), contours, -1, (0, 0, 255), 1)
    panels = []
    for im, title in (
        (shown, "frame + pasted bags (outlined)"),
        (hm, "pixlm surprise (bits)"),
        (mog, "MOG2 foreground"),
    ):
        im = cv2.resize(im, (384, 288), interpolation=cv2.INTER_AREA)
        cv2.putText(im, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(im, title, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        panels.append(im)
    write_png(out / f"{name}-heatmap.jpg", np.concatenate(panels, 1))


def format_table(results: dict) -> str:
    lines = [
        "| detector | region AUROC | false alarms at 90% recall: clean tiles | clean tiles with motion |",
        "|---|---:|---:|---:|",
    ]
    for k, v in results["region_auroc"].items():
        fa = results["false_alarms_at_90pct_recall"][k]
        lines.append(
            f"| {k} | {v:.3f} | {100 * fa['clean_tiles']:.1f}% | {100 * fa['clean_tiles_with_motion']:.1f}% |"
        )
    px = results["pixel_auroc"]
    lines.append(
        f"\npixel AUROC (surprise map vs pasted masks): pixlm {px['pixlm']:.3f}, MOG2 {px['MOG2']:.3f}"
    )
    return "\n".join(lines)

"""Your own classes: start from the shipped model with ``--init``, or from scratch, or a CNN.

A user brings a small labelled folder of a task the shipped model never saw. This study builds one
from data at hand and runs, per seed, the three things such a user could do with it::

    20 characters (digits 0-9, letters ABEHKMNRSZ) drawn in 7 Hershey fonts, distorted
    (rotation, stretch, stray strokes, faint ink, noise) --> class folders, as a user has them:
      train/   40 images per class (800)    what every method learns from
      calib/   20 per class (400)           chooses each run's epoch (nothing else)
      report/  100 per class (2,000)        accuracy; nothing was fitted or chosen on it
    pixlm train --data train --eval-data calib --init SHIPPED --shift 2 --keep-epochs
    pixlm train --data train --eval-data calib (same shape and schedule, palette fitted on train)
    the small CNN (few_labels.SmallCNN, 420K parameters), same shifts, epoch chosen on calib

Each seed draws its own folders (new glyphs) and its own training randomness; the table gives the
mean ± sd over the seeds. The goal: ``--init`` beats the CNN trained on the same folder.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pixlm import checkpoint
from pixlm.data import Dataset, load_image_folder
from pixlm.evaluate import evaluate
from pixlm.progress import above, bar
from pixlm.studies.common import resume_results, write_json
from pixlm.studies.few_labels import cnn_accuracy, train_cnn
from pixlm.studies.glyphs import HERSHEY, distort, draw_glyph
from pixlm.train import TrainConfig, epoch_path, train

CHARACTERS = "0123456789ABEHKMNRSZ"
SPLITS = {"train": 40, "calib": 20, "report": 100}  # images per class
METHODS = ("pixlm --init", "pixlm from scratch", "CNN")
SHIPPED_SHAPE = {"n_layer": 4, "n_head": 4, "d_model": 128}  # from scratch: the shipped model's shape
TINY = {"n_layer": 2, "n_head": 2, "d_model": 32}  # quick mode


@dataclass
class NewTaskOptions:
    out: Path = Path("out/studies")  # new-task.json
    runs: Path = Path("runs/new-task")  # the folders and models (not for git)
    init: Path = field(default_factory=checkpoint.default_checkpoint)
    seeds: int = 3
    epochs: int = 20  # pixlm; the epoch kept is the one best on calib
    cnn_epochs: int = 100  # cheap: the CNN gets more, also chosen on calib
    threads: int | None = None
    quick: bool = False  # 5 characters, a few epochs: the pipeline, in a minute


def write_folders(root: Path, seed: int, characters: str, per_split: dict[str, int]) -> None:
    """Class folders ``root/SPLIT/CHAR/NNNN.png``, as a user would have them; each split draws its
    own glyphs (fonts, sizes, distortions), so no image repeats across splits."""
    for i, (split, n) in enumerate(per_split.items()):
        rng = np.random.default_rng([seed, i])
        for ch in characters:
            folder = root / split / ch
            folder.mkdir(parents=True, exist_ok=True)
            for j in range(n):
                glyph = distort(draw_glyph(ch, HERSHEY[rng.integers(len(HERSHEY))], rng), rng)
                cv2.imwrite(str(folder / f"{j:04d}.png"), glyph)


def _pixlm(
    root: Path, out: Path, init: Path | None, seed: int, opts: NewTaskOptions, quick: bool
) -> dict[str, float]:
    """Train on ``root/train``, keep the epoch best on ``root/calib``, score ``root/report``."""
    cfg = TrainConfig(
        data=str(root / "train"),
        eval_data=str(root / "calib"),
        eval_images=None,
        output=str(out),
        init=str(init) if init else None,
        resume=True,
        epochs=opts.epochs,
        batch_size=16 if quick else 32,
        shift=2,
        seed=seed,
        threads=opts.threads,
        precision="bf16",
        keep_epochs=True,
        warmup_steps=20 if quick else 100,
        model=TINY if quick else SHIPPED_SHAPE,
        codes=32 if quick else 256,
    )
    with bar(desc=out.stem, total=None, leave=False, unit="step") as steps:
        result = train(cfg, on_progress=lambda e: steps.update(), log=lambda s: None)
    state = checkpoint.load_state(out)
    if not result.finished:
        raise TimeoutError(f"{out}: stopped at step {result.step}; run the study again to resume")
    best = best_epoch(state["history"])
    model, tok, _ = checkpoint.load(epoch_path(out, round(best["epoch"])))
    report = load_image_folder(root / "report", tok.prepare, tok.config.channels)
    return {
        "accuracy": float(evaluate(model, tok, report)["accuracy"]),
        "calib": float(best["accuracy"]),
        "epoch": int(round(best["epoch"])),
    }


def best_epoch(history: list[dict]) -> dict:
    """The whole epoch whose calibration accuracy is highest (the earliest of equals): only whole
    epochs have weights on disk (``--keep-epochs``)."""
    whole = [h for h in history if abs(h["epoch"] - round(h["epoch"])) < 1e-6]
    return max(whole, key=lambda h: h["accuracy"])


def _cnn(root: Path, seed: int, epochs: int, quick: bool) -> dict[str, float]:
    def read(split: str) -> Dataset:
        return load_image_folder(root / split, lambda im: cv2.resize(im, (28, 28)), 1)

    train_set, calib, report = read("train"), read("calib"), read("report")
    net = train_cnn(train_set, seed, quick, epochs=epochs, batch=32, calib=calib)
    chosen = net.chosen
    return {"accuracy": cnn_accuracy(net, report), "calib": chosen["accuracy"], "epoch": chosen["epoch"]}


def run(opts: NewTaskOptions, log: Callable[[str], None] = print) -> dict:
    if not opts.init.is_file():
        raise ValueError(f"{opts.init}: no such checkpoint to start from")
    log = above(log)
    characters = CHARACTERS[:5] if opts.quick else CHARACTERS
    per_split = {"train": 32, "calib": 10, "report": 40} if opts.quick else SPLITS
    name = "new-task-quick" if opts.quick else "new-task"
    path = opts.out / f"{name}.json"
    protocol = {
        "classes": list(characters),
        "images per class": per_split,
        "init": str(opts.init),
        "epochs": opts.epochs,
        "cnn epochs": opts.cnn_epochs,
        "chosen on": "calib (the epoch of each run)",
        "reported on": "report",
    }
    results = resume_results(path, "protocol", protocol, log)
    results.setdefault("runs", {})
    for seed in bar(range(opts.seeds), "new-task seeds", unit="seed"):
        root = opts.runs / ("quick" if opts.quick else "full") / f"seed{seed}"
        if not (root / "report").is_dir():
            write_folders(root, seed, characters, per_split)
        for method in METHODS:
            key = f"{seed}/{method}"
            if key in results["runs"]:
                continue
            t0 = time.time()
            if method == "CNN":
                r = _cnn(root, seed, opts.cnn_epochs, opts.quick)
            else:
                init = opts.init if method == "pixlm --init" else None
                out = root / ("init.pt" if init else "scratch.pt")
                r = _pixlm(root, out, init, seed, opts, opts.quick)
            r["seconds"] = round(time.time() - t0, 1)
            results["runs"][key] = r
            write_json(path, results)
            acc, epoch, secs = 100 * r["accuracy"], r["epoch"], r["seconds"]
            log(f"seed {seed}, {method}: {acc:.1f}% (epoch {epoch}, {secs:.0f}s)")
    results["summary"] = summarize(results["runs"])
    s = results["summary"]
    results["goal met"] = bool(s["pixlm --init"][0] > s["CNN"][0]) if all(m in s for m in METHODS) else None
    write_json(path, results)
    return results


def summarize(runs: dict) -> dict:
    """{method: [mean, sd, seeds]} of report accuracy."""
    by: dict[str, list[float]] = {}
    for key, r in runs.items():
        by.setdefault(key.split("/", 1)[1], []).append(r["accuracy"])
    return {
        m: [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)] for m, v in by.items()
    }


def format_table(results: dict) -> str:
    s = results["summary"]
    lines = ["| method | report accuracy | seeds |", "|---|---:|---:|"]
    for m in METHODS:
        if m in s:
            lines.append(f"| {m} | {100 * s[m][0]:.1f} ± {100 * s[m][1]:.1f} | {s[m][2]} |")
    met = results.get("goal met")
    lines.append(f"goal (--init above the CNN): {'n/a' if met is None else 'met' if met else 'NOT met'}")
    return "\n".join(lines)

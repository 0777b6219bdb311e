"""Few labels: pretrain without labels, then learn 10 classes from 10 or 100 labelled images each.

::

    60,000 Fashion-MNIST training images, no labels --pixlm train --label-weight 0--> pretrained
    n labelled images per class (5 random draws) --> (a) fine-tune pixlm (--init pretrained)
                                                     (b) linear probe on frozen pixlm features
                                                     (c) a small CNN from scratch
    --> accuracy on all 10,000 test images, mean ± sd over the draws

All three see the same labelled images with the same augmentation (random shifts of up to 2 px).
The CNN is the two-conv-block, 420K-parameter network a user would otherwise pick (docs/performance.md).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm import checkpoint
from pixlm.data import Dataset, load_fashion_mnist, shift_batch
from pixlm.evaluate import predict
from pixlm.progress import above, bar
from pixlm.studies.common import features_of, line_plot, read_json, write_json, write_png
from pixlm.train import TrainConfig, train

METHODS = ("pixlm fine-tune", "pixlm linear probe", "CNN from scratch")


@dataclass
class FewLabelsOptions:
    pretrained: Path = Path("runs/fm-pretrain.pt")  # pixlm train --label-weight 0 on all 60k
    out: Path = Path("out/studies")
    runs: Path = Path("runs/few-labels")
    per_class: list[int] = field(default_factory=lambda: [10, 100])
    draws: int = 5
    threads: int | None = None
    quick: bool = False  # one draw, 1,000 test images, short schedules


class SmallCNN(nn.Module):
    """Two conv blocks and a dense layer: about 420K parameters for 28x28 grey inputs."""

    def __init__(self, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, padding=1)
        self.conv2 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc1 = nn.Linear(64 * 7 * 7, 128)
        self.fc2 = nn.Linear(128, n_classes)
        self.drop = nn.Dropout(0.25)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, 28, 28) in [0, 1]
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(self.drop(F.relu(self.fc1(x.flatten(1)))))


def _schedule(n_images: int, quick: bool) -> tuple[int, int]:
    """(batch size, epochs) for a labelled set of ``n_images``: about 200 steps either way."""
    batch = min(50, max(10, n_images // 4))
    return batch, max(1, round((40 if quick else 200) * batch / n_images))


def train_cnn(
    data: Dataset, seed: int, quick: bool, epochs: int | None = None, batch: int | None = None
) -> SmallCNN:
    """Adam 1e-3 with +-2 px shifts; by default about 600 steps (cheap: train it well), or
    ``epochs`` of ``batch`` (the cost frontier's anchor: 5 epochs of 64 on all 60,000 images)."""
    torch.manual_seed(seed)
    net = SmallCNN(len(data.label_names))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = batch or min(50, max(10, len(data) // 4))
    epochs = epochs or max(1, round((100 if quick else 600) * batch / len(data)))
    rng = np.random.default_rng(seed)
    net.train()
    with bar(desc="CNN training", total=epochs * -(-len(data) // batch), leave=False, unit="step") as steps:
        for _ in range(epochs):
            order = rng.permutation(len(data))
            for i in range(0, len(order), batch):
                idx = order[i : i + batch]
                x = torch.from_numpy(shift_batch(data.images[idx], 2, rng)).float()[:, None] / 255
                loss = F.cross_entropy(net(x), torch.from_numpy(data.labels[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps.update()
    return net.eval()


@torch.no_grad()
def cnn_accuracy(net: SmallCNN, test: Dataset) -> float:
    x = torch.tensor(test.images, dtype=torch.float32)[:, None] / 255  # a copy: the idx data is read-only
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == test.labels).mean())


def finetune_pixlm(opts: FewLabelsOptions, n: int, draw: int, test: Dataset) -> float:
    out = opts.runs / f"ft-{n}-{draw}.pt"
    batch, epochs = _schedule(10 * n, opts.quick)
    cfg = TrainConfig(
        data="fashion-mnist",
        output=str(out),
        init=str(opts.pretrained),
        per_class=n,
        subset_seed=draw,
        seed=draw,
        epochs=epochs,
        batch_size=batch,
        lr=2e-3,  # the pretraining rate: the label tokens start from scratch
        warmup_steps=20,
        shift=2,
        eval_images=0,
        threads=opts.threads,
        precision="bf16",
        save_every=10**9,
    )
    with bar(desc="pixlm fine-tune", leave=False, unit="step") as steps:

        def progress(e: dict) -> None:
            steps.total = e["total"]
            steps.update(e["step"] - steps.n)

        result = train(cfg, on_progress=progress, log=lambda s: None)
    with bar(desc="fine-tuned scoring", total=len(test), leave=False, unit="img") as scoring:
        probs, _ = predict(result.model, result.tokenizer, test.images, on_batch=scoring.update)
    return float((probs.argmax(1) == test.labels).mean())


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Logistic regression on standardised frozen features (scikit-learn, default L2, C=1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float((clf.predict(scaler.transform(test_x)) == test_y).mean())


def run(opts: FewLabelsOptions, log: Callable[[str], None] = print) -> dict:
    if not opts.pretrained.is_file():
        raise ValueError(
            f"{opts.pretrained}: no pretrained model; make one with `pixlm train --label-weight 0 "
            f"--epochs 5 --precision bf16 -o {opts.pretrained}`"
        )
    train_set, test = load_fashion_mnist(split="train"), load_fashion_mnist(split="test")
    if opts.quick:
        test = test.take(np.arange(1000))
    name = "few-labels-quick" if opts.quick else "few-labels"
    path = opts.out / f"{name}.json"
    results = read_json(path) or {"runs": {}}
    model, tok, state = checkpoint.load(opts.pretrained)
    results["pretrained"] = {
        "path": str(opts.pretrained),
        "steps": state.get("step"),
        **state.get("metrics", {}),
    }
    log = above(log)  # log lines go above the progress bars
    log("linear-probe features of the test images")
    test_feats = features_of(model, tok, test.images, desc="test features")
    jobs = [(n, d) for d in range(opts.draws) for n in opts.per_class]  # draw by draw: a cut-off run
    # still covers every size
    for n, d in bar(jobs, "few-label runs", unit="run"):
        key = f"{n}/{d}"
        if key in results["runs"]:
            continue
        t0 = time.time()
        labelled = train_set.per_class(n, seed=d)
        r = {
            "pixlm linear probe": linear_probe(
                features_of(model, tok, labelled.images, desc="probe features"),
                labelled.labels,
                test_feats,
                test.labels,
            ),
            "CNN from scratch": cnn_accuracy(train_cnn(labelled, d, opts.quick), test),
            "pixlm fine-tune": finetune_pixlm(opts, n, d, test),
            "seconds": round(time.time() - t0, 1),
        }
        results["runs"][key] = r
        write_json(path, results)
        log(f"{n} per class, draw {d}: " + ", ".join(f"{k} {100 * r[k]:.1f}%" for k in METHODS))
    results["summary"] = summarize(results["runs"])
    write_json(path, results)
    _figure(results["summary"], opts.out / f"{name}.png")
    return results


def summarize(runs: dict) -> dict:
    """{n: {method: [mean, sd, draws]}} from runs keyed 'n/draw'."""
    out: dict = {}
    for key, r in runs.items():
        n = key.split("/")[0]
        for m in METHODS:
            out.setdefault(n, {}).setdefault(m, []).append(r[m])
    return {
        n: {
            m: [float(np.mean(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, len(v)]
            for m, v in ms.items()
        }
        for n, ms in out.items()
    }


def _figure(summary: dict, path: Path) -> None:
    ns = sorted(summary, key=int)
    if len(ns) < 2:
        return
    x = np.array([int(n) for n in ns], float)
    series, errors = [], []
    for m in METHODS:
        series.append((m, x, np.array([summary[n][m][0] for n in ns])))
        errors.append(np.array([summary[n][m][1] for n in ns]))
    img = line_plot(
        series,
        "Fashion-MNIST test accuracy",
        "labels per class",
        "accuracy",
        xlim=(5, 200),
        ylim=(0.4, 1.0),
        errors=errors,
        log_x=True,
    )
    write_png(path, img)


def format_table(results: dict) -> str:
    s = results["summary"]
    lines = ["| labels per class | " + " | ".join(METHODS) + " | draws |", "|---|---:|---:|---:|---:|"]
    for n in sorted(s, key=int):
        cells = " | ".join(f"{100 * s[n][m][0]:.1f} ± {100 * s[n][m][1]:.1f}" for m in METHODS)
        lines.append(f"| {n} | {cells} | {s[n][METHODS[0]][2]} |")
    return "\n".join(lines)

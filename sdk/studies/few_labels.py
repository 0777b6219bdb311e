"""Few labels: pretrain without labels, then learn 10 classes from 10 or 100 labelled images each,
using the unlabeled images too.

::

    55,000 training images (split fit), no labels --pixlm train --label-weight 0--> pretrained
    n labelled images per class of split fit (5 random draws), the same for every method:
      CNN from scratch            the 420K-parameter two-conv-block network, labelled images only
      CNN + pseudo-labels         then labelled + unlabeled images it labels itself (conf >= 0.95)
      pixlm linear probe          logistic regression on frozen mean-pooled middle-layer features
      pixlm fine-tune             pixel + label loss on the labelled images only
      pixlm semi-supervised       pixel loss on labelled and unlabeled images, label loss on labelled
        , mean-pooled head        the label read from every position's logits, averaged
        + pseudo-labels           then its own confident labels on unlabeled images (conf >= 0.95)
    weights kept at the step most accurate on 1,000 calibration images (split calib, 55,000-59,999)
    --> accuracy on all 10,000 test images (nothing was fitted or chosen on them), mean ± sd

Every method sees the same labelled images with the same augmentation (shifts of up to 2 px),
every semi-supervised run the same unlabeled pool and the same number of steps. The pixlm method
a user would ship is the one best on the calibration images (``best_pixlm``); the goals compare it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from pixlm import checkpoint
from pixlm.data import Dataset, load_fashion_mnist, shift_batch
from pixlm.progress import above, bar
from pixlm.studies.common import features_of, line_plot, resume_results, write_json, write_png

METHODS = (
    "CNN from scratch",
    "CNN + pseudo-labels",
    "pixlm linear probe",
    "pixlm fine-tune",
    "pixlm semi-supervised",
    "pixlm semi-supervised, mean-pooled head",
    "pixlm semi-supervised + pseudo-labels",
)
GOALS = {"10": 0.10, "100": 0.05}  # pixlm's best at least this far above the CNN from scratch


@dataclass
class FewLabelsOptions:
    pretrained: Path = Path("runs/fm-pretrain.pt")  # pixlm train --label-weight 0 on split fit
    out: Path = Path("out/studies")
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


def train_cnn(
    data: Dataset,
    seed: int,
    quick: bool,
    epochs: int | None = None,
    batch: int | None = None,
    calib: Dataset | None = None,
    cosine: bool = False,
) -> SmallCNN:
    """Adam 1e-3 with +-2 px shifts; by default about 600 steps (cheap: train it well), or
    ``epochs`` of ``batch``; ``cosine`` decays the rate to zero over the run (as pixlm trains).
    With ``calib``, the weights kept are those of the epoch most accurate on it: ``net.chosen``
    says which ({"epoch", "accuracy"}) and ``net.curve`` lists every epoch's calib accuracy."""
    torch.manual_seed(seed)
    net = SmallCNN(len(data.label_names))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    batch = batch or min(50, max(10, len(data) // 4))
    epochs = epochs or max(1, round((100 if quick else 600) * batch / len(data)))
    total = epochs * -(-len(data) // batch)
    rng = np.random.default_rng(seed)
    best, best_state, curve, step = {"epoch": 0, "accuracy": -1.0}, None, [], 0
    with bar(desc="CNN training", total=total, leave=False, unit="step") as steps:
        for epoch in range(1, epochs + 1):
            net.train()
            order = rng.permutation(len(data))
            for i in range(0, len(order), batch):
                if cosine:
                    opt.param_groups[0]["lr"] = 1e-3 * 0.5 * (1 + np.cos(np.pi * step / total))
                idx = order[i : i + batch]
                x = torch.from_numpy(shift_batch(data.images[idx], 2, rng)).float()[:, None] / 255
                loss = F.cross_entropy(net(x), torch.from_numpy(data.labels[idx]))
                opt.zero_grad()
                loss.backward()
                opt.step()
                steps.update()
                step += 1
            if calib is not None:
                acc = cnn_accuracy(net.eval(), calib)
                curve.append(acc)
                if acc > best["accuracy"]:
                    best, best_state = {"epoch": epoch, "accuracy": acc}, copy.deepcopy(net.state_dict())
    if best_state is not None:
        net.load_state_dict(best_state)
        net.chosen, net.curve = best, curve
    return net.eval()


@torch.no_grad()
def cnn_accuracy(net: SmallCNN, test: Dataset) -> float:
    x = torch.tensor(test.images, dtype=torch.float32)[:, None] / 255  # a copy: the idx data is read-only
    pred = torch.cat([net(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    return float((pred.numpy() == test.labels).mean())


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Logistic regression on standardised frozen features (scikit-learn, default L2, C=1)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    clf = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float((clf.predict(scaler.transform(test_x)) == test_y).mean())


# -- semi-supervised: every unlabeled image teaches the pixels, the few labels teach the words --
CONFIDENCE = 0.95  # pseudo-labels: FixMatch's published threshold (Sohn et al. 2020), not tuned here
UNLABELED_PER_STEP, LABELLED_PER_STEP = 32, 32  # half and half: 100 labels a class see 6 epochs


@dataclass
class SemiSchedule:
    """Steps of each semi-supervised run; the weights kept are those best on ``calib`` images."""

    # A step of the shipped-size model on 64 images costs about 2.6 s of one core here: 700 steps
    # a draw (three runs and the pseudo-label phase) is about 40 core-minutes with the scoring.
    steps: int = 200  # semi-supervised fine-tune (and the pseudo-label CNN's extra steps)
    pseudo_steps: int = 100  # then pseudo-labels on top of the semi-supervised model
    checks: int = 5  # calibration checks per run (the best one's weights are kept)
    lr: float = 2e-3  # the pretraining rate: the label tokens start from scratch

    @classmethod
    def quick(cls) -> SemiSchedule:
        return cls(steps=120, pseudo_steps=40, checks=3)


def _mixed_batch(
    labelled: Dataset, unlabeled: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images shifted by up to 2 px, the same images unshifted, labels with -1 = unlabeled):
    ``LABELLED_PER_STEP`` labelled images (drawn with replacement) then ``UNLABELED_PER_STEP``
    unlabeled ones."""
    li = rng.integers(0, len(labelled), LABELLED_PER_STEP)
    ui = rng.integers(0, len(unlabeled), UNLABELED_PER_STEP)
    plain = np.concatenate([labelled.images[li], unlabeled[ui]])
    labels = np.concatenate([labelled.labels[li], np.full(UNLABELED_PER_STEP, -1)])
    return shift_batch(plain, 2, rng), plain, labels


def _label_logits(
    model: torch.nn.Module, tokens: torch.Tensor, pool: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel loss, label logits (B, L)) of one pass. ``pool`` "last": the label read after the last
    image token, as the runtime reads it; "mean": averaged over every position after an image token
    (the head is linear, so this is the head applied to the mean-pooled final states)."""
    logits, _ = model(model.with_bos(tokens))
    logits = logits.float()
    n = tokens.shape[1]
    pix = F.cross_entropy(model.code_logits(logits[:, :n]).flatten(0, 1), tokens.flatten())
    lab = model.label_logits(logits[:, 1:].mean(1) if pool == "mean" else logits[:, n])
    return pix, lab


@torch.no_grad()
def pixlm_accuracy(model: torch.nn.Module, tok, data: Dataset, pool: str = "last", batch: int = 500) -> float:
    model.eval()
    right = 0
    for i in range(0, len(data), batch):
        tokens = torch.from_numpy(tok.encode_prepared(data.images[i : i + batch]))
        right += int(
            (_label_logits(model, tokens, pool)[1].argmax(1).numpy() == data.labels[i : i + batch]).sum()
        )
    return right / len(data)


def semi_supervised_pixlm(
    pretrained: Path,
    labelled: Dataset,
    unlabeled: np.ndarray,
    calib: Dataset,
    seed: int,
    sched: SemiSchedule,
    report: Dataset,
    pool: str = "last",
    pseudo: bool = False,
) -> dict[str, float]:
    """Fine-tune the label-free model on the pixel loss of labelled and unlabeled images together
    and the label loss of the labelled ones; with ``pseudo``, continue with the model's own
    confident labels (>= ``CONFIDENCE``) on unlabeled images. Each phase keeps the weights most
    accurate on ``calib`` and is then scored once on ``report``.

    -> {phase: report accuracy, "calib " + phase: its calibration accuracy}. With ``unlabeled``
    = the labelled images themselves this is the plain fine-tune: no image beyond the labelled."""
    torch.manual_seed(seed)
    model, tok, _ = checkpoint.load(pretrained)
    if tuple(tok.labels) != tuple(labelled.label_names):
        raise ValueError(f"{pretrained}: labels {tok.labels} differ from the data's {labelled.label_names}")
    opt = torch.optim.AdamW(model.parameters(), lr=sched.lr, weight_decay=0.01, betas=(0.9, 0.95))
    rng = np.random.default_rng(seed)
    out: dict = {}

    def phase(name: str, steps: int, pseudo_labels: bool) -> None:
        best, best_state = -1.0, None
        every = max(1, steps // sched.checks)
        with bar(desc=name, total=steps, leave=False, unit="step") as progress:
            for step in range(steps):
                for g in opt.param_groups:  # warm-up, then cosine to a tenth
                    t = step / max(1, steps)
                    g["lr"] = sched.lr * min(1.0, (step + 1) / 20) * (0.1 + 0.45 * (1 + np.cos(np.pi * t)))
                shifted, plain, labels = _mixed_batch(labelled, unlabeled, rng)
                if pseudo_labels:  # the model's own confident labels, from the unshifted image
                    model.eval()
                    with torch.no_grad():
                        p = F.softmax(
                            _label_logits(model, torch.from_numpy(tok.encode_prepared(plain)), pool)[1], 1
                        )
                    conf, guess = p.max(1)
                    keep = (labels < 0) & (conf.numpy() >= CONFIDENCE)
                    labels = np.where(keep, guess.numpy(), labels)
                model.train()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    pix, lab = _label_logits(model, torch.from_numpy(tok.encode_prepared(shifted)), pool)
                loss = pix + F.cross_entropy(lab.float(), torch.from_numpy(labels), ignore_index=-1)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                progress.update()
                if (step + 1) % every == 0 or step + 1 == steps:
                    acc = pixlm_accuracy(model, tok, calib, pool)
                    if acc > best:
                        best, best_state = acc, copy.deepcopy(model.state_dict())
        model.load_state_dict(best_state)
        out["calib " + name], out[name] = best, pixlm_accuracy(model, tok, report, pool)

    phase("semi-supervised", sched.steps, False)
    if pseudo:
        phase("pseudo-labels", sched.pseudo_steps, True)
    return out


def pseudo_label_cnn(
    labelled: Dataset, unlabeled: np.ndarray, calib: Dataset, seed: int, quick: bool, sched: SemiSchedule
) -> SmallCNN:
    """The standard semi-supervised anchor: the CNN from scratch, then ``sched.steps`` more steps on
    its labelled images and unlabeled ones it labels itself with confidence >= ``CONFIDENCE``
    (pseudo-labelling, Lee 2013); the weights kept are the ones most accurate on ``calib``."""
    net = train_cnn(labelled, seed, quick)
    opt = torch.optim.Adam(net.parameters(), lr=3e-4)
    rng = np.random.default_rng(seed + 1000)
    best, best_state = cnn_accuracy(net, calib), copy.deepcopy(net.state_dict())
    every = max(1, sched.steps // sched.checks)
    for step in range(sched.steps):
        shifted, plain, labels = _mixed_batch(labelled, unlabeled, rng)
        net.eval()
        with torch.no_grad():
            p = F.softmax(net(torch.from_numpy(plain).float()[:, None] / 255), 1)
        conf, guess = p.max(1)
        labels = np.where((labels < 0) & (conf.numpy() >= CONFIDENCE), guess.numpy(), labels)
        net.train()
        x = torch.from_numpy(shifted).float()[:, None] / 255
        loss = F.cross_entropy(net(x), torch.from_numpy(labels), ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % every == 0:
            acc = cnn_accuracy(net, calib)
            if acc > best:
                best, best_state = acc, copy.deepcopy(net.state_dict())
    net.load_state_dict(best_state)
    return net.eval()


def run(opts: FewLabelsOptions, log: Callable[[str], None] = print) -> dict:
    if not opts.pretrained.is_file():
        raise ValueError(
            f"{opts.pretrained}: no pretrained model; make one with `pixlm train --max-images 55000 "
            f"--label-weight 0 --epochs 4 --precision bf16 -o {opts.pretrained}`"
        )
    if opts.threads:
        torch.set_num_threads(opts.threads)
    fit = load_fashion_mnist(split="fit")  # labelled draws and the unlabeled pool
    calib = load_fashion_mnist(split="calib").take(np.arange(200 if opts.quick else 1000))
    report = load_fashion_mnist(split="test")
    sched = SemiSchedule.quick() if opts.quick else SemiSchedule()
    unlabeled = fit.images
    if opts.quick:
        report, unlabeled = report.take(np.arange(1000)), unlabeled[:5000]
    name = "few-labels-quick" if opts.quick else "few-labels"
    path = opts.out / f"{name}.json"
    protocol = {
        "labelled": "draws from Fashion-MNIST training images 0-54,999 (split fit)",
        "unlabeled": f"{len(unlabeled)} images of split fit",
        "chosen on": f"{len(calib)} images of split calib (training images 55,000-59,999)",
        "reported on": f"{len(report)} test images",
        "steps": asdict(sched),
        "confidence": CONFIDENCE,
        "pretrained": str(opts.pretrained),
    }
    log = above(log)  # log lines go above the progress bars
    results = resume_results(path, "protocol", protocol, log)
    results.setdefault("runs", {})
    model, tok, state = checkpoint.load(opts.pretrained)
    results["pretrained"] = {
        "path": str(opts.pretrained),
        "steps": state.get("step"),
        **state.get("metrics", {}),
    }
    log("linear-probe features of the report images")
    report_feats = features_of(model, tok, report.images, desc="report features")
    jobs = [(n, d) for d in range(opts.draws) for n in opts.per_class]  # draw by draw: a cut-off run
    # still covers every size
    for n, d in bar(jobs, "few-label runs", unit="run"):
        key = f"{n}/{d}"
        if key in results["runs"]:
            continue
        t0 = time.time()
        labelled = fit.per_class(n, seed=d)
        plain = semi_supervised_pixlm(opts.pretrained, labelled, labelled.images, calib, d, sched, report)
        semi = semi_supervised_pixlm(
            opts.pretrained, labelled, unlabeled, calib, d, sched, report, pseudo=True
        )
        pooled = semi_supervised_pixlm(opts.pretrained, labelled, unlabeled, calib, d, sched, report, "mean")
        r = {
            "CNN from scratch": cnn_accuracy(train_cnn(labelled, d, opts.quick), report),
            "CNN + pseudo-labels": cnn_accuracy(
                pseudo_label_cnn(labelled, unlabeled, calib, d, opts.quick, sched), report
            ),
            "pixlm linear probe": linear_probe(
                features_of(model, tok, labelled.images, desc="probe features"),
                labelled.labels,
                report_feats,
                report.labels,
            ),
            "pixlm fine-tune": plain["semi-supervised"],
            "pixlm semi-supervised": semi["semi-supervised"],
            "pixlm semi-supervised, mean-pooled head": pooled["semi-supervised"],
            "pixlm semi-supervised + pseudo-labels": semi["pseudo-labels"],
            "calibration": {
                "pixlm fine-tune": plain["calib semi-supervised"],
                "pixlm semi-supervised": semi["calib semi-supervised"],
                "pixlm semi-supervised, mean-pooled head": pooled["calib semi-supervised"],
                "pixlm semi-supervised + pseudo-labels": semi["calib pseudo-labels"],
            },
            "seconds": round(time.time() - t0, 1),
        }
        results["runs"][key] = r
        write_json(path, results)
        log(f"{n} per class, draw {d}: " + ", ".join(f"{k} {100 * r[k]:.1f}%" for k in METHODS))
    results["summary"] = summarize(results["runs"])
    results["goals"] = goals(results["runs"])
    write_json(path, results)
    _figure(results["summary"], opts.out / f"{name}.png")
    return results


def best_pixlm(runs: dict) -> str:
    """The pixlm method with the best mean CALIBRATION accuracy over every run: the one a user
    would ship, chosen without looking at the report images."""
    names = [m for m in METHODS if m.startswith("pixlm") and m != "pixlm linear probe"]
    return max(names, key=lambda m: np.mean([r["calibration"][m] for r in runs.values()]))


def goals(runs: dict) -> dict:
    """Per labelled size: the chosen pixlm method's mean gain over the CNN from scratch and over
    the pseudo-label CNN on the report images, and whether the goal is met."""
    chosen, out = best_pixlm(runs), {}
    for n in sorted({k.split("/")[0] for k in runs}, key=int):
        rs = [r for k, r in runs.items() if k.split("/")[0] == n]
        mean = {m: float(np.mean([r[m] for r in rs])) for m in METHODS}
        gain, over_semi = mean[chosen] - mean["CNN from scratch"], mean[chosen] - mean["CNN + pseudo-labels"]
        need = GOALS.get(n)
        out[n] = {
            "chosen": chosen,
            "gain over CNN": gain,
            "gain over pseudo-label CNN": over_semi,
            "goal": need,
            "met": None if need is None else bool(gain >= need and over_semi > 0),
        }
    return out


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


def legend_name(method: str) -> str:
    """The method's name as the figure's legend shows it: whole (``LEGEND_CHARS`` at most), each one apart."""
    short = method.replace("pixlm semi-supervised", "pixlm semi").replace(", mean-pooled head", ", pooled")
    return short.replace("pseudo-labels", "pseudo")


def _figure(summary: dict, path: Path) -> None:
    ns = sorted(summary, key=int)
    if len(ns) < 2:
        return
    x = np.array([int(n) for n in ns], float)
    series, errors = [], []
    for m in METHODS:
        series.append((legend_name(m), x, np.array([summary[n][m][0] for n in ns])))
        errors.append(np.array([summary[n][m][1] for n in ns]))
    low = min((y - e).min() for (_, _, y), e in zip(series, errors, strict=True))
    lo = max(0.0, np.floor(20 * low) / 20)  # from the lowest error bar, in steps of 0.05, up to 1
    img = line_plot(
        series,
        "Fashion-MNIST test accuracy",
        "labels per class",
        "accuracy",
        xlim=(5, 200),
        ylim=(lo, 1.0),
        errors=errors,
        log_x=True,
    )
    write_png(path, img)


def format_table(results: dict) -> str:
    s = results["summary"]
    lines = [
        "| labels per class | " + " | ".join(METHODS) + " | draws |",
        "|---" + "|---:" * (len(METHODS) + 1) + "|",
    ]
    for n in sorted(s, key=int):
        cells = " | ".join(f"{100 * s[n][m][0]:.1f} ± {100 * s[n][m][1]:.1f}" for m in METHODS)
        lines.append(f"| {n} | {cells} | {s[n][METHODS[0]][2]} |")
    for n, g in results.get("goals", {}).items():
        verdict = "no goal" if g["met"] is None else ("met" if g["met"] else "NOT met")
        gain, over_semi = 100 * g["gain over CNN"], 100 * g["gain over pseudo-label CNN"]
        lines.append(
            f"{n} per class: {g['chosen']} (chosen on calibration images) {gain:+.1f} points over the "
            f"CNN, {over_semi:+.1f} over the pseudo-label CNN: goal {verdict}"
        )
    return "\n".join(lines)

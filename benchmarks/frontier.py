"""The accuracy-cost frontier: every ONNX file of the given bundles against a small CNN, one run.

    .venv/bin/python benchmarks/frontier.py build/frontier/default build/frontier/small \
        --threads 2 --json docs/figures/frontier.json --plot docs/figures/frontier.png

(`make frontier` exports the two bundles and runs exactly this.)

What a user would otherwise deploy is a small CNN (``SmallCNN``: two conv blocks, 420K
parameters). This script trains it here (5 epochs of Fashion-MNIST, about 3 minutes), exports it
to ONNX, and times it in the same ONNX Runtime, on the same cores, in the same run as every pixlm
file, so "x CNN" means the same on any machine. ONNX Runtime's own fp32 speed on one 1024^3
MatMul is measured alongside: "% of peak" is a file's FLOP rate at batch 64 against it (for an
INT8 file, the fp32-equivalent FLOPs).

Timings are best-of, interleaved in rounds (each round times every file once per batch size),
so load that comes and goes hits every row alike. Model time only: pixlm's tokenizer (about
0.3 ms per frame on one core) and the CNN's input scaling are left out of both.
Accuracy is the bundle manifest's figure, measured at export on the held-out split
(``pixlm-export``'s accuracy step, the same numbers its gate used); the CNN's is measured here.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from pixlm.data import load_fashion_mnist
from pixlm.export.measure import matmul_peak_gflops, prefill_flops
from pixlm.progress import bar
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.io_spec import with_bos
from pixlm.studies import few_labels
from pixlm.studies.common import write_png
from pixlm.studies.few_labels import SmallCNN

BATCHES = (1, 16, 64)


@dataclass
class Row:
    model: str
    file: str
    accuracy: float  # 0..1
    eval_images: int
    mflop: float  # per image, fp32-equivalent
    ms_b1: float = 0.0  # ms per image at batch 1
    ips_b16: float = 0.0  # images/s at batch 16
    ips_b64: float = 0.0
    peak_pct: float = 0.0  # batch-64 GFLOP/s as % of the MatMul peak
    x_cnn: float = 0.0  # cost per image at batch 16 over the CNN's


def train_cnn(epochs: int, threads: int) -> tuple[SmallCNN, float, float]:
    """The anchor: SmallCNN on all 60,000 training images with +-2 px shifts (as pixlm trains),
    Adam 1e-3, batch 64. Returns the net, its test accuracy and the training seconds."""
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    net = few_labels.train_cnn(
        load_fashion_mnist(split="train"), seed=0, quick=False, epochs=epochs, batch=64
    )
    seconds = time.perf_counter() - t0
    return net, few_labels.cnn_accuracy(net, load_fashion_mnist(split="test")), seconds


def cnn_mflop() -> float:
    """Multiply-add FLOPs of SmallCNN per 28x28 image (2 per MAC), convolutions and dense layers."""
    conv1 = 28 * 28 * 32 * 9
    conv2 = 14 * 14 * 64 * 32 * 9
    dense = 64 * 7 * 7 * 128 + 128 * 10
    return 2 * (conv1 + conv2 + dense) / 1e6


def export_cnn(net: SmallCNN, path: Path) -> None:
    warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, on purpose
    torch.onnx.export(
        net,
        (torch.zeros(1, 1, 28, 28),),
        str(path),
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        dynamo=False,
    )


class Timed:
    """One session and its inputs per batch size; ``time`` keeps the best seconds per image."""

    def __init__(self, run, inputs: dict[int, object]):
        self.run, self.inputs = run, inputs
        self.best = {b: float("inf") for b in inputs}

    def time(self, reps: int = 3) -> None:
        for b, x in self.inputs.items():
            for _ in range(reps):
                t = time.perf_counter()
                self.run(x)
                self.best[b] = min(self.best[b], (time.perf_counter() - t) / b)


def measure(bundles: list[Path], threads: int, rounds: int, cnn_epochs: int) -> dict:
    import onnxruntime as ort

    test = load_fashion_mnist(split="test")
    timed: list[tuple[Row, Timed]] = []
    for root in bundles:
        b = Bundle.load(root)
        tokens = b.tokenizer.encode_prepared(test.images[:64])
        seqs = with_bos(b.tokenizer.bos, tokens)
        mflop = prefill_flops(b.model_config, seqs.shape[1]) / 1e6
        name = root.name
        for key, f in b.files.items():
            if f.format != mf.FORMAT_ONNX:
                continue
            m = b.manifest["metrics"].get(key, {})
            if mf.M_ACCURACY not in m:
                raise SystemExit(f"Error: {root}: file {key} has no accuracy in its manifest")
            engine = OrtEngine(f.path, threads=threads)
            row = Row(name, key, m[mf.M_ACCURACY], m[mf.M_EVAL_IMAGES], mflop)
            timed.append((row, Timed(engine.prefill, {n: seqs[:n] for n in BATCHES})))

    net, cnn_acc, cnn_seconds = train_cnn(cnn_epochs, threads)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "cnn.onnx"
        export_cnn(net, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    images = test.images[:64, None].astype(np.float32) / 255
    cnn = Row("CNN anchor", "fp32", cnn_acc, len(test), cnn_mflop())
    timed.append((cnn, Timed(lambda x: session.run(None, {"image": x}), {n: images[:n] for n in BATCHES})))

    peaks = []
    with bar(desc="timing rounds", total=rounds, unit="round") as progress:
        for _ in range(rounds):
            for _, t in timed:
                t.time()
            peaks.append(matmul_peak_gflops(threads, budget_s=0.3))
            progress.update()
    peak = max(peaks)
    cnn_s16 = timed[-1][1].best[16]
    for row, t in timed:
        row.ms_b1 = 1000 * t.best[1]
        row.ips_b16, row.ips_b64 = 1 / t.best[16], 1 / t.best[64]
        row.peak_pct = 100 * row.mflop * 1e6 * row.ips_b64 / (peak * 1e9)
        row.x_cnn = t.best[16] / cnn_s16
    return {
        "threads": threads,
        "rounds": rounds,
        "matmul_peak_gflops": peak,
        "cnn_epochs": cnn_epochs,
        "cnn_train_seconds": cnn_seconds,
        "rows": [asdict(r) for r, _ in timed],
    }


def table(result: dict) -> str:
    lines = [
        f"ONNX Runtime {result['threads']} threads, best of {result['rounds']} interleaved rounds; "
        f"ORT 1024³ fp32 MatMul peak {result['matmul_peak_gflops']:.0f} GFLOP/s in the same run; "
        f"CNN anchor trained here for {result['cnn_epochs']} epochs ({result['cnn_train_seconds']:.0f} s).",
        "",
        "| model | file | accuracy | MFLOP/img | ms/img batch 1 | img/s batch 16 | img/s batch 64 "
        "| % of MatMul peak (b64) | cost × CNN (b16) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['model']} | {r['file']} | {100 * r['accuracy']:.2f}% | {r['mflop']:.1f} | "
            f"{r['ms_b1']:.3f} | "
            f"{r['ips_b16']:,.0f} | {r['ips_b64']:,.0f} | {r['peak_pct']:.0f}% | {r['x_cnn']:.1f}× |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path, goal: tuple[float, float] = (15.0, 90.0)) -> None:
    """Accuracy against cost (x CNN at batch 16, log scale), one dot per file; the goal's corner shaded."""
    w, h, left, right, top, bottom = 720, 460, 56, 16, 30, 46
    rows = result["rows"]
    xs = [r["x_cnn"] for r in rows]
    xlim = (0.5 if min(xs) >= 0.6 else min(xs) / 2, 10 ** np.ceil(np.log10(max(xs) * 1.25)))
    accs = [100 * r["accuracy"] for r in rows]
    ylim = (np.floor(min(accs + [goal[1]]) - 1), np.ceil(max(accs + [goal[1]]) + 1))
    img = np.full((h, w, 3), 255, np.uint8)
    font, black = cv2.FONT_HERSHEY_SIMPLEX, (0, 0, 0)

    def px(x: float, y: float) -> tuple[int, int]:
        u = left + (np.log10(x) - np.log10(xlim[0])) / np.log10(xlim[1] / xlim[0]) * (w - left - right)
        v = h - bottom - (y - ylim[0]) / (ylim[1] - ylim[0]) * (h - top - bottom)
        return int(round(u)), int(round(v))

    cv2.rectangle(img, px(xlim[0], goal[1]), px(min(goal[0], xlim[1]), ylim[1]), (220, 240, 220), -1)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), black, 1)
    for t in np.arange(ylim[0], ylim[1] + 0.01, 1.0 if ylim[1] - ylim[0] <= 12 else 2.0):
        u, v = px(xlim[0], t)
        cv2.line(img, (left, v), (w - right, v), (235, 235, 235), 1)
        cv2.putText(img, f"{t:g}", (left - 30, v + 4), font, 0.38, black, 1, cv2.LINE_AA)
    decade = xlim[0]
    while decade <= xlim[1]:
        for m in range(1, 10):
            x = decade * m
            if xlim[0] <= x <= xlim[1]:
                u, v = px(x, ylim[0])
                cv2.line(img, (u, top), (u, v), (235, 235, 235) if m > 1 else (200, 200, 200), 1)
                if m in (1, 2, 5):
                    cv2.putText(img, f"{x:g}x", (u - 10, v + 16), font, 0.38, black, 1, cv2.LINE_AA)
        decade *= 10
    gx, gy = px(min(goal[0], xlim[1]), goal[1])
    cv2.putText(
        img,
        f"goal: >={goal[1]:g}% at <={goal[0]:g}x",
        (gx - 200, gy - 6),
        font,
        0.4,
        (40, 120, 40),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        "cost per image at batch 16, x the CNN's (same run, same cores)",
        (left + 60, h - 12),
        font,
        0.42,
        black,
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        img,
        "Fashion-MNIST test accuracy (%)   -   pixlm files against a small CNN",
        (left, top - 10),
        font,
        0.45,
        black,
        1,
        cv2.LINE_AA,
    )
    models = list(dict.fromkeys(r["model"] for r in rows))
    palette = [(40, 40, 200), (200, 100, 30), (30, 150, 30), (0, 140, 220), (150, 40, 150)]
    colour_of = {m: black if m == "CNN anchor" else palette[i % len(palette)] for i, m in enumerate(models)}
    seen: dict[str, int] = {}
    for r, acc in zip(rows, accs, strict=True):
        colour = colour_of[r["model"]]
        u, v = px(r["x_cnn"], acc)
        cv2.circle(img, (u, v), 5, colour, -1, cv2.LINE_AA)
        k = seen[r["model"]] = seen.get(r["model"], -1) + 1  # stagger the labels of one model's files
        (tw, _), _ = cv2.getTextSize(r["file"], font, 0.36, 1)
        x, y = [(u + 7, v - 6), (u + 7, v + 16), (u - 7 - tw, v + 16)][k % 3]  # above, below, below-left
        cv2.putText(img, r["file"], (x, y), font, 0.36, colour, 1, cv2.LINE_AA)
    for i, m in enumerate(models):
        y = h - bottom - 12 - 16 * (len(models) - 1 - i)
        cv2.circle(img, (w - right - 220, y - 4), 5, colour_of[m], -1, cv2.LINE_AA)
        cv2.putText(img, m[:28], (w - right - 210, y), font, 0.4, black, 1, cv2.LINE_AA)
    write_png(path, img)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundles", nargs="+", type=Path, help="bundle folders from pixlm-export")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (and torch's)")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds")
    ap.add_argument("--cnn-epochs", type=int, default=5)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--plot", type=Path, help="write the accuracy-cost PNG here")
    a = ap.parse_args()
    for root in a.bundles:
        if not (root / "manifest.json").is_file():
            raise SystemExit(
                f"Error: {root}: not a bundle folder (no manifest.json); build it with pixlm-export"
            )
    result = measure(a.bundles, a.threads, a.rounds, a.cnn_epochs)
    print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    if a.plot:
        plot(result, a.plot)


if __name__ == "__main__":
    main()

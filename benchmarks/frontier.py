"""The accuracy-cost frontier: every ONNX file of the given bundles against a converged small CNN.

    .venv/bin/python benchmarks/frontier.py build/frontier/fashion-mnist build/frontier/fashion-mnist-small \
        --cnn build/frontier/cnn-anchor.pt --threads 2 --json docs/figures/frontier.json \
        --plot docs/figures/frontier.png

(`make frontier` exports the two bundles and runs exactly this.)

What a user would otherwise deploy is a small CNN (``SmallCNN``: two conv blocks, 420K
parameters). The anchor is trained to convergence as pixlm is: Fashion-MNIST training images
0-54,999 with +-2 px shifts, Adam with a cosine schedule over ``--cnn-epochs`` epochs, the epoch
kept the one most accurate on images 55,000-59,999 (split calib); ``--cnn FILE`` keeps it
between runs (trained when FILE is missing). Its files: fp32, the dynamic INT8 call pixlm's
exporter uses (int8-dynamic: weight MatMuls) and the same with its convolutions quantized too
(int8-dynamic-conv). Its "best" file is the fastest end to end at batch 16 within 0.5 points of
its fp32 accuracy on split calib (as the exporter gates INT8); "x CNN" divides by that file's time.

Every accuracy here is measured in this run on all 10,000 test images, which nothing in either
model's training or selection saw. Two kinds of time per file:

* engine: the ONNX session alone (pixlm: ``engine.prefill`` on tokens; CNN: ``session.run``);
* end to end: uint8 images in, labels out. pixlm: ``Recognizer.predict_batch`` (tokenizer,
  engine, post-processing and the open-set gate); CNN: resize, scaling to [0, 1], the session
  and a softmax. Inputs are the 28x28 test images themselves, so no resize hides a difference.

Timings are best-of, interleaved in rounds (each round times every file once per batch size),
so load that comes and goes hits every row alike. ONNX Runtime's own fp32 speed on one 1024^3
MatMul is measured alongside: "% of peak" is a file's engine FLOP rate at batch 64 against it
(for an INT8 file, the fp32-equivalent FLOPs). Cameras per box: how many 10 fps cameras with a
2x2 grid of regions one box keeps up with, from the end-to-end time at batch 16 plus decoding
one vtest.avi frame (768x576) per camera frame, measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from pixlm.data import load_fashion_mnist
from pixlm.export.measure import matmul_peak_gflops, prefill_flops
from pixlm.export.quantize import quantize_dynamic_int8
from pixlm.progress import bar
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle
from pixlm.runtime.io_spec import with_bos
from pixlm.runtime.recognizer import Recognizer
from pixlm.studies import few_labels
from pixlm.studies.common import write_png
from pixlm.studies.few_labels import SmallCNN

BATCHES = (1, 16, 64)
CNN = "CNN anchor"
CAMERA_FPS, REGIONS_PER_FRAME = 10, 4  # a 2x2 grid
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


@dataclass
class Row:
    model: str
    file: str
    accuracy: float  # 0..1, all test images, measured in this run
    mflop: float  # per image, fp32-equivalent
    engine_s: dict = field(default_factory=dict)  # batch -> best seconds per image, session only
    e2e_s: dict = field(default_factory=dict)  # batch -> best seconds per image, uint8 in, label out
    peak_pct: float = 0.0  # engine GFLOP/s at batch 64 as % of the MatMul peak
    x_cnn_b1: float = 0.0  # end-to-end cost per image over the CNN's best file, batch 1
    x_cnn_b16: float = 0.0  # the same at batch 16
    cameras: float = 0.0  # 10 fps 2x2-grid cameras one box serves (end to end at batch 16 + decode)
    calib_accuracy: float | None = None  # CNN files: on split calib, where the best file is chosen


# -- the anchor ----------------------------------------------------------------------------------
RECIPE = {  # what makes an anchor file this script's anchor; a file made otherwise is retrained
    "schedule": "Adam 1e-3, cosine to 0, batch 64, +-2 px shifts, seed 0",
    "trained_on": "training images 0-54,999",
    "chosen_on": "training images 55,000-59,999 (split calib), the best epoch",
    "parameters": sum(p.numel() for p in SmallCNN().parameters()),
}


def anchor(path: Path | None, epochs: int, threads: int) -> tuple[SmallCNN, dict]:
    """The converged CNN, loaded from ``path`` when it holds one made by ``RECIPE`` with the same
    ``epochs``, else trained and saved there. -> (net, {"epochs", "chosen_epoch", "calib_curve", ...})."""
    if path and path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            meta = saved["meta"]
            if meta["epochs"] == epochs and meta["recipe"] == RECIPE:
                net = SmallCNN()
                net.load_state_dict(saved["state"])
                return net.eval(), meta
            print(f"{path}: made another way (epochs or recipe); training the anchor again")
        except Exception as e:  # a cut, old or foreign file
            print(f"{path}: not an anchor this script can use ({type(e).__name__}); training it again")
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    fit, calib = load_fashion_mnist(split="fit"), load_fashion_mnist(split="calib")
    net = few_labels.train_cnn(fit, seed=0, quick=False, epochs=epochs, batch=64, calib=calib, cosine=True)
    meta = {
        "epochs": epochs,
        "recipe": RECIPE,
        "chosen_epoch": net.chosen["epoch"],
        "calib_accuracy": net.chosen["accuracy"],
        "calib_curve": [round(a, 4) for a in net.curve],
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"state": net.state_dict(), "meta": meta}, path)
    return net, meta


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


def cnn_files(net: SmallCNN, folder: Path) -> dict[str, Path]:
    """fp32, pixlm's own dynamic INT8 call, and dynamic INT8 of the convolutions as well."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    files = {"fp32": folder / "cnn.onnx", "int8-dynamic": folder / "cnn-int8-dynamic.onnx"}
    export_cnn(net, files["fp32"])
    quantize_dynamic_int8(files["fp32"], files["int8-dynamic"])
    files["int8-dynamic-conv"] = folder / "cnn-int8-dynamic-conv.onnx"
    quantize_dynamic(
        files["fp32"],
        files["int8-dynamic-conv"],
        weight_type=QuantType.QInt8,
        per_channel=True,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
    )
    return files


class CnnPipeline:
    """The CNN a user deploys: uint8 images in, labels out (resize, scale, session, softmax)."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def engine(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {"image": x})[0]

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        x = np.stack(
            [
                im if im.shape == (28, 28) else cv2.resize(im, (28, 28), interpolation=cv2.INTER_AREA)
                for im in images
            ]
        )
        logits = self.engine(x[:, None].astype(np.float32) / 255)
        p = np.exp(logits - logits.max(1, keepdims=True))
        return (p / p.sum(1, keepdims=True)).argmax(1)


# -- timing -------------------------------------------------------------------------------------
class Timed:
    """Calls per batch size; ``time`` keeps the best seconds per image of each."""

    def __init__(self, run: Callable, inputs: dict[int, object]):
        self.run, self.inputs = run, inputs
        self.best = {b: float("inf") for b in inputs}

    def time(self, reps: int = 3) -> None:
        for b, x in self.inputs.items():
            for _ in range(reps):
                t = time.perf_counter()
                self.run(x)
                self.best[b] = min(self.best[b], (time.perf_counter() - t) / b)


def decode_seconds(frames: int = 100) -> float:
    """Mean seconds to decode one vtest.avi frame (768x576), over its first ``frames`` frames."""
    cap = cv2.VideoCapture(str(VTEST))
    t, n = time.perf_counter(), 0
    while n < frames and cap.read()[0]:
        n += 1
    seconds = time.perf_counter() - t
    cap.release()
    if n == 0:
        raise SystemExit(f"Error: cannot decode {VTEST} (Debian package opencv-doc) for the cameras column")
    return seconds / n


def measure(bundles: list[Path], threads: int, rounds: int, cnn_path: Path | None, cnn_epochs: int) -> dict:
    test = load_fashion_mnist(split="test")
    images = list(test.images)  # uint8 28x28, the images every accuracy is measured on
    timed: list[tuple[Row, Timed, Timed]] = []
    for root in bar(bundles, "pixlm files", unit="bundle"):
        b = Bundle.load(root)
        seqs = with_bos(b.tokenizer.bos, b.tokenizer.encode_prepared(test.images[:64]))
        mflop = prefill_flops(b.model_config, seqs.shape[1]) / 1e6
        for key, f in b.files.items():
            if f.format != mf.FORMAT_ONNX:
                continue
            rec = Recognizer.open(b, backend="ort-cpu", precision=key, threads=threads)
            closed = Recognizer(
                b, rec.engine, rec.backend, key, unknown=False
            )  # accuracy: every image labelled
            right = sum(
                r.label == b.labels[y]
                for i in range(0, len(images), 250)
                for r, y in zip(
                    closed.predict_batch(images[i : i + 250]), test.labels[i : i + 250], strict=True
                )
            )
            row = Row(root.name, key, right / len(images), mflop)
            engine = Timed(rec.engine.prefill, {n: seqs[:n] for n in BATCHES})
            e2e = Timed(rec.predict_batch, {n: images[:n] for n in BATCHES})
            timed.append((row, engine, e2e))

    net, meta = anchor(cnn_path, cnn_epochs, threads)
    calib = load_fashion_mnist(split="calib")

    def accuracy(pipe: CnnPipeline, data) -> float:
        pred = np.concatenate([pipe(list(data.images[i : i + 1000])) for i in range(0, len(data), 1000)])
        return float((pred == data.labels).mean())

    with tempfile.TemporaryDirectory() as tmp:
        for key, path in cnn_files(net, Path(tmp)).items():
            pipe = CnnPipeline(path, threads)
            row = Row(CNN, key, accuracy(pipe, test), cnn_mflop(), calib_accuracy=accuracy(pipe, calib))
            x = test.images[:64, None].astype(np.float32) / 255
            timed.append(
                (
                    row,
                    Timed(pipe.engine, {n: x[:n] for n in BATCHES}),
                    Timed(pipe, {n: images[:n] for n in BATCHES}),
                )
            )

    peaks, decode = [], []
    with bar(desc="timing rounds", total=rounds, unit="round") as progress:
        for _ in range(rounds):
            for _, engine, e2e in timed:
                engine.time()
                e2e.time()
            peaks.append(matmul_peak_gflops(threads, budget_s=0.3))
            decode.append(decode_seconds())
            progress.update()
    peak, decode_s = max(peaks), min(decode)  # the quietest round's mean decode
    for row, engine, e2e in timed:
        row.engine_s, row.e2e_s = dict(engine.best), dict(e2e.best)
        row.peak_pct = 100 * row.mflop * 1e6 / engine.best[64] / (peak * 1e9)
        per_frame = decode_s + REGIONS_PER_FRAME * e2e.best[16]
        row.cameras = 1 / (CAMERA_FPS * per_frame)
    best = best_cnn_file([r for r, _, _ in timed if r.model == CNN])
    for row, _, _ in timed:
        row.x_cnn_b1 = row.e2e_s[1] / best.e2e_s[1]
        row.x_cnn_b16 = row.e2e_s[16] / best.e2e_s[16]
    return {
        "threads": threads,
        "rounds": rounds,
        "matmul_peak_gflops": peak,
        "decode_ms": 1e3 * decode_s,
        "cnn": {**meta, "best_file": best.file},
        "test_images": len(images),
        "rows": [asdict(r) for r, _, _ in timed],
    }


def best_cnn_file(rows: list[Row], max_drop: float = 0.005) -> Row:
    """The CNN file a user would ship: fastest end to end at batch 16 within ``max_drop`` of fp32
    on the calibration split (as pixlm's exporter gates INT8: never on the test images)."""
    fp32 = next(r for r in rows if r.file == "fp32")
    ok = [r for r in rows if r.calib_accuracy >= fp32.calib_accuracy - max_drop]
    return min(ok, key=lambda r: r.e2e_s[16])


def table(result: dict) -> str:
    cnn = result["cnn"]
    lines = [
        f"ONNX Runtime {result['threads']} threads, best of {result['rounds']} interleaved rounds; "
        f"ORT 1024³ fp32 MatMul peak {result['matmul_peak_gflops']:.0f} GFLOP/s in the same run. "
        f"Accuracy on all {result['test_images']:,} test images. CNN anchor: {cnn['epochs']} epochs "
        f"({cnn['recipe']['schedule']}), epoch {cnn['chosen_epoch']} kept on split calib "
        f"({100 * cnn['calib_accuracy']:.2f}% there); its best file: {cnn['best_file']}. "
        f"Cameras: 10 fps, 2x2 grid, {result['decode_ms']:.2f} ms to decode a frame.",
        "",
        "| model | file | accuracy | MFLOP/img | ms/img b1 engine / e2e | img/s b16 engine / e2e "
        "| img/s b64 engine / e2e | % of MatMul peak (b64) | × CNN best e2e b1 / b16 | cameras |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        eng, e2e = ({int(k): v for k, v in r[f].items()} for f in ("engine_s", "e2e_s"))
        lines.append(
            f"| {r['model']} | {r['file']} | {100 * r['accuracy']:.2f}% | {r['mflop']:.1f} | "
            f"{1e3 * eng[1]:.3f} / {1e3 * e2e[1]:.3f} | {1 / eng[16]:,.0f} / {1 / e2e[16]:,.0f} | "
            f"{1 / eng[64]:,.0f} / {1 / e2e[64]:,.0f} | {r['peak_pct']:.0f}% | "
            f"{r['x_cnn_b1']:.1f}× / {r['x_cnn_b16']:.1f}× | {r['cameras']:.1f} |"
        )
    return "\n".join(lines)


def plot(result: dict, path: Path, goal: tuple[float, float] = (10.0, 90.5)) -> None:
    """Accuracy against cost (x CNN at batch 16, log scale), one dot per file; the goal's corner shaded."""
    w, h, left, right, top, bottom = 720, 460, 56, 16, 30, 46
    rows = result["rows"]
    xs = [r["x_cnn_b16"] for r in rows]
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
        "end-to-end cost per image at batch 16, x the CNN's best file (same run, same cores)",
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
    colour_of = {m: black if m == CNN else palette[i % len(palette)] for i, m in enumerate(models)}
    seen: dict[str, int] = {}
    for r, acc in zip(rows, accs, strict=True):
        colour = colour_of[r["model"]]
        u, v = px(r["x_cnn_b16"], acc)
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
    ap.add_argument(
        "bundles", nargs="*", type=Path, help="bundle folders from pixlm-export (none: train the anchor)"
    )
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (and torch's)")
    ap.add_argument("--rounds", type=int, default=20, help="interleaved timing rounds")
    ap.add_argument("--cnn", type=Path, help="the trained anchor: loaded if there, else trained and saved")
    ap.add_argument("--cnn-epochs", type=int, default=60)
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--plot", type=Path, help="write the accuracy-cost PNG here")
    a = ap.parse_args()
    for root in a.bundles:
        if not (root / "manifest.json").is_file():
            raise SystemExit(
                f"Error: {root}: not a bundle folder (no manifest.json); build it with pixlm-export"
            )
    if not a.bundles:
        _, meta = anchor(a.cnn, a.cnn_epochs, a.threads)
        print(json.dumps(meta, indent=1))
        return
    result = measure(a.bundles, a.threads, a.rounds, a.cnn, a.cnn_epochs)
    print(table(result))
    if a.json:
        a.json.write_text(json.dumps(result, indent=1) + "\n")
    if a.plot:
        plot(result, a.plot)


if __name__ == "__main__":
    main()

"""Speed of every ONNX file in a bundle on this CPU, through the runtime's OrtEngine (no torch).

    .venv/bin/python benchmarks/export_bench.py build/default --threads 1 2

Per file and thread count: recognition of one frame (prefill of BOS + all image tokens) at
batch 1, frames/s at batch 16, and one decode step (one token with the rest cached, the
completion / prefix-reuse path). Inputs are real Fashion-MNIST test images tokenized by the
bundle's own tokenizer. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pixlm.data import load_fashion_mnist
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle
from pixlm.runtime.engine import OrtEngine


def median_ms(fn, seconds: float) -> float:
    fn()
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    a = ap.parse_args()
    b = Bundle.load(a.bundle)
    tok = b.tokenizer
    tokens = tok.encode_prepared(load_fashion_mnist(split="test").images[:16])
    seqs = np.concatenate([np.full((16, 1), tok.bos, dtype=np.int64), tokens], axis=1)
    print("| file | MB | threads | ms/frame batch 1 | frames/s batch 16 | ms/decode step (batch 1) |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, f in b.files.items():
        if f.format != mf.FORMAT_ONNX:
            continue
        for threads in a.threads:
            e = OrtEngine(f.path, threads=threads)
            ms1 = median_ms(lambda e=e: e.prefill(seqs[:1]), a.seconds)
            fps16 = 16000 / median_ms(lambda e=e: e.prefill(seqs), a.seconds)
            _, past = e.prefill(seqs[:1, :-1])
            step = median_ms(lambda e=e, past=past: e.run(seqs[:1, -1:], past), a.seconds)
            mb = f.path.stat().st_size / 1e6
            print(f"| {key} | {mb:.2f} | {threads} | {ms1:.3f} | {fps16:,.0f} | {step:.3f} |")


if __name__ == "__main__":
    main()

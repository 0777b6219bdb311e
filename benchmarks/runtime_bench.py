"""Runtime benchmarks on real video: end-to-end vs engine-only, prefix reuse, memory over time.

    .venv/bin/python benchmarks/runtime_bench.py [BUNDLE] [--frames 20000] [--threads 2]

1. engine only: the regions of vtest.avi (2x2 grid) tokenized beforehand, fed to the engine in
   batches of 16: regions/s. End to end: the same video through ``Streamer`` (decode, crop,
   tokenize, batch, infer, results), prefix reuse off, same batch: regions/s, and the ratio.
2. prefix reuse: the same stream with reuse on: hit rate, tokens saved, speed-up, and the largest
   difference from a full recompute (must be ~0 for fp32 / QDQ; dynamic INT8 quantizes
   activations per call, so it is only close).
3. memory: resident set size while streaming ``--frames`` frames (the clip replayed).
All numbers come from one run on one machine; compare ratios, not absolute values.
"""

from __future__ import annotations

import argparse
import resource
import time

import cv2
import numpy as np

from pixlm.runtime.recognizer import Recognizer, default_bundle_dir
from pixlm.runtime.stream import Streamer, grid_regions

VTEST = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def stream_rate(rec: Recognizer, frames: int, **kw) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    with Streamer(rec, [VTEST], grid=(2, 2), max_frames=frames, **kw) as s:
        for _ in s:
            n += 1
    return 4 * n / (time.perf_counter() - t0), n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle", nargs="?", default=str(default_bundle_dir()))
    ap.add_argument("--precision", default=None)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--frames", type=int, default=20000)
    a = ap.parse_args()
    cv2.setNumThreads(1)
    rec = Recognizer.open(a.bundle, "ort-cpu", a.precision, threads=a.threads)
    print(f"bundle {a.bundle} file {rec.file_key}, ONNX Runtime threads {a.threads}, batch {a.batch}")

    cap = cv2.VideoCapture(VTEST)
    frames = []
    while len(frames) < 400:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    regions = grid_regions(frames[0].shape[1], frames[0].shape[0], 2, 2)
    tokens = rec.tokenizer.encode_batch([r.crop(f) for f in frames for r in regions])
    rec.predict_tokens(tokens[: a.batch])  # warm up
    t0 = time.perf_counter()
    for i in range(0, len(tokens), a.batch):
        rec.predict_tokens(tokens[i : i + a.batch])
    engine = len(tokens) / (time.perf_counter() - t0)
    e2e, _ = stream_rate(rec, len(frames), max_batch=a.batch, prefix_reuse=False)
    print("\n| measure | regions/s |\n|---|---:|")
    print(f"| engine only (pre-tokenized, batch {a.batch}) | {engine:,.0f} |")
    print(f"| end to end, `Streamer` on vtest.avi 2x2, reuse off | {e2e:,.0f} |")
    print(f"| ratio end-to-end / engine-only | {e2e / engine:.2f} |")

    before = dict(rec.stats)
    reuse, _ = stream_rate(rec, len(frames), max_batch=a.batch, prefix_reuse=True)
    st = {k: rec.stats[k] - before[k] for k in before}
    memory = [None] * len(regions)
    worst = 0.0
    for f in frames[:100]:
        tok = rec.tokenizer.encode_batch([r.crop(f) for r in regions])
        full, fast = rec.predict_tokens(tok, True), rec.predict_tokens_reusing(tok, memory, True)
        worst = max(worst, max(abs(x.score - y.score) for x, y in zip(full, fast, strict=True)))
        worst = max(
            worst, max(float(np.abs(x.nll_map - y.nll_map).max()) for x, y in zip(full, fast, strict=True))
        )
    print(f"| end to end with prefix reuse | {reuse:,.0f} |")
    print(f"| prefix reuse speed-up | {reuse / e2e:.2f}x |")
    hit = st["reuse_hits"] / st["frames"]
    print(f"| prefix reuse hit rate (regions reusing >= 1 cached token) | {hit:.1%} |")
    print(f"| tokens whose KV came from the cache | {st['tokens_saved'] / st['tokens_total']:.1%} |")
    print(f"| max abs difference reuse vs full recompute (score, bits) | {worst:.1e} |")

    print(f"\nmemory over {a.frames:,} frames (vtest.avi replayed, 2x2 grid, prefix reuse on):")
    loops = a.frames // 795 + 1
    samples = []
    n, t0 = 0, time.perf_counter()
    with Streamer(rec, [VTEST], grid=(2, 2), max_frames=a.frames, loop=loops, max_batch=a.batch) as s:
        for _ in s:
            n += 1
            if n in (1000, a.frames // 4, a.frames // 2, 3 * a.frames // 4, a.frames):
                samples.append((n, rss_mb()))
    dt = time.perf_counter() - t0
    print("| frames | RSS MB |\n|---:|---:|")
    for k, m in samples:
        print(f"| {k:,} | {m:.1f} |")
    print(
        f"growth after frame 1,000: {samples[-1][1] - samples[0][1]:+.1f} MB; {n:,} frames in {dt:.0f} s "
        f"({n / dt:.0f} frames/s)"
    )


if __name__ == "__main__":
    main()

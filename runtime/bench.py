"""`pixlm bench`: runtime benchmarks on real video: end-to-end vs engine-only, prefix reuse, memory.

    pixlm bench [--bundle DIR] [--frames 20000] [--threads 2] [--batch 16]

1. engine only: the regions of vtest.avi (2x2 grid) tokenized beforehand, fed to the engine in
   batches of 16: regions/s, and the open-set gate's share of it (µs per region). End to end:
   the same video through ``Streamer`` (decode, crop,
   tokenize, batch, infer, results), prefix reuse off, same batch: regions/s, and the ratio.
2. prefix reuse: the same stream with reuse on: hit rate, tokens saved, speed-up, and the largest
   difference from a full recompute (must be ~0 for fp32 / QDQ; dynamic INT8 quantizes
   activations per call, so it is only close).
3. memory: resident set size while streaming ``--frames`` frames (the clip replayed).
All numbers come from one run on one machine; compare ratios, not absolute values.
"""

from __future__ import annotations

import resource
import time

import click
import cv2
import numpy as np

from pixlm.runtime.recognizer import Recognizer
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


def gate_seconds(rec: Recognizer, tokens: np.ndarray) -> float:
    """Time the open-set gate alone (PNG of the tokens' image, features, distance) on ``tokens``."""
    nll = np.random.default_rng(0).exponential(2.0, tokens.shape)  # stand-ins: the cost is shape-bound
    probs = np.full((len(tokens), len(rec.labels)), 1.0 / len(rec.labels))
    t0 = time.perf_counter()
    rec.ood_scores(tokens, nll, probs)
    return time.perf_counter() - t0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--bundle", type=click.Path(file_okay=False), default=None, help="Bundle [default: the default one]."
)
@click.option("--precision", default="fp32", show_default=True, help="Bundle file to run.")
@click.option("--threads", type=int, default=2, show_default=True, help="ONNX Runtime intra-op threads.")
@click.option("--batch", type=int, default=16, show_default=True, help="Regions per engine call.")
@click.option("--frames", type=int, default=20000, show_default=True, help="Frames for the memory run.")
def bench(bundle, precision, threads, batch, frames) -> None:
    """Measure the runtime on vtest.avi (Debian's opencv-doc): end-to-end vs engine-only
    throughput, KV prefix reuse, and resident memory over FRAMES frames. Prints Markdown tables."""
    from pixlm.runtime.cli import ensure_default_bundle

    bundle = bundle or ensure_default_bundle()
    cv2.setNumThreads(1)
    try:
        rec = Recognizer.open(bundle, "ort-cpu", precision, threads=threads)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    print(f"bundle {bundle} file {rec.file_key}, ONNX Runtime threads {threads}, batch {batch}")

    cap = cv2.VideoCapture(VTEST)
    clip = []
    while len(clip) < 400:
        ok, f = cap.read()
        if not ok:
            break
        clip.append(f)
    regions = grid_regions(clip[0].shape[1], clip[0].shape[0], 2, 2)
    tokens = rec.tokenizer.encode_batch([r.crop(f) for f in clip for r in regions])
    rec.predict_tokens(tokens[:batch])  # warm up
    t0 = time.perf_counter()
    for i in range(0, len(tokens), batch):
        rec.predict_tokens(tokens[i : i + batch])
    engine = len(tokens) / (time.perf_counter() - t0)
    e2e, _ = stream_rate(rec, len(clip), max_batch=batch, prefix_reuse=False)
    print("\n| measure | regions/s |\n|---|---:|")
    print(f"| engine only (pre-tokenized, batch {batch}) | {engine:,.0f} |")
    if rec.gate is not None:  # its share is inside the engine-only figure; shown on its own here
        us = 1e6 * gate_seconds(rec, tokens) / len(tokens)
        print(f"| of which the open-set gate ('unknown'): {us:.0f} µs per region | {1e6 / us:,.0f} |")
    print(f"| end to end, `Streamer` on vtest.avi 2x2, reuse off | {e2e:,.0f} |")
    print(f"| ratio end-to-end / engine-only | {e2e / engine:.2f} |")

    before = dict(rec.stats)
    reuse, _ = stream_rate(rec, len(clip), max_batch=batch, prefix_reuse=True)
    st = {k: rec.stats[k] - before[k] for k in before}
    memory = [None] * len(regions)
    worst = 0.0
    for f in clip[:100]:
        tok = rec.tokenizer.encode_batch([r.crop(f) for r in regions])
        full, fast = rec.predict_tokens(tok, True), rec.predict_tokens_reusing(tok, memory, True)
        worst = max(worst, max(abs(x.score - y.score) for x, y in zip(full, fast, strict=True)))
        worst = max(
            worst, max(float(np.abs(x.nll_map - y.nll_map).max()) for x, y in zip(full, fast, strict=True))
        )
    live_full, _ = stream_rate(rec, len(clip), max_batch=len(regions), prefix_reuse=False)
    live_reuse, _ = stream_rate(rec, len(clip), max_batch=len(regions), prefix_reuse=True)
    print(f"| end to end with prefix reuse, batch {batch} | {reuse:,.0f} |")
    print(f"| prefix reuse speed-up, batch {batch} (file: 4 frames per batch) | {reuse / e2e:.2f}x |")
    print(f"| one frame per call (live camera), reuse off / on | {live_full:,.0f} / {live_reuse:,.0f} |")
    print(f"| prefix reuse speed-up, one frame per call | {live_reuse / live_full:.2f}x |")
    hit = st["reuse_hits"] / st["frames"]
    print(f"| prefix reuse hit rate (regions reusing >= 1 cached token) | {hit:.1%} |")
    print(f"| tokens whose KV came from the cache | {st['tokens_saved'] / st['tokens_total']:.1%} |")
    print(f"| max abs difference reuse vs full recompute (score, bits) | {worst:.1e} |")

    print(f"\nmemory over {frames:,} frames (vtest.avi replayed, 2x2 grid, prefix reuse on):")
    del clip, tokens  # 400 decoded frames: keep them out of the memory figures
    loops = frames // 795 + 1
    marks = sorted({min(1000, frames), frames // 4, frames // 2, 3 * frames // 4, frames})
    samples = []
    n, t0 = 0, time.perf_counter()
    with Streamer(rec, [VTEST], grid=(2, 2), max_frames=frames, loop=loops, max_batch=batch) as s:
        for _ in s:
            n += 1
            if n in marks:
                samples.append((n, rss_mb()))
    dt = time.perf_counter() - t0
    print("| frames | RSS MB |\n|---:|---:|")
    for k, m in samples:
        print(f"| {k:,} | {m:.1f} |")
    print(
        f"growth from frame {min(1000, frames):,} to {n:,}: {samples[-1][1] - samples[0][1]:+.1f} MB; "
        f"{n:,} frames in {dt:.0f} s "
        f"({n / dt:.0f} frames/s)"
    )

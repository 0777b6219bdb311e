"""`pixlm bench`: runtime benchmarks on real video: end-to-end vs engine-only, prefix reuse, memory.

    pixlm bench [--bundle DIR] [--frames 20000] [--threads 2] [--batch 16] [--repeats 3]

1. engine only: the regions of vtest.avi (2x2 grid) tokenized beforehand, fed to the engine in
   batches of 16: regions/s, and the open-set gate's share of it (µs per region). End to end:
   the same video through ``Streamer`` (decode, crop, tokenize, batch, infer, results), prefix
   reuse off, same batch: regions/s, and the ratio.
2. where prefix reuse pays: per region and per engine call, the share of tokens a cached prefix
   covers, what one call from the smallest first change kept (the old plan) and what the policy
   keeps; the measured cost of a call, of a position and of gathering the cache.
3. prefix reuse on vs off, end to end, on vtest.avi (people walking) and on a static scene, at
   ``--batch`` regions per call and at one frame per call (a live camera): interleaved runs, the
   best of ``--repeats`` each, and the ratio; the largest difference from a full recompute.
4. memory: ``pixlm run vtest.avi --grid 2x2 -q`` over ``--frames`` frames in a child process:
   its peak resident set size minus the floor of a process that only imports numpy, OpenCV and
   ONNX Runtime (measured in the same run), and its RSS over time (flat or growing).

The static scene (``write_static_clip``) is vtest.avi's background, the per-pixel median of 25 frames
spread over the clip (people walk, so none stays), with Gaussian sensor noise (sigma 2 grey levels)
added to every frame and written as MPEG-4 Part 2 (vtest.avi's own codec family): like a real
camera, the encoder keeps static blocks and the noise mostly flickers where it refreshes them. Raw
noisy frames would not be a static camera: the tokenizer's point sampling turns sigma 1 of noise
into a changed token within the first 20 of 196 on most frames.
All numbers come from one run on one machine; compare ratios, not absolute values.
"""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import click
import cv2
import numpy as np

from pixlm.runtime.defaults import VTEST
from pixlm.runtime.io_spec import with_bos
from pixlm.runtime.prefix_reuse import ReusePolicy
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.stats import ReuseStats
from pixlm.runtime.stream import Streamer, grid_regions

LIBRARIES = "import numpy, cv2, onnxruntime"  # the floor: what any pixlm runtime process loads


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def clip_tokens(rec: Recognizer, path: str, frames: int) -> np.ndarray:
    """The first ``frames`` frames of a video in a 2x2 grid, tokenized: (frames, 4, n). Frames are
    not kept: 400 decoded frames of vtest.avi are 530 MB, more than the runtime itself."""
    cap = cv2.VideoCapture(path)
    out = []
    while len(out) < frames:
        ok, f = cap.read()
        if not ok:
            break
        out.append(
            rec.tokenizer.encode_batch([r.crop(f) for r in grid_regions(f.shape[1], f.shape[0], 2, 2)])
        )
    cap.release()
    return np.stack(out)


def write_static_clip(path: Path, frames: int = 400, sigma: float = 2.0, seed: int = 0) -> Path:
    """Write vtest.avi's empty background with sensor noise as a video (see the module docstring)."""
    if path.exists():
        return path
    cap = cv2.VideoCapture(VTEST)
    samples, i = [], 0
    while cap.grab():
        if i % 32 == 0:
            samples.append(cap.retrieve()[1])
        i += 1
    cap.release()
    background = np.median(np.stack(samples), axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp" + path.suffix)
    h, w = background.shape[:2]
    out = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (w, h))
    rng = np.random.default_rng(seed)
    for _ in range(frames):
        out.write(np.clip(background + rng.normal(0, sigma, background.shape), 0, 255).astype(np.uint8))
    out.release()
    tmp.replace(path)
    return path


def stream_rate(rec: Recognizer, path: str, frames: int, **kw) -> tuple[float, int]:
    n, t0 = 0, time.perf_counter()
    with Streamer(rec, [path], grid=(2, 2), max_frames=frames, **kw) as s:
        for _ in s:
            n += 1
    return 4 * n / (time.perf_counter() - t0), n


def gate_seconds(rec: Recognizer, tokens: np.ndarray) -> float:
    """Time the open-set gate alone (PNG of the tokens' image, features, both distances) on
    ``tokens``."""
    rng = np.random.default_rng(0)  # stand-ins: the cost is shape-bound
    nll = rng.exponential(2.0, tokens.shape)
    head = rng.normal(size=(len(tokens), rec.n_codes + 1 + len(rec.labels))).astype(np.float32)
    t0 = time.perf_counter()
    rec.ood_scores(tokens, nll, head)
    return time.perf_counter() - t0


def best_ms(f, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return 1e3 * min(times)


def reuse_shares(tokens: np.ndarray, policy: ReusePolicy) -> dict[str, float]:
    """(frames, regions, n) tokens of consecutive frames -> the share of positions (BOS + n per
    region) a cached prefix covers: per region on its own, with one call per frame from the frame's
    smallest first change (the plan before the policy), and as the policy plans it."""
    n = tokens.shape[2]
    region = old = planned = 0.0
    for prev, cur in zip(tokens[:-1], tokens[1:], strict=True):
        changed = prev != cur
        js = [int(np.argmax(c)) if c.any() else n for c in changed]
        region += sum(j + 1 if j else 0 for j in js)
        partial = [j for j in js if 0 < j < n]
        old += sum(j + 1 for j in js if j == n) + len(partial) * (min(partial) + 1 if partial else 0)
        planned += sum(j + 1 for j in js if j == n)
        planned += sum(len(rows) * (start + 1 if start else 0) for start, rows in policy.plan(js, n))
    total = (len(tokens) - 1) * tokens.shape[1] * (n + 1)
    return {"region": region / total, "old": old / total, "planned": planned / total}


def reuse_costs(rec: Recognizer, tokens: np.ndarray) -> dict[str, float]:
    """The policy's cost model, measured: ms per position of a full pass (batch of 4), the fixed
    cost of a call in positions, and the cost of gathering and copying a cached position."""
    rows = tokens[:4]
    ids = with_bos(rec.tokenizer.bos, rows)
    _, past = rec.engine.prefill(ids)
    full = best_ms(lambda: rec.engine.prefill(ids))
    position = full / ids.size
    one = [(k[:1], v[:1]) for k, v in past]
    last = best_ms(lambda: rec.engine.run(ids[:1, -1:], [(k[:, :, :-1], v[:, :, :-1]) for k, v in one]))
    memory = [[(k[r : r + 1].copy(), v[r : r + 1].copy()) for k, v in past] for r in range(len(rows))]
    gather = best_ms(
        lambda: (
            [
                (np.concatenate([m[layer][0] for m in memory]), np.concatenate([m[layer][1] for m in memory]))
                for layer in range(len(past))
            ]
            + [[(k[r : r + 1].copy(), v[r : r + 1].copy()) for k, v in past] for r in range(len(rows))]
        )
    )
    return {
        "position_ms": position,
        "call_positions": max(last / position - 1.0, 0.0),
        "copy_share": gather / ids.size / position,
    }


def memory_run(bundle: str, frames: int, every: float = 1.0) -> tuple[float, float, list]:
    """Peak RSS (MB) of a process that only imports the libraries, and of ``pixlm run vtest.avi
    --grid 2x2 -q`` over ``frames`` frames, each a child process; and the run's RSS (s, MB) every
    ``every`` seconds."""
    floor, _ = _child(LIBRARIES)
    args = [VTEST, "--grid", "2x2", "-q", "--bundle", bundle, "--max-frames", str(frames)]
    args += ["--loop", str(frames // 795 + 1), "--metrics-every", "3600"]
    peak, samples = _child(f"from pixlm.runtime.cli import run; run({args!r})", every)
    return floor, peak, samples


def _child(code: str, every: float = 0.5) -> tuple[float, list[tuple[float, float]]]:
    """Run Python ``code`` in a child; its peak RSS in MB and RSS samples (s, MB).

    The peak is the child's own VmHWM, read as it exits: the kernel's ``ru_maxrss`` of a child
    starts from its parent's peak at the fork (this process's decoded frames), so wait4 would
    report the benchmark, not the child.
    """
    hwm = "import atexit, sys; atexit.register(lambda: print('VmHWM', [l for l in open('/proc/self/status') "
    hwm += "if l.startswith('VmHWM')][0].split()[1], file=sys.stderr))\n"
    with subprocess.Popen(
        [sys.executable, "-c", hwm + code], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    ) as p:
        t0, samples = time.monotonic(), []
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/statm") as f:
                    pages = int(f.read().split()[1])
                samples.append((time.monotonic() - t0, pages * resource.getpagesize() / 2**20))
            except (OSError, ValueError, IndexError):  # between exit and reaping
                pass
            time.sleep(every)
        err = p.stderr.read() if p.stderr else ""
    peak = [line.split()[1] for line in err.splitlines() if line.startswith("VmHWM ")]
    if p.returncode or not peak:
        raise click.ClickException(f"{code[:60]}...: exit {p.returncode}: {err.strip()[-500:]}")
    return int(peak[-1]) / 1024, samples


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--bundle", type=click.Path(file_okay=False), default=None, help="Bundle [default: the default one]."
)
@click.option("--precision", default="fp32", show_default=True, help="Bundle file to run.")
@click.option("--threads", type=int, default=2, show_default=True, help="ONNX Runtime intra-op threads.")
@click.option("--batch", type=int, default=16, show_default=True, help="Regions per engine call.")
@click.option("--frames", type=int, default=20000, show_default=True, help="Frames for the memory run.")
@click.option("--repeats", type=int, default=3, show_default=True, help="Interleaved runs per reuse timing.")
@click.option("--reuse-frames", type=int, default=200, show_default=True, help="Frames per reuse timing run.")
@click.option(
    "--static-clip",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("build/vtest-static.avi"),
    show_default=True,
    help="The static scene (written from vtest.avi when missing).",
)
def bench(bundle, precision, threads, batch, frames, repeats, reuse_frames, static_clip) -> None:
    """Measure the runtime on vtest.avi (Debian's opencv-doc) and a static scene made from it:
    end-to-end vs engine-only throughput, KV prefix reuse on vs off, and resident memory over
    FRAMES frames. Prints Markdown tables."""
    from pixlm.runtime.cli import ensure_default_bundle

    bundle = str(bundle or ensure_default_bundle())
    cv2.setNumThreads(1)
    try:
        rec = Recognizer.open(bundle, "ort-cpu", precision, threads=threads)
    except (ValueError, RuntimeError) as e:
        raise click.ClickException(str(e)) from None
    print(f"bundle {bundle} file {rec.file_key}, ONNX Runtime threads {threads}, batch {batch}")
    scenes = {"vtest.avi": VTEST, "static": str(write_static_clip(static_clip))}

    per_frame = {name: clip_tokens(rec, path, 400) for name, path in scenes.items()}
    tokens = per_frame["vtest.avi"].reshape(-1, per_frame["vtest.avi"].shape[-1])
    rec.predict_tokens(tokens[:batch])  # warm up

    def engine_rate() -> float:
        t0 = time.perf_counter()
        for i in range(0, len(tokens), batch):
            rec.predict_tokens(tokens[i : i + batch])
        return len(tokens) / (time.perf_counter() - t0)

    engine = 0.0  # best of the repeats below, interleaved with the streaming runs it is compared to
    gate_us = 1e6 * gate_seconds(rec, tokens) / len(tokens) if rec.gate is not None else None

    # -- where reuse pays -------------------------------------------------------------------------
    policy = rec.reuse_policy
    print("\nwhere prefix reuse pays (share of positions, BOS + 196 per region, taken from the cache):")
    print("| scene | each region on its own | one call per frame from its smallest change | policy |")
    print("|---|---:|---:|---:|")
    exact = 0.0
    for name, scene in per_frame.items():
        s = reuse_shares(scene, policy)
        print(f"| {name} | {s['region']:.1%} | {s['old']:.1%} | {s['planned']:.1%} |")
        exact = max(exact, reuse_difference(rec, scene[:100]))
    c = reuse_costs(rec, tokens)
    print(
        f"\nmeasured: a position costs {c['position_ms']:.3f} ms (a full pass of 4 regions); a call "
        f"{c['call_positions']:.1f} positions above its rows (the policy assumes {policy.call_cost:g}); "
        f"gathering and copying a cached position {c['copy_share']:.2%} of computing it "
        f"(assumed {policy.copy_cost:.0%})"
    )

    # -- reuse on vs off, interleaved -------------------------------------------------------------
    configs = [(name, size) for name in scenes for size in (batch, 4)]
    rates: dict[tuple[str, int, bool], list[float]] = {}
    saved: dict[tuple[str, int], float] = {}
    for r in range(repeats):
        engine = max(engine, engine_rate())
        for name, size in configs:
            for reuse in (False, True) if r % 2 == 0 else (True, False):
                before = ReuseStats.of(rec.stats)
                rate, _ = stream_rate(rec, scenes[name], reuse_frames, max_batch=size, prefix_reuse=reuse)
                rates.setdefault((name, size, reuse), []).append(rate)
                if reuse:
                    st = ReuseStats.of(rec.stats) - before
                    saved[(name, size)] = st.tokens_saved / max(st.tokens_total, 1)
    e2e = max(rates[("vtest.avi", batch, False)])
    print("\n| measure | regions/s |\n|---|---:|")
    print(f"| engine only (pre-tokenized, batch {batch}) | {engine:,.0f} |")
    if gate_us is not None:  # its share is inside the engine-only figure; shown on its own here
        n = min(400, len(tokens))
        infer_ms = best_ms(lambda: [rec.analyze_tokens(tokens[i : i + batch]) for i in range(0, n, batch)])
        infer_us = 1e3 * infer_ms / n
        line = (
            f"of which the open-set gate ('unknown'): {gate_us:.0f} µs per region, "
            f"{gate_us / infer_us:.0%} of the engine call's {infer_us:.0f} µs"
        )
        print(f"| {line} | {1e6 / gate_us:,.0f} |")
    print(f"| end to end, `Streamer` on vtest.avi 2x2, reuse off | {e2e:,.0f} |")
    print(f"| ratio end-to-end / engine-only | {e2e / engine:.2f} |")

    print(f"\nprefix reuse on vs off, end to end, 2x2 grid, {reuse_frames} frames a run, best of {repeats}:")
    print("| scene | regions per call | reuse off | reuse on | on / off | tokens from the cache |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size in configs:
        off, on = max(rates[(name, size, False)]), max(rates[(name, size, True)])
        calls = f"{size} (one frame)" if size == 4 else str(size)
        print(
            f"| {name} | {calls} | {off:,.0f} | {on:,.0f} | **{on / off:.2f}x** | {saved[(name, size)]:.1%} |"
        )
    print(f"max abs difference reuse vs full recompute (score, bits) | {exact:.1e} |")

    # -- memory -----------------------------------------------------------------------------------
    print(f"\nmemory: `pixlm run vtest.avi --grid 2x2 -q` over {frames:,} frames (prefix reuse on):")
    floor, peak, samples = memory_run(bundle, frames)
    print("| measure | MB |\n|---|---:|")
    print(f"| floor: a process that only runs `{LIBRARIES}` (peak) | {floor:.1f} |")
    print(f"| `pixlm run` peak | {peak:.1f} |")
    print(f"| **peak minus the floor** | **{peak - floor:.1f}** |")
    if samples:
        end = samples[-1][0]
        marks = [next(m for t, m in samples if t >= q * end) for q in (0.1, 0.25, 0.5, 0.75, 1.0)]
        print("RSS at 10/25/50/75/100% of the run: " + " / ".join(f"{m:.1f}" for m in marks) + " MB")
        print(f"growth from 10% of the run to its end: {marks[-1] - marks[0]:+.1f} MB; {end:.0f} s")


def reuse_difference(rec: Recognizer, per_frame: np.ndarray) -> float:
    """Largest |reuse - full recompute| over scores and per-token bits, frame after frame."""
    memory: list = [None] * per_frame.shape[1]
    worst = 0.0
    for tok in per_frame:
        full, (fast, memory) = rec.predict_tokens(tok, True), rec.predict_reusing(tok, memory, True)
        for x, y in zip(full, fast, strict=True):
            worst = max(worst, abs(x.score - y.score), float(np.abs(x.nll_map - y.nll_map).max()))
    return worst

"""Measurements of an exported file: label accuracy on held-out images, latency and throughput.

Both run through ``pixlm.runtime.engine.OrtEngine``: what is measured is what the runtime runs.
"""

from __future__ import annotations

import time

import numpy as np

from pixlm.runtime.engine import OrtEngine


def label_accuracy(
    engine: OrtEngine, seqs: np.ndarray, labels: np.ndarray, n_codes: int, batch_size: int = 64
) -> float:
    """Fraction of ``seqs`` (B, N+1) whose label argmax after the image equals ``labels``."""
    preds = []
    for i in range(0, len(seqs), batch_size):
        logits, _ = engine.prefill(seqs[i : i + batch_size])
        preds.append(logits[:, -1, n_codes + 1 :].argmax(-1))
    return float((np.concatenate(preds) == labels).mean())


def _median_seconds(fn, min_runs: int = 5, budget_s: float = 1.0) -> float:
    fn()  # warm-up: first-run allocations and kernel selection
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 200):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def speed(engine: OrtEngine, seqs: np.ndarray, budget_s: float = 1.0) -> tuple[float, float]:
    """Recognition of whole images (prefill of N+1 tokens): ms per frame at batch 1, frames/s at 16.

    ``seqs`` are real tokenized images, at least 16 rows.
    """
    one, sixteen = seqs[:1], seqs[:16]
    if len(sixteen) < 16:
        sixteen = np.resize(seqs, (16, seqs.shape[1]))
    ms1 = 1000 * _median_seconds(lambda: engine.prefill(one), budget_s=budget_s)
    fps16 = 16 / _median_seconds(lambda: engine.prefill(sixteen), budget_s=budget_s)
    return ms1, fps16

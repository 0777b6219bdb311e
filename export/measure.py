"""Measurements of an exported file: label accuracy on held-out images, latency and throughput.

Both run through ``pixlm.runtime.engine.OrtEngine``: what is measured is what the runtime runs.
The held-out pass shows a progress bar on a terminal (``pixlm.progress``); it vanishes when done.
"""

from __future__ import annotations

import time

import numpy as np

from pixlm.progress import bar
from pixlm.runtime import novelty, scoring
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.tokenizer import Tokenizer


def held_out_pass(
    engine: OrtEngine,
    seqs: np.ndarray,
    labels: np.ndarray,
    tokenizer: Tokenizer,
    batch_size: int = 64,
    desc: str = "held-out pass",
) -> tuple[float, novelty.GateInputs]:
    """One pass over held-out ``seqs`` (B, N+1): label accuracy, and the open-set gate's inputs of
    every image, computed as the runtime computes them (``pixlm.runtime.scoring``, the recognizer's
    scoring). ``desc`` names the progress bar."""
    parts: list[novelty.GateInputs] = []
    with bar(desc=desc, total=len(seqs), leave=False, unit="img") as progress:
        for i in range(0, len(seqs), batch_size):
            batch = seqs[i : i + batch_size]
            logits, _ = engine.prefill(batch)
            logp = scoring.log_softmax(logits[:, :-1, : tokenizer.n_codes])
            bits = scoring.token_bits(logp, batch[:, 1:])
            parts.append(scoring.gate_inputs_of(batch[:, 1:], bits, logits[:, -1], tokenizer))
            progress.update(len(batch))
    inputs = novelty.GateInputs(
        *(np.concatenate([getattr(p, k) for p in parts]) for k in ("summary", "head", "classes"))
    )
    return float((inputs.classes == labels).mean()), inputs


def speed(engine: OrtEngine, seqs: np.ndarray, budget_s: float = 1.0) -> tuple[float, float]:
    """Recognition of whole images (prefill of N+1 tokens): ms per frame at batch 1, frames/s at 16.

    Best of repeated runs (:func:`best_seconds`): the figure least disturbed by other load.

    ``seqs`` are real tokenized images, at least 16 rows.
    """
    one, sixteen = seqs[:1], seqs[:16]
    if len(sixteen) < 16:
        sixteen = np.resize(seqs, (16, seqs.shape[1]))
    ms1 = 1000 * best_seconds(lambda: engine.prefill(one), budget_s=budget_s)
    fps16 = 16 / best_seconds(lambda: engine.prefill(sixteen), budget_s=budget_s)
    return ms1, fps16


def prefix_reuse_deviation(engine: OrtEngine, seqs: np.ndarray, n_labels: int) -> tuple[float, float]:
    """How far prefix reuse moves ``engine``'s outputs: max |Δ logits| and label-argmax agreement.

    For each prefix length (1/4, 1/2, 3/4 of ``seqs``' T tokens): prefill the prefix, run the rest
    on its cache (what the runtime does when a region's first rows are unchanged), and compare
    with one full prefill. A float file agrees to rounding; a dynamically quantized one does not,
    because each call quantizes its activations with its own ranges.
    """
    full, _ = engine.prefill(seqs)
    diff, agree = 0.0, 1.0
    for split in (seqs.shape[1] // 4, seqs.shape[1] // 2, 3 * seqs.shape[1] // 4):
        head, past = engine.prefill(seqs[:, :split])
        tail, _ = engine.run(seqs[:, split:], past)
        got = np.concatenate([head, tail], axis=1)
        diff = max(diff, float(np.abs(got.astype(np.float64) - full).max()))
        if n_labels:
            same = got[:, -1, -n_labels:].argmax(-1) == full[:, -1, -n_labels:].argmax(-1)
            agree = min(agree, float(same.mean()))
    return diff, agree


def prefill_flops(cfg: dict, n_tokens: int) -> float:
    """Useful multiply-add FLOPs (2 per MAC) of one prefill of ``n_tokens`` (BOS + image) through
    a decoder of config ``cfg`` (``PixLMConfig.to_dict()``).

    Per layer: the qkv, attention-output and MLP projections (24 T C^2) and the two attention
    products over the pairs a causal model needs, query i with keys 0..i (4 C T(T+1)/2); then the
    head (2 T C vocab). Masked scores are not counted, whether or not a graph computes them, so a
    graph that skips them gets the credit in "% of peak" honestly. Embeddings, LayerNorm, softmax
    and GELU are not counted either.
    """
    t, c = n_tokens, cfg["d_model"]
    vocab = cfg["n_codes"] + 1 + cfg["n_labels"]
    return cfg["n_layer"] * (24 * t * c * c + 2 * c * t * (t + 1)) + 2 * t * c * vocab


def matmul_peak_gflops(threads: int | None = None, n: int = 1024, budget_s: float = 2.0) -> float:
    """ONNX Runtime's own fp32 speed on one big ``n`` x ``n`` x ``n`` MatMul, GFLOP/s (best of runs).

    The yardstick for the model's figures: measured in the same run on the same cores, a model's
    share of it means the same on any machine.
    """
    import onnxruntime as ort
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["c"])],
        "matmul",
        [helper.make_tensor_value_info(x, TensorProto.FLOAT, [n, n]) for x in "ab"],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT, [n, n])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feed = {x: rng.standard_normal((n, n), dtype=np.float32) for x in "ab"}
    best = best_seconds(lambda: session.run(None, feed), budget_s=budget_s)
    return 2 * n**3 / best / 1e9


def best_seconds(fn, min_runs: int = 5, budget_s: float = 1.0) -> float:
    """Fastest of repeated calls of ``fn`` after one warm-up: the least disturbed by other load."""
    fn()
    times, start = [], time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 500):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(min(times))

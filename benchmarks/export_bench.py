"""Speed of every ONNX file in a bundle on this CPU, through the runtime's OrtEngine (no torch).

    .venv/bin/python benchmarks/export_bench.py build/default --threads 2 1

Per file and thread count: recognition of one frame (prefill of BOS + all image tokens) at
batch 1, frames/s at batch 16 and 64, the speed-up over fp32 at batch 16, one decode step (one
token with the rest cached, the completion / prefix-reuse path), and fp32 at batch 64 as a share
of ONNX Runtime's own 1024^3 fp32 MatMul speed (``measure.matmul_peak_gflops``) measured in the
same run, with ``measure.prefill_flops`` FLOPs per image: a ratio that means the same on any
machine. Every figure is the best of ``--rounds`` interleaved rounds (``measure.best_seconds``),
so a burst of other load on the machine hits every file alike. Inputs are real Fashion-MNIST test
images tokenized by the bundle's own tokenizer. Prints a Markdown table.
"""

from __future__ import annotations

import argparse

from pixlm.data import load_fashion_mnist
from pixlm.export.measure import best_seconds, matmul_peak_gflops, prefill_flops
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.io_spec import with_bos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle")
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--seconds", type=float, default=0.5, help="per measurement and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best counts")
    a = ap.parse_args()
    b = Bundle.load(a.bundle)
    tok = b.tokenizer
    tokens = tok.encode_prepared(load_fashion_mnist(split="test").images[:64])
    seqs = with_bos(tok.bos, tokens)
    flops = prefill_flops(b.model_config, seqs.shape[1])
    keys = [k for k, f in b.files.items() if f.format == mf.FORMAT_ONNX]
    print(f"{flops / 1e6:.0f} MFLOP per image; recommended for CPUs: {b.recommended('cpu')}\n")
    lines, peaks = [], []
    print(
        "| file | threads | ms/frame batch 1 | frames/s batch 16 | × fp32 batch 16 | frames/s batch 64 "
        "| % of MatMul peak batch 64 | ms/decode step |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for threads in a.threads:
        engines = {k: OrtEngine(b.path(k), threads=threads) for k in keys}
        pasts = {k: e.prefill(seqs[:1, :-1])[1] for k, e in engines.items()}
        best: dict[tuple[str, str], float] = {}
        peak = 0.0
        for _ in range(a.rounds):
            peak = max(peak, matmul_peak_gflops(threads, budget_s=a.seconds))
            for k, e in engines.items():
                runs = {
                    "b1": lambda e=e: e.prefill(seqs[:1]),
                    "b16": lambda e=e: e.prefill(seqs[:16]),
                    "b64": lambda e=e: e.prefill(seqs),
                    "step": lambda e=e, past=pasts[k]: e.run(seqs[:1, -1:], past),
                }
                for what, fn in runs.items():
                    s = best_seconds(fn, budget_s=a.seconds)
                    best[k, what] = min(s, best.get((k, what), s))
        fp32_16 = 16 / best[mf.FP32, "b16"] if mf.FP32 in engines else None
        for k in keys:
            fps16, fps64 = 16 / best[k, "b16"], 64 / best[k, "b64"]
            share = f"{100 * fps64 * flops / 1e9 / peak:.0f}%" if b.files[k].precision == "fp32" else "—"
            ratio = f"{fps16 / fp32_16:.2f}" if fp32_16 else "—"
            lines.append(
                f"| {k} | {threads} | {1000 * best[k, 'b1']:.2f} | {fps16:,.0f} | {ratio} | {fps64:,.0f} "
                f"| {share} | {1000 * best[k, 'step']:.3f} |"
            )
        peaks.append(f"ORT fp32 1024³ MatMul peak, {threads} thread(s): {peak:.1f} GFLOP/s")
    print("\n".join(lines))
    print("\n" + "\n".join(peaks) + f" (best of {a.rounds} rounds)")


if __name__ == "__main__":
    main()

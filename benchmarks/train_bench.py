"""Training speed of the shipped model's shape on this CPU: fp32 against bfloat16 autocast.

    .venv/bin/python benchmarks/train_bench.py [--threads 2] [--steps 12]

One training step (`pixlm.train.train_step`, exactly what `pixlm train` runs) = forward, both
losses, backward, gradient clipping and an AdamW update on a batch of 64 real Fashion-MNIST images
tokenized by the shipped tokenizer (196 tokens). Prints median images/s per precision and the
ratio; what `pixlm train --precision bf16` buys here.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pixlm import checkpoint
from pixlm.data import load_fashion_mnist
from pixlm.model import PixLM
from pixlm.train import Objective, train_step


def images_per_s(model: PixLM, tokens: torch.Tensor, labels: torch.Tensor, bf16: bool, steps: int) -> float:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    objective = Objective(model)
    model.train()
    times = []
    for i in range(steps + 2):  # two warm-up steps
        t0 = time.perf_counter()
        train_step(objective, opt, tokens, labels, precision="bf16" if bf16 else "fp32")
        if i >= 2:
            times.append(time.perf_counter() - t0)
    return len(tokens) / float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shipped, tok, _ = checkpoint.load(checkpoint.default_checkpoint())
    data = load_fashion_mnist(split="train")  # already 28x28 grey: the tokenizer's grid
    tokens = torch.from_numpy(tok.encode_prepared(data.images[:64]))
    labels = torch.from_numpy(data.labels[:64])
    speed = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        torch.manual_seed(0)
        model = PixLM(shipped.cfg)
        speed[name] = images_per_s(model, tokens, labels, bf16, args.steps)
    print("| shape | threads | fp32 images/s | bf16 images/s | bf16 / fp32 |")
    print("|---|---:|---:|---:|---:|")
    c = shipped.cfg
    shape = f"{c.grid_h * c.grid_w} tokens, {c.n_layer} layers x {c.d_model}, batch 64"
    f32, b16 = speed["fp32"], speed["bf16"]
    print(f"| {shape} | {args.threads} | {f32:.0f} | {b16:.0f} | {b16 / f32:.2f}x |")


if __name__ == "__main__":
    main()

"""Evaluation: accuracy, per-class accuracy, confusion matrix, and image NLL in bits."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from pixlm.data import Dataset
from pixlm.model import PixLM
from pixlm.runtime.tokenizer import Tokenizer


@torch.no_grad()
def predict(
    model: PixLM,
    tokenizer: Tokenizer,
    images: np.ndarray,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Prepared images -> label probabilities (N, L) and per-token NLL in bits (N, n_tokens)."""
    model.eval()
    probs, nlls = [], []
    for i in range(0, len(images), batch_size):
        tokens = torch.from_numpy(tokenizer.encode_prepared(images[i : i + batch_size]))
        p, nll = model.analyze(tokens)
        probs.append(p.numpy())
        nlls.append(nll.numpy())
        if on_batch:
            on_batch(len(tokens))
    return np.concatenate(probs), np.concatenate(nlls)


def evaluate(
    model: PixLM,
    tokenizer: Tokenizer,
    data: Dataset,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Metrics on a dataset; label metrics only where labels exist (>= 0)."""
    probs, nll = predict(model, tokenizer, data.images, batch_size, on_batch)
    pixels_per_token = tokenizer.config.patch**2
    out = {
        "images": int(len(data)),
        "bits_per_token": float(nll.mean()),
        "bits_per_pixel": float(nll.mean() / pixels_per_token),
    }
    labelled = data.labels >= 0
    if labelled.any() and probs.shape[1] > 0:
        y, pred = data.labels[labelled], probs[labelled].argmax(1)
        L = probs.shape[1]
        confusion = np.zeros((L, L), dtype=np.int64)
        np.add.at(confusion, (y, pred), 1)
        per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
        names = list(tokenizer.labels)
        out.update(
            accuracy=float((pred == y).mean()),
            per_class_accuracy={names[i]: float(per_class[i]) for i in range(L)},
            confusion=confusion.tolist(),
            labels=names,
        )
    return out


def format_report(m: dict) -> str:
    """Human-readable summary of :func:`evaluate`'s dict."""
    lines = [f"images          {m['images']}"]
    if "accuracy" in m:
        lines.append(f"accuracy        {100 * m['accuracy']:.2f}%")
    lines.append(f"bits per pixel  {m['bits_per_pixel']:.4f}  (bits per token {m['bits_per_token']:.4f})")
    if "accuracy" in m:
        names = m["labels"]
        w = max(len(n) for n in names)
        lines.append("per class:")
        for n in names:
            lines.append(f"  {n:<{w}}  {100 * m['per_class_accuracy'][n]:6.2f}%")
        lines.append("confusion (rows: true, columns: predicted):")
        for n, row in zip(names, m["confusion"], strict=True):
            lines.append(f"  {n:<{w}} " + " ".join(f"{v:5d}" for v in row))
    return "\n".join(lines)

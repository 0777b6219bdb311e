"""Distillation: a small model learns labels from a bigger model's label distribution too.

The teacher reads each training image once (unshifted, in its own tokens: a teacher with 2x2-pixel
codes can teach a student with 4x4-pixel codes), and its label logits are kept; each step the
student's label loss mixes the true label's cross-entropy with the KL divergence to the teacher's
softened distribution (Hinton et al. 2015)::

    label loss = (1 - MIX) * CE(student, label) + MIX * T^2 * KL(softmax(teacher / T) || softmax(student / T))

``MIX`` and ``T`` are the paper's usual values, not tuned here. Next-token distributions are not
distilled: the student's vocabulary (its palette) differs from the teacher's.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pixlm import checkpoint
from pixlm.progress import bar

MIX = 0.5  # weight of the teacher's distribution in the label loss
TEMPERATURE = 2.0


@torch.no_grad()
def teacher_logits(
    teacher: str | os.PathLike, images: np.ndarray, label_names: tuple[str, ...], cache: Path | None = None
) -> torch.Tensor:
    """The teacher's label logits (N, L) for ``images`` (N, H, W[, C] uint8), in ``label_names`` order.

    ``cache``: a file kept next to the run, reused only when made from the same teacher file,
    images and labels (a resumed run then does not read every image again); an unreadable one is
    made again. Raises ValueError when the teacher cannot read these images or labels."""
    model, tok, _ = checkpoint.load(teacher)
    if tuple(tok.labels) != tuple(label_names):
        raise ValueError(f"teacher {teacher}: labels {tok.labels} differ from the data's {label_names}")
    c = tok.config
    channels = 1 if images.ndim == 3 else images.shape[3]
    if tok.kind != "pixels" or images.shape[1:3] != (c.height, c.width) or channels != c.channels:
        raise ValueError(
            f"teacher {teacher} reads {c.height}x{c.width}x{c.channels} {tok.kind} images; the data "
            f"are {images.shape[1]}x{images.shape[2]}x{channels} pixels"
        )
    digest = hashlib.sha1(Path(teacher).read_bytes())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(repr(tuple(label_names)).encode())
    key = digest.hexdigest()
    if cache is not None and cache.exists():
        try:
            saved = torch.load(cache, weights_only=True)
            if saved["key"] == key:
                return saved["logits"]
        except Exception:  # a cut or foreign file: compute again
            pass
    out = []
    with bar(desc="teacher labels", total=len(images), leave=False, unit="img") as progress:
        for i in range(0, len(images), 500):
            tokens = torch.from_numpy(tok.encode_prepared(images[i : i + 500]))
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits, _ = model(model.with_bos(tokens))
            out.append(model.label_logits(logits[:, tokens.shape[1]]).float())
            progress.update(len(tokens))
    logits = torch.cat(out)
    if cache is not None:
        checkpoint.save_atomic({"key": key, "logits": logits}, cache)
    return logits


def label_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The distilled label loss of a batch: student and teacher logits (B, L), true labels (B,)."""
    hard = F.cross_entropy(student, labels)
    soft = F.kl_div(
        F.log_softmax(student / TEMPERATURE, 1),
        F.log_softmax(teacher / TEMPERATURE, 1),
        log_target=True,
        reduction="batchmean",
    )
    return (1 - MIX) * hard + MIX * TEMPERATURE**2 * soft

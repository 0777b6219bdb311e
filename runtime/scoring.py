"""Scoring: the engine's logits -> what the model says about an image (a :class:`Result`). numpy + OpenCV.

::

    logits (B, 1 + N, V: codes, BOS, labels) after [BOS, image tokens]
      |-- [:, :-1, :n_codes] --log_softmax--> next-token log-probs (B, N, n_codes)
      |        --token_bits(tokens)--> each image token's surprise in bits (B, N)
      |        --> anomaly (mean, bits per pixel), anomaly_peak (top tenth), nll_map (token grid)
      '-- [:, -1] the head (B, V) --softmax over the label tokens--> label, score, top_k
               '--gate_inputs_of(tokens, bits, head)--> the open-set gate (pixlm.runtime.novelty)
                                                          --> known, or the label "unknown"

The recognizer scores with these and the exporter's held-out pass (``pixlm.export.measure``) fits
the open-set gate with them, so the gate sees at run time the numbers it was fitted on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pixlm.runtime.novelty import GateInputs, gate_inputs, png_bits_per_pixel
from pixlm.runtime.tokenizer import Tokenizer

LN2 = math.log(2.0)
UNKNOWN = "unknown"  # the label of an input the bundle's open-set gate rejects


@dataclass
class Result:
    """What the model says about one image (or region)."""

    label: str
    label_index: int
    score: float  # probability of ``label`` among the label tokens
    top_k: list[tuple[str, float]]
    anomaly: float  # mean negative log-likelihood of the image, bits per pixel
    anomaly_peak: float = 0.0  # the same over its most surprising tenth of tokens (small objects)
    nll_map: np.ndarray | None = None  # (grid rows, grid cols) bits per token, when asked for
    timings: dict[str, float] = field(default_factory=dict)  # ms: tokenize, infer, post
    reused_tokens: int = 0  # prefix reuse: tokens whose KV came from the previous frame
    known: bool = True  # False: out of distribution; ``label`` is then "unknown" (top_k keeps the guesses)
    ood_score: float | None = None  # the open-set gate's distance (None: no gate); see pixlm.runtime.novelty

    def describe(self) -> str:
        """'Bag 0.97'; 'unknown' for an input the open-set gate rejected; '' for a label-free model
        (a scene model: only its anomaly score means something). For the overlay and stdout."""
        if not self.label or not self.known:
            return self.label
        return f"{self.label} {self.score:.2f}"

    def to_dict(self) -> dict:
        """The JSON form (JSON Lines schema, see docs/runtime.md)."""
        return {
            "label": self.label,
            "known": self.known,
            "score": round(self.score, 6),
            "top_k": [[name, round(p, 6)] for name, p in self.top_k],
            "anomaly": round(self.anomaly, 6),
            "anomaly_peak": round(self.anomaly_peak, 6),
            "ood_score": None if self.ood_score is None else round(self.ood_score, 4),
            "reused_tokens": self.reused_tokens,
        }


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Over the last axis, in float32 (the logits' precision; float64 doubled the post-processing)."""
    z = x - x.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


def token_bits(logp: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Next-token log-probs (B, N, n_codes) and the image tokens that came (B, N) -> each token's
    negative log-likelihood in bits (B, N)."""
    return -np.take_along_axis(logp, tokens[..., None], axis=-1)[..., 0] / LN2


def gate_inputs_of(
    tokens: np.ndarray, bits: np.ndarray, head: np.ndarray, tokenizer: Tokenizer
) -> GateInputs:
    """The open-set gate's inputs of tokenized images (B, N): their per-token bits (B, N), the
    logits after the last image token (B, V) and the PNG length of the image the tokens decode to."""
    png = png_bits_per_pixel(np.stack([tokenizer.decode(t) for t in tokens]))
    return gate_inputs(bits, head, tokenizer.n_codes, png, tokenizer.config.patch**2)

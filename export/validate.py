"""Validation of an exported file against PyTorch, on real tokenized images.

Checks run in order and stop at the first failure, each with its own error type carrying the
numbers: names (:class:`MissingOutputError`), then shapes (:class:`ShapeError`), then values
(:class:`ToleranceError`, :class:`AgreementError`). The ONNX side runs through
``pixlm.runtime.engine.OrtEngine``, the same class the camera runtime uses.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pixlm.model import PixLM
from pixlm.runtime import manifest as mf
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.io_spec import ATOL_FP32, LOGITS, DecoderIO, present_key, present_value


class ValidationError(ValueError):
    """An exported model that does not do what the PyTorch model does."""


class MissingOutputError(ValidationError):
    def __init__(self, path: str, missing: list[str], unexpected: list[str]):
        self.missing, self.unexpected = missing, unexpected
        super().__init__(f"{path}: missing inputs/outputs {missing}, unexpected {unexpected}")


class ShapeError(ValidationError):
    def __init__(self, what: str, got: tuple, expected: tuple):
        self.what, self.got, self.expected = what, tuple(got), tuple(expected)
        super().__init__(f"{what}: shape {self.got}, expected {self.expected}")


class ToleranceError(ValidationError):
    def __init__(self, what: str, max_abs_diff: float, atol: float):
        self.what, self.max_abs_diff, self.atol = what, max_abs_diff, atol
        super().__init__(f"{what}: max |Δ| {max_abs_diff:.3g} > tolerance {atol:.3g}")


class AgreementError(ValidationError):
    def __init__(self, what: str, agree: int, total: int):
        self.what, self.agree, self.total = what, agree, total
        super().__init__(f"{what}: label argmax agrees with PyTorch on {agree}/{total} images, need all")


class AccuracyGateError(ValidationError):
    def __init__(self, name: str, reference: float, accuracy: float, max_drop: float, images: int):
        self.reference, self.accuracy, self.max_drop = reference, accuracy, max_drop
        drop = 100 * (reference - accuracy)
        super().__init__(
            f"{name} accuracy {100 * accuracy:.2f}% vs fp32 {100 * reference:.2f}% on {images} held-out "
            f"images: drop {drop:.2f} points > --max-drop {max_drop:g}"
        )


def _name(engine: OrtEngine) -> str:
    return Path(engine.path).name  # not the staging folder's path: the bundle's file name


def check_io(engine: OrtEngine, cfg) -> None:
    """Names exactly as the contract says, and the static KV dimensions of this model."""
    spec = DecoderIO.from_config(cfg.to_dict())
    want_in, want_out = spec.input_names, spec.output_names
    got_in = [i.name for i in engine.session.get_inputs()]
    got_out = [o.name for o in engine.session.get_outputs()]
    missing = [n for n in want_in if n not in got_in] + [n for n in want_out if n not in got_out]
    unexpected = [n for n in got_in if n not in want_in] + [n for n in got_out if n not in want_out]
    if missing or unexpected:
        raise MissingOutputError(_name(engine), missing, unexpected)
    kv = spec.kv_dims()
    for i in engine.session.get_inputs()[1:]:
        if tuple(i.shape) != kv:
            raise ShapeError(f"{_name(engine)}: input {i.name}", tuple(i.shape), kv)


def _check_shape(what: str, got: np.ndarray, expected: tuple) -> None:
    if tuple(got.shape) != tuple(expected):
        raise ShapeError(what, got.shape, expected)


def _max_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


@torch.no_grad()
def torch_forward(model: PixLM, seq: np.ndarray) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]]]:
    if model.training:
        raise RuntimeError("validation needs the model in eval mode (dropout off)")
    logits, presents = model(torch.from_numpy(seq))
    return logits.numpy(), [(k.numpy(), v.numpy()) for k, v in presents]


def validate(
    model: PixLM,
    engine: OrtEngine,
    seqs: np.ndarray,
    atol: float = ATOL_FP32,
    decode_images: int = 8,
) -> dict:
    """Compare ``engine`` with ``model`` on ``seqs`` (B, N+1) = [BOS, image tokens].

    1. full forward: logits and every present key/value within ``atol``;
    2. label argmax (the token after the image) agrees on every image;
    3. prefill half, one chunk of two tokens, then one-token decode steps with the cache, on the
       first ``decode_images`` rows: the concatenated logits equal the full forward within ``atol``.

    Returns the metrics (``manifest.M_*`` keys).
    """
    cfg = model.cfg
    check_io(engine, cfg)
    B, T = seqs.shape
    spec = DecoderIO.from_config(cfg.to_dict())
    ref, ref_kv = torch_forward(model, seqs)
    got, got_kv = engine.prefill(seqs)
    _check_shape(f"{_name(engine)}: {LOGITS}", got, (B, T, cfg.vocab_size))
    diff = _max_diff(got, ref)
    for i, ((k, v), (rk, rv)) in enumerate(zip(got_kv, ref_kv, strict=True)):
        _check_shape(f"{_name(engine)}: {present_key(i)}", k, spec.kv_shape(B, T))
        _check_shape(f"{_name(engine)}: {present_value(i)}", v, spec.kv_shape(B, T))
        diff = max(diff, _max_diff(k, rk), _max_diff(v, rv))
    if diff > atol:
        raise ToleranceError(f"{_name(engine)}: ONNX Runtime vs PyTorch, full forward", diff, atol)
    metrics = {mf.M_MAX_ABS_DIFF: diff}

    if cfg.n_labels:
        last = slice(cfg.n_codes + 1, None)
        agree = int((got[:, -1, last].argmax(-1) == ref[:, -1, last].argmax(-1)).sum())
        if agree != B:
            raise AgreementError(_name(engine), agree, B)
        metrics[mf.M_LABEL_AGREEMENT] = agree / B

    d = seqs[:decode_images]
    split = max(1, T // 2)
    pieces = [engine.prefill(d[:, :split])]
    past = pieces[0][1]
    pos = split
    while pos < T:
        step = 2 if pos == split and T - pos > 2 else 1  # one multi-token chunk after a past, then 1s
        logits, past = engine.run(d[:, pos : pos + step], past)
        _check_shape(f"{_name(engine)}: decode logits at {pos}", logits, (len(d), step, cfg.vocab_size))
        pieces.append((logits, past))
        pos += step
    inc = np.concatenate([p[0] for p in pieces], axis=1)
    kv_diff = _max_diff(inc, ref[: len(d)])
    if kv_diff > atol:
        raise ToleranceError(f"{_name(engine)}: prefill + incremental decode vs full forward", kv_diff, atol)
    metrics[mf.M_KV_MAX_ABS_DIFF] = kv_diff
    return metrics


def compare_logits(model: PixLM, engine: OrtEngine, seqs: np.ndarray) -> float:
    """Max |Δ logits| of ``engine`` vs PyTorch on a full forward (reported for INT8, not gated)."""
    check_io(engine, model.cfg)
    ref, _ = torch_forward(model, seqs)
    got, _ = engine.prefill(seqs)
    _check_shape(f"{_name(engine)}: {LOGITS}", got, ref.shape)
    return _max_diff(got, ref)


def check_gate(name: str, reference: float, accuracy: float, max_drop: float, images: int) -> None:
    """Fail when ``accuracy`` is more than ``max_drop`` points below the fp32 ``reference``."""
    if 100 * (reference - accuracy) > max_drop + 1e-9:  # 1e-9: 0.46 - 0.455 is 0.5000000000000004
        raise AccuracyGateError(name, reference, accuracy, max_drop, images)

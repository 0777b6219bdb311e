"""The shipped bundle's "unknown" gate on kinds of input it was never designed with: digits and
letters drawn with Hershey fonts like handwriting scans, and Fashion-MNIST upside down. Fitted on
the bundle's calibration split; the in-distribution images here come from its report split."""

from __future__ import annotations

import json

import numpy as np

from pixlm.data import load_fashion_mnist
from pixlm.runtime import manifest as mf
from pixlm.runtime.recognizer import Recognizer
from pixlm.studies.glyphs import hershey_glyphs
from pixlm.studies.ood import SYMMETRIC


def share_known(rec: Recognizer, images: np.ndarray) -> float:
    return float(np.mean([r.known for r in rec.predict_batch(list(images))]))


def test_the_shipped_gate_calls_kinds_it_was_not_designed_with_unknown(shipped_bundle):
    """Before (the five-number gate up to version 0.6.0): 39% of these glyphs were "unknown"."""
    rec = Recognizer.open(shipped_bundle, backend="ort-cpu", precision="fp32", threads=2)
    calibration = json.loads((shipped_bundle / mf.MANIFEST).read_text())[mf.K_CALIBRATION]
    report = load_fashion_mnist(split=calibration[mf.C_REPORT_SPLIT])
    fashion = report.images[:600]
    assert share_known(rec, fashion) >= 0.92  # the gate accepts 95% of its calibration images
    glyphs = hershey_glyphs(400, np.random.default_rng(7))
    assert share_known(rec, glyphs) <= 0.10
    upright = report.images[600:][~np.isin(report.labels[600:], SYMMETRIC)][:400]
    assert share_known(rec, np.ascontiguousarray(upright[:, ::-1])) <= 0.5  # near-OOD: a floor only

"""`pixlm-export --data FOLDER`: a model for a user's own classes gets its accuracy and its
"unknown" gate from the user's own held-out images, and the manifest says which."""

from __future__ import annotations

import json

import cv2
import numpy as np

from conftest import VTEST, run_cli
from pixlm.data import load_fashion_mnist
from pixlm.runtime import manifest as mf
from pixlm.runtime.recognizer import Recognizer

CLASSES = (("bags", 8), ("trousers", 1), ("boots", 9))


def class_folder(root, images, labels, first: int, count: int):
    for name, cls in CLASSES:
        (root / name).mkdir(parents=True)
        for i in np.flatnonzero(labels == cls)[first : first + count]:
            cv2.imwrite(str(root / name / f"{i}.png"), images[i])
    return root


def test_export_fits_the_gate_on_the_users_own_held_out_folder(tiny_checkpoint, tmp_path):
    fm = load_fashion_mnist(split="test")
    train = class_folder(tmp_path / "train", fm.images, fm.labels, 0, 60)
    held_out = class_folder(tmp_path / "held-out", fm.images, fm.labels, 60, 60)
    model = tmp_path / "own.pt"
    run_cli("pixlm", "train", "--data", str(train), "--init", str(tiny_checkpoint), "--epochs", "3",
            "--batch-size", "16", "--eval-images", "-1", "--threads", "2", "-o", str(model))  # fmt: skip
    out = tmp_path / "bundle"
    run_cli("pixlm-export", str(model), "--data", str(held_out), "--no-int8", "--no-dynamic",
            "--bench-seconds", "0", "--threads", "2", "-o", str(out))  # fmt: skip
    manifest = json.loads((out / mf.MANIFEST).read_text())
    assert manifest[mf.K_CALIBRATION][mf.C_DATA] == str(held_out)
    assert manifest[mf.K_OOD][mf.FP32]["images"] == 180 and manifest[mf.K_LABELS] == [
        "bags",
        "boots",
        "trousers",
    ]
    rec = Recognizer.open(out, backend="ort-cpu", precision="fp32", threads=2)
    own = [fm.images[i] for _, c in CLASSES for i in np.flatnonzero(fm.labels == c)[120:160]]
    street = [f for f in (cv2.VideoCapture(str(VTEST)).read()[1] for _ in range(40)) if f is not None]
    known = np.mean([r.known for r in rec.predict_batch(own)])
    assert known >= 0.8  # the user's classes, images neither training nor the gate saw
    assert np.mean([r.known for r in rec.predict_batch(street)]) <= 0.1

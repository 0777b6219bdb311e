"""TensorRT engines: built and compared with ONNX Runtime where TensorRT 10 is installed.

TensorRT cannot be installed on the build machines (it comes with JetPack); these tests skip
there, and the operator lint (tests/export/test_onnx.py) runs everywhere instead.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_EXPORT, run_cli
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it ships with JetPack 6)")


def test_engine_builds_and_matches_onnx_runtime(tiny_checkpoint, tmp_path):
    from pixlm.runtime.engine import OrtEngine
    from pixlm.runtime.engine_trt import TrtEngine

    out = tmp_path / "b"
    run_cli("pixlm-export", str(tiny_checkpoint), "-o", str(out), *TINY_EXPORT, "--tensorrt", "--fp16")
    bundle = Bundle.load(out)
    meta = json.loads((out / f"{mf.engine_filename('int8')}.json").read_text())
    assert (
        meta["tensorrt"] == trt.__version__ and meta["source_sha256"] == bundle.files["int8"].entry["sha256"]
    )
    ort, engine = OrtEngine(bundle.path("int8")), TrtEngine(bundle.path("tensorrt-int8"))
    ids = np.full((2, 5), bundle.vocabulary["bos"], dtype=np.int64)
    ids[:, 1:] = np.arange(8).reshape(2, 4)
    want, _ = ort.prefill(ids)
    got, past = engine.prefill(ids)
    assert np.abs(got - want).max() < 0.05
    step, _ = engine.run(ids[:, :1], past)
    assert step.shape == (2, 1, bundle.vocabulary["size"])

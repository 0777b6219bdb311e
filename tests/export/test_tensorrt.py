"""TensorRT engines: built and compared with ONNX Runtime where TensorRT 10 is installed; built and
gated on the simulated TensorRT (tests/trt_simulator.py) everywhere else.

TensorRT cannot be installed on the build machines (it comes with JetPack); the test on real
TensorRT skips there, and the operator lint (tests/export/test_onnx.py) runs everywhere instead.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_EXPORT, run_cli
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import Bundle
from pixlm.runtime.io_spec import with_bos


def test_engine_builds_and_matches_onnx_runtime(tiny_checkpoint, tmp_path):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed (it ships with JetPack 6)")
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
    ids = with_bos(bundle.vocabulary["bos"], np.arange(8).reshape(2, 4))
    want, _ = ort.prefill(ids)
    got, past = engine.prefill(ids)
    assert np.abs(got - want).max() < 0.05
    step, _ = engine.run(ids[:, :1], past)
    assert step.shape == (2, 1, bundle.vocabulary["size"])
    for key in ("tensorrt-int8", "tensorrt-fp16"):
        assert bundle.gate_source(key) == key and key in bundle.gates  # refitted on this GPU


def test_each_engine_gets_a_gate_fitted_on_its_own_outputs(tiny_checkpoint, tmp_path, monkeypatch):
    """Before: the engines reused their source ONNX file's gate (the INT8 engine the QDQ file's,
    measured on ONNX Runtime's CPU; the FP16 engine the fp32 file's), and the manifest did not say
    so. Now the export runs the held-out images through each engine it builds and fits the engine's
    own gate on what the engine outputs; ``gate_source`` names it. On the simulated TensorRT, whose
    FP16 and INT8 engines round their outputs to float16 as real ones differ from their ONNX file."""
    import trt_simulator

    from pixlm.export import measure
    from pixlm.export.pipeline import ExportOptions, run_export
    from pixlm.runtime.engine_trt import TrtEngine
    from pixlm.runtime.novelty import OODGate
    from pixlm.runtime.recognizer import Recognizer

    trt_simulator.install(monkeypatch)
    passes = []  # (engine, seqs, labels, gate inputs) of every held-out pass: the real function, recorded
    real_pass = measure.held_out_pass

    def recorded(engine, seqs, labels, tokenizer, **kw):
        acc, feats = real_pass(engine, seqs, labels, tokenizer, **kw)
        passes.append((engine, seqs, labels, feats))
        return acc, feats

    monkeypatch.setattr(measure, "held_out_pass", recorded)
    out = tmp_path / "b"
    opts = ExportOptions(
        out_dir=out,
        checkpoint=tiny_checkpoint,
        dynamic=False,
        tensorrt=True,
        fp16=True,
        eval_images=200,
        calib_images=64,
        max_drop=2,
        threads=2,
        bench_seconds=0,
        max_batch=8,
    )
    lines: list[str] = []
    run_export(opts, echo=lines.append)
    bundle = Bundle.load(out)
    engine_passes = {p[0].path.name: p for p in passes if isinstance(p[0], TrtEngine)}
    for key, source in (("tensorrt-int8", mf.INT8), ("tensorrt-fp16", mf.FP32)):
        assert bundle.files[key].entry.get(mf.F_GATE_SOURCE) == key, f"{key} has no gate of its own"
        assert bundle.gate_source(key) == key and bundle.files[source].entry[mf.F_GATE_SOURCE] == source
        gate, onnx_gate = bundle.gates[key], bundle.gates[source]
        _, seqs, labels, feats = engine_passes[bundle.path(key).name]
        again = OODGate.fit(feats, opts.ood_accept)
        assert np.array_equal(gate.mean, again.mean) and gate.threshold == again.threshold
        assert gate.images == onnx_gate.images == len(seqs) == 200  # the same held-out images
        assert not np.allclose(gate.mean, onnx_gate.mean, rtol=1e-6, atol=0)  # not the ONNX file's
        # the features it was fitted on are what the built engine gives for those images
        engine = TrtEngine(bundle.path(key))
        _, fresh = real_pass(engine, seqs, labels, bundle.tokenizer, batch_size=8)
        engine.close()
        assert np.allclose(fresh.summary, feats.summary, atol=1e-9)
        assert np.allclose(fresh.head, feats.head, atol=1e-9) and (fresh.classes == feats.classes).all()
        assert 0.85 <= gate.known(fresh).mean() <= 1.0
        assert bundle.metrics[key][mf.M_ACCURACY] > 0.3
    assert any(line.startswith("✓ gate tensorrt-int8") for line in lines), lines
    rec = Recognizer.open(out, backend="tensorrt")  # the engine runs with its own gate
    assert rec.file_key == "tensorrt-int8" and rec.gate is rec.bundle.gates["tensorrt-int8"]

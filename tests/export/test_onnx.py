"""ONNX export, validation and quantization of the tiny real model, on real Fashion-MNIST images."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from pixlm import checkpoint
from pixlm.data import load_fashion_mnist
from pixlm.export import quantize, tensorrt, validate
from pixlm.export.onnx_export import export_onnx
from pixlm.model import PixLM, PixLMConfig
from pixlm.runtime import io_spec as spec
from pixlm.runtime import manifest as mf
from pixlm.runtime.engine import OrtEngine


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    model, tok, _ = checkpoint.load(tiny_checkpoint)
    return model, tok


@pytest.fixture(scope="module")
def seqs(tiny):
    """[BOS, tokens] of the first 64 real test images."""
    _, tok = tiny
    return spec.with_bos(tok.bos, tok.encode_prepared(load_fashion_mnist(split="test").images[:64]))


@pytest.fixture(scope="module")
def fp32_path(tiny, tmp_path_factory):
    return export_onnx(tiny[0], tmp_path_factory.mktemp("onnx") / "model.fp32.onnx")


def test_onnx_follows_the_contract(tiny, fp32_path):
    model, _ = tiny
    L = model.cfg.n_layer
    proto = onnx.load(str(fp32_path))
    assert [i.name for i in proto.graph.input] == spec.input_names(L)
    assert [o.name for o in proto.graph.output] == spec.output_names(L)
    assert {o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")} == {spec.OPSET}
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    hs = model.cfg.d_model // model.cfg.n_head
    assert dims(proto.graph.input[0]) == [spec.BATCH, spec.SEQ]
    assert dims(proto.graph.input[1]) == [spec.BATCH, model.cfg.n_head, spec.PAST, hs]
    assert dims(proto.graph.output[0]) == [spec.BATCH, spec.SEQ, model.cfg.vocab_size]
    axes = spec.DecoderIO.from_config(model.cfg.to_dict()).dynamic_axes()
    for v in [*proto.graph.input, *proto.graph.output]:  # every symbolic dimension as the spec declares
        assert {i: d for i, d in enumerate(dims(v)) if isinstance(d, str)} == axes[v.name]
    # one self-contained file: no initializer stored outside it, nothing written beside it
    assert all(i.data_location != onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)
    assert sorted(p.name for p in fp32_path.parent.iterdir()) == [fp32_path.name]
    onnx.checker.check_model(str(fp32_path), full_check=True)


def test_moved_export_names_still_import_with_a_warning(tiny):
    from pixlm.export import onnx_export, tensorrt

    cfg = tiny[0].cfg.to_dict()
    with pytest.warns(DeprecationWarning, match="onnx_export.dynamic_axes moved to pixlm.runtime.io_spec"):
        axes = onnx_export.dynamic_axes(cfg["n_layer"])
    assert axes == spec.DecoderIO.from_config(cfg).dynamic_axes()
    with pytest.warns(DeprecationWarning, match="tensorrt.profiles moved to pixlm.runtime.io_spec"):
        shapes = tensorrt.profiles(cfg, 8)
    assert shapes == spec.DecoderIO.from_config(cfg).trt_profiles(8)


def test_validation_passes_on_real_images(tiny, fp32_path, seqs):
    m = validate.validate(tiny[0], OrtEngine(fp32_path, threads=1), seqs)
    assert m[mf.M_MAX_ABS_DIFF] <= spec.ATOL_FP32
    assert m[mf.M_KV_MAX_ABS_DIFF] <= spec.ATOL_FP32
    assert m[mf.M_LABEL_AGREEMENT] == 1.0


def test_dropout_model_exports_in_eval_mode(tmp_path, seqs):
    """Regression: the exporter restored its wrapper's (training) mode onto the model afterwards."""
    model = PixLM(
        PixLMConfig(n_codes=64, n_labels=10, grid_h=7, grid_w=7, n_layer=1, n_head=2, d_model=16, dropout=0.1)
    ).eval()
    path = export_onnx(model, tmp_path / "m.onnx")
    assert not model.training
    validate.validate(model, OrtEngine(path, threads=1), seqs[:8])


def test_engine_decode_matches_prefill(fp32_path, seqs):
    engine = OrtEngine(fp32_path, threads=1)
    full, _ = engine.prefill(seqs[:4])
    logits, past = engine.prefill(seqs[:4, :10])
    steps = [logits]
    for t in range(10, seqs.shape[1]):
        logits, past = engine.run(seqs[:4, t : t + 1], past)
        steps.append(logits)
    assert past[0][0].shape[2] == seqs.shape[1]
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=spec.ATOL_FP32)


def test_perturbed_weight_raises_tolerance_error(tiny, fp32_path, seqs, tmp_path):
    proto = onnx.load(str(fp32_path))
    init = next(i for i in proto.graph.initializer if i.name.endswith("tok_emb.weight"))
    w = numpy_helper.to_array(init).copy()
    w += np.random.default_rng(0).normal(0, 1e-2, w.shape).astype(w.dtype)  # (a constant: LayerNorm eats it)
    init.CopyFrom(numpy_helper.from_array(w, init.name))
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(validate.ToleranceError) as err:
        validate.validate(tiny[0], OrtEngine(bad, threads=1), seqs)
    assert err.value.max_abs_diff > spec.ATOL_FP32
    assert "max |Δ|" in str(err.value) and f"{spec.ATOL_FP32:.3g}" in str(err.value)
    assert isinstance(err.value, validate.ValidationError) and isinstance(err.value, ValueError)


def test_missing_output_raises(tiny, fp32_path, seqs, tmp_path):
    proto = onnx.load(str(fp32_path))
    last = spec.present_value(tiny[0].cfg.n_layer - 1)
    keep = [o for o in proto.graph.output if o.name != last]
    del proto.graph.output[:]
    proto.graph.output.extend(keep)
    bad = tmp_path / "no_present.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ValueError, match=last):  # OrtEngine refuses it before validation
        OrtEngine(bad)
    engine = OrtEngine(fp32_path, threads=1)
    other = dataclasses.replace(tiny[0].cfg, n_layer=tiny[0].cfg.n_layer + 1)
    with pytest.raises(validate.MissingOutputError) as err:
        validate.check_io(engine, other)
    assert spec.past_key(other.n_layer - 1) in err.value.missing


def test_kv_shape_mismatch_raises_shape_error(tiny, fp32_path):
    cfg = dataclasses.replace(tiny[0].cfg, n_head=tiny[0].cfg.n_head * 2)
    with pytest.raises(validate.ShapeError) as err:
        validate.check_io(OrtEngine(fp32_path, threads=1), cfg)
    assert err.value.got != err.value.expected


def test_int8_quantizes_only_weight_matmuls(tiny, fp32_path, seqs, tmp_path):
    model, _ = tiny
    names = quantize.weight_matmuls(onnx.load(str(fp32_path)))
    assert len(names) == 4 * model.cfg.n_layer + 1  # qkv, attn proj, fc, mlp proj per block; head
    out = tmp_path / "model.int8.onnx"
    assert quantize.quantize_qdq(fp32_path, out, seqs, model.cfg.to_dict()) == len(names)
    proto = onnx.load(str(out))
    produced_by = {o: n for n in proto.graph.node for o in n.output}
    for n in proto.graph.node:  # softmax and the mask path stay float
        if n.op_type == "Softmax":
            assert produced_by[n.input[0]].op_type != "DequantizeLinear"
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    zero_points = [
        inits[n.input[2]] for n in proto.graph.node if n.op_type == "QuantizeLinear" and len(n.input) > 2
    ]
    assert zero_points and all(z.dtype == np.int8 and not z.any() for z in zero_points)  # symmetric
    assert tensorrt.lint_onnx(out)["problems"] == []
    m = validate.compare_logits(model, OrtEngine(out, threads=1), seqs)
    assert 0 < m < 1.0  # quantized: not identical, not broken


def test_too_few_calibration_images(tiny, fp32_path, seqs, tmp_path):
    with pytest.raises(quantize.CalibrationError, match="at least"):
        quantize.quantize_qdq(fp32_path, tmp_path / "x.onnx", seqs[:4], tiny[0].cfg.to_dict())


def test_lint_flags_what_tensorrt_cannot_parse(fp32_path, tmp_path):
    assert tensorrt.lint_onnx(fp32_path)["problems"] == []
    dyn = tmp_path / "dyn.onnx"
    quantize.quantize_dynamic_int8(fp32_path, dyn)
    problems = " ".join(tensorrt.lint_onnx(dyn)["problems"])
    assert "DynamicQuantizeLinear" in problems and "MatMulInteger" in problems


def test_attention_chunks_are_exact_for_every_split(fp32_path, seqs):
    """The exported attention multiplies each block of queries only with the keys it can see
    (``sdk/model.py _causal_chunks``); any split of a sequence into prefix + rest, including
    pieces shorter than the number of chunks, must equal one full prefill."""
    from pixlm.model import ONNX_QUERY_CHUNKS

    proto = onnx.load(str(fp32_path))
    softmaxes = [n for n in proto.graph.node if n.op_type == "Softmax"]
    assert len(softmaxes) == ONNX_QUERY_CHUNKS * 2  # the tiny model has 2 layers
    engine = OrtEngine(fp32_path, threads=1)
    full, _ = engine.prefill(seqs[:3])
    for split, step in ((1, 1), (5, 2), (7, 3), (30, 5), (48, 1)):
        pieces, past, pos = [], None, 0
        for end in (split, *range(split + step, seqs.shape[1] + step, step)):
            logits, past = engine.run(seqs[:3, pos:end], past)
            pieces.append(logits)
            pos = end
        np.testing.assert_allclose(np.concatenate(pieces, axis=1), full, atol=spec.ATOL_FP32)


def test_prefix_reuse_deviation_float_exact_dynamic_measured(tiny, fp32_path, seqs, tmp_path):
    from pixlm.export import measure

    n_labels = tiny[0].cfg.n_labels
    diff, agree = measure.prefix_reuse_deviation(OrtEngine(fp32_path, threads=1), seqs[:16], n_labels)
    assert diff <= spec.ATOL_FP32 and agree == 1.0
    dyn = tmp_path / "dyn.onnx"
    quantize.quantize_dynamic_int8(fp32_path, dyn)
    diff, agree = measure.prefix_reuse_deviation(OrtEngine(dyn, threads=1), seqs[:16], n_labels)
    assert spec.ATOL_FP32 < diff < 1.0  # per-call activation ranges: not exact, not broken
    assert 0.5 <= agree <= 1.0

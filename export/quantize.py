"""INT8 versions of the FP32 ONNX file, with ONNX Runtime's quantization tools.

Only the *weight* MatMuls are quantized (a MatMul whose second input is a weight initializer:
the qkv, attention-output, MLP and head projections). The attention MatMuls (Q K^T and A V),
the mask ``Where(mask, 0, -inf)`` + Add, Softmax, LayerNorm and the residual adds stay float:
with ONNX Runtime's default static quantization a model of this shape fell to chance accuracy,
because the huge mask constant and the Softmax inputs wreck MinMax calibration ranges.

* :func:`quantize_qdq` - static, explicit QuantizeLinear/DequantizeLinear pairs, symmetric int8
  activations and weights (zero points 0, what TensorRT requires), per-channel weights, calibrated
  on real *training* images. ONNX Runtime and TensorRT both run it.
* :func:`quantize_dynamic_int8` - int8 weights, activations quantized per batch at run time
  (DynamicQuantizeLinear + MatMulInteger). CPU only: TensorRT's parser has no DynamicQuantizeLinear.
  Its activation ranges follow each call's inputs, so prefix reuse is not bit-exact with it; the
  exporter measures how far (``prefix_reuse_max_abs_logit_diff`` in the manifest). The static QDQ
  file is exact under reuse.

What else was measured on the shipped model (ORT 1.32, AVX-512 VNNI, 1 thread, best-of
CPU time at batch 16, relative to that run's plain-attention fp32 file) and not kept, so the
next attempt starts from numbers: dynamic INT8 of *all* MatMuls, attention products included
(``MatMulConstBOnly: False``): 1.51x vs 1.50x weight-only on the plain graph, 1.73x vs 1.79x on the
chunked one (quantizing K and V on every call costs what the int8 product saves); uint8 weights
1.12x; per-tensor weights 1.50x (no gain over per-channel); static QOperator (QLinearMatMul, uint8
activations) 1.45x; static QDQ of all MatMuls 1.21x, of weight MatMuls 1.22x (int8 activations) /
1.42x (uint8); ONNX Runtime's fused MultiHeadAttention (contrib op, with past/present KV):
fp32 0.93x, under dynamic INT8 1.51x vs 1.49x: no gain, and TensorRT cannot parse it.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)

from pixlm.runtime.io_spec import DecoderIO

MIN_CALIBRATION_IMAGES = 32  # fewer gives activation ranges that depend on a handful of images


class CalibrationError(ValueError):
    """Not enough (or unusable) calibration data."""


@contextmanager
def _quiet():
    """ONNX Runtime's quantizer logs advice on the root logger at WARNING for every call."""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul/Gemm nodes whose B input is a 2-D weight (initializer or Constant)."""
    weights = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    weights |= {
        n.output[0]
        for n in model.graph.node
        if n.op_type == "Constant" and any(a.name == "value" and len(a.t.dims) == 2 for a in n.attribute)
    }
    return [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]


def _named(path: Path) -> onnx.ModelProto:
    """Load ``path`` and give every unnamed node a name (node selection works by name)."""
    model = onnx.load(str(path))
    for i, n in enumerate(model.graph.node):
        if not n.name:
            n.name = f"{n.op_type}_{i}"
    return model


class _Calibration(CalibrationDataReader):
    """CalibrationDataReader over prefill batches: [BOS, image tokens] with an empty cache."""

    def __init__(self, seqs: np.ndarray, spec: DecoderIO, batch_size: int):
        self.batches = [spec.step_feed(seqs[i : i + batch_size]) for i in range(0, len(seqs), batch_size)]
        self._it = iter(self.batches)

    def get_next(self) -> dict | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.batches)


def quantize_qdq(
    fp32_path: str | os.PathLike,
    out_path: str | os.PathLike,
    calib_seqs: np.ndarray,
    model_cfg: dict,
    batch_size: int = 32,
) -> int:
    """Static QDQ INT8 of the weight MatMuls, calibrated on ``calib_seqs``; returns nodes quantized."""
    if len(calib_seqs) < MIN_CALIBRATION_IMAGES:
        raise CalibrationError(
            f"{len(calib_seqs)} calibration images, need at least {MIN_CALIBRATION_IMAGES} "
            "(raise --calib-images, or use a larger --data training split)"
        )
    model = _named(Path(fp32_path))
    nodes = weight_matmuls(model)
    reader = _Calibration(calib_seqs, DecoderIO.from_config(model_cfg), batch_size)
    with _quiet():
        quantize_static(
            model,
            str(out_path),
            reader,
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=nodes,
            use_external_data_format=False,
            extra_options={
                "ActivationSymmetric": True,  # zero point 0: TensorRT's Q/DQ requirement
                "WeightSymmetric": True,
                "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # weight (in, out): one scale per output
            },
        )
    _finish(out_path, "static QDQ INT8 (weight MatMuls), pixlm bundle")
    return len(nodes)


def quantize_dynamic_int8(fp32_path: str | os.PathLike, out_path: str | os.PathLike) -> int:
    """Dynamic INT8 of the weight MatMuls (CPU); returns the number of nodes quantized."""
    model = _named(Path(fp32_path))
    nodes = weight_matmuls(model)
    with _quiet():
        quantize_dynamic(
            model,
            str(out_path),
            weight_type=QuantType.QInt8,
            per_channel=True,
            nodes_to_quantize=nodes,
            use_external_data_format=False,
            extra_options={"MatMulConstBOnly": True},
        )
    _finish(out_path, "dynamic INT8 (weight MatMuls), pixlm bundle")
    return len(nodes)


def _finish(path: str | os.PathLike, doc: str) -> None:
    model = onnx.load(str(path))
    model.producer_name, model.doc_string = "pixlm-export", doc
    onnx.save(model, str(path))
    onnx.checker.check_model(str(path), full_check=True)

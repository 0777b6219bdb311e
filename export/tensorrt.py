"""TensorRT: an operator lint that runs anywhere, and engine builds where TensorRT 10.x is installed.

TensorRT is imported lazily and only here and in ``pixlm.runtime.engine_trt``. It cannot be
pip-installed on the build machines; on a Jetson it comes with JetPack 6 (TensorRT 10.x).

Engines are built from the QDQ ONNX file (explicit quantization: the Q/DQ scales computed by
``quantize.py`` are used as they are, no TensorRT calibrator) or from the FP32 file for FP16/FP32
engines. Three optimization profiles, prefill, decode and extend (``DecoderIO.trt_profiles`` in
``pixlm.runtime.io_spec``, where the runtime reads them too), so one engine serves every call the
recognizer makes.

The engine's sidecar JSON (``model.int8.engine.json``) records the TensorRT version, the GPU and
its compute capability, the precision, the profiles and the sha256 of the source ONNX file;
``pixlm.runtime.engine_trt`` refuses an engine built for another GPU or TensorRT version.

An engine's numbers are not its ONNX file's (FP16 float layers, TensorRT's own INT8 kernels), so
the open-set gate fitted on the ONNX file's outputs does not fit the engine: :func:`held_out_pass`
runs the held-out images through the built engine on this GPU, and the export fits the engine's own
gate on what it outputs (its manifest entry's ``gate_source`` is then the engine itself).
"""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import numpy as np
import onnx

from pixlm.export import measure
from pixlm.runtime.bundle import sha256_of
from pixlm.runtime.engine_trt import TensorRTUnavailable, current_device, import_tensorrt
from pixlm.runtime.io_spec import DecoderIO
from pixlm.runtime.novelty import GateInputs

# ONNX operators TensorRT 10's ONNX parser supports ("Y" rows of onnx-tensorrt docs/operators.md,
# TensorRT 10.x, opsets 9..20 for 10.0). Ops added in 10.15 (Attention, RotaryEmbedding,
# RMSNormalization, TensorScatter) are left out: JetPack 6 ships TensorRT 10.3.
TRT10_OPSETS = (9, 20)
TRT10_OPS = frozenset(
    """Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
    BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose
    Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp
    Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool
    GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU
    HammingWindow HannWindow HardSigmoid HardSwish Hardmax Identity If ImageScaler
    InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
    Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min
    Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu
    QuantizeLinear RandomNormal RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal
    ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd
    ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round STFT
    ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size
    Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
    ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor""".split()
)
DEFAULT_WORKSPACE_MB = 1024


class LintError(ValueError):
    """An ONNX graph TensorRT 10's parser would reject."""


class EngineBuildError(RuntimeError):
    """TensorRT parsed the model but could not build an engine (its log says why)."""


def lint_onnx(path: str | os.PathLike) -> dict:
    """Check ``path`` against TensorRT 10's ONNX parser: ops, opset, Q/DQ zero points.

    Returns ``{"op_types": [...], "problems": [...]}``; an empty ``problems`` means it should parse.
    """
    from onnx import numpy_helper

    model = onnx.load(str(path))
    problems = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not TRT10_OPSETS[0] <= opset <= TRT10_OPSETS[1]:
        problems.append(f"opset {opset} outside TensorRT 10's {TRT10_OPSETS[0]}..{TRT10_OPSETS[1]}")
    ops = sorted({(n.domain or "", n.op_type) for n in model.graph.node})
    for domain, op in ops:
        if domain not in ("", "ai.onnx"):
            problems.append(f"{domain}::{op} (custom domain) is not an ONNX operator TensorRT parses")
        elif op not in TRT10_OPS:
            problems.append(f"{op} is not supported by TensorRT 10's ONNX parser")
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2 and n.input[2] in inits:
            zp = numpy_helper.to_array(inits[n.input[2]])
            if zp.any():
                problems.append(f"{n.name}: non-zero zero point (TensorRT needs symmetric quantization)")
            if zp.dtype.name != "int8":
                problems.append(f"{n.name}: {zp.dtype.name} quantization (TensorRT needs int8)")
    return {"op_types": [op for _, op in ops], "problems": problems}


def _precision_flags(precision: str) -> list[str]:
    """Builder flags for ``precision``: FP16 only for an "fp16" engine (or the float layers of an
    INT8 one); INT8 for the Q/DQ model's explicit scales. TensorRT 10.12 deprecates these weak-typing
    flags (11 removes them), which is why the supported range stops at 10.x (``TRT_RANGE``)."""
    return {"fp16": ["FP16"], "int8": ["FP16", "INT8"], "fp32": []}[precision]


def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike,
    model_cfg: dict,
    precision: str,
    max_batch: int = 16,
    workspace_mb: int = DEFAULT_WORKSPACE_MB,
    timing_cache: str | os.PathLike | None = None,
) -> dict:
    """Build a TensorRT engine from ``onnx_path``; write it and its sidecar JSON; return the metadata.

    ``precision``: "int8" (a QDQ ONNX file; FP16 allowed for the float layers), "fp16" or "fp32".
    ``timing_cache``: read if present and written back, so rebuilds on one device are fast.
    """
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise LintError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    for flag in _precision_flags(precision):
        config.set_flag(getattr(trt.BuilderFlag, flag))
    shapes = DecoderIO.from_config(model_cfg).trt_profiles(max_batch)
    for p in shapes:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in p["shapes"].items():
            profile.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(profile)
    cache_path = Path(timing_cache) if timing_cache else None
    blob = cache_path.read_bytes() if cache_path and cache_path.is_file() else b""
    config.set_timing_cache(config.create_timing_cache(blob), ignore_mismatch=False)
    t = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise EngineBuildError(f"TensorRT could not build an engine from {onnx_path} (see its log above)")
    engine_path = Path(engine_path)
    engine_path.write_bytes(bytes(serialized))
    if cache_path:
        cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    meta = {
        "tensorrt": trt.__version__,
        **current_device(),
        "precision": precision,
        "max_batch": max_batch,
        "workspace_mb": workspace_mb,
        "profiles": [
            {"name": p["name"], "shapes": {k: [list(s) for s in v] for k, v in p["shapes"].items()}}
            for p in shapes
        ],
        "source_onnx": Path(onnx_path).name,
        "source_sha256": sha256_of(onnx_path),
        "build_seconds": round(time.perf_counter() - t, 1),
    }
    Path(f"{engine_path}.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return meta


def held_out_pass(
    engine_path: str | os.PathLike, seqs: np.ndarray, labels: np.ndarray, tokenizer, max_batch: int
) -> tuple[float, GateInputs]:
    """Label accuracy and the open-set gate's inputs of held-out ``seqs`` (B, N+1) through the
    built engine (the runtime's ``TrtEngine``, batches of at most the engine's ``max_batch``), as
    :func:`pixlm.export.measure.held_out_pass` computes them on ONNX Runtime: fit the engine's gate
    on these, with the same ``OODGate.fit``, not on its source ONNX file's outputs."""
    from pixlm.runtime.engine_trt import TrtEngine

    engine = TrtEngine(engine_path)
    try:
        desc = f"gate {Path(engine_path).name}"
        return measure.held_out_pass(engine, seqs, labels, tokenizer, batch_size=max_batch, desc=desc)
    finally:
        engine.close()


def __getattr__(name: str):  # PEP 562: moved to io_spec, importable here for one version
    if name == "profiles":
        warnings.warn(
            "pixlm.export.tensorrt.profiles moved to pixlm.runtime.io_spec; use "
            "DecoderIO.from_config(model_cfg).trt_profiles(max_batch)",
            DeprecationWarning,
            stacklevel=2,
        )
        return lambda model_cfg, max_batch: DecoderIO.from_config(model_cfg).trt_profiles(max_batch)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TensorRTUnavailable",
    "LintError",
    "EngineBuildError",
    "lint_onnx",
    "build_engine",
    "held_out_pass",
]

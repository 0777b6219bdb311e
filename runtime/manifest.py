"""Every name in a pixlm bundle, declared once: the exporter writes these, the runtime reads them.

A bundle is a folder::

    manifest.json          this schema (SCHEMA_VERSION)
    model.fp32.onnx        one self-contained ONNX file per precision
    model.int8.onnx        QDQ (explicit quantization: ONNX Runtime and TensorRT both consume it)
    ...                    optional: model.int8-dynamic.onnx, TensorRT engines

The ONNX I/O contract (tensor names, axes, the KV layout, opset, feeds, TensorRT profiles) has
its own module, ``pixlm.runtime.io_spec``; the manifest's ``io`` section records it.
"""

from __future__ import annotations

import warnings

SCHEMA = "pixlm-bundle"
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"

# The ONNX contract's names moved to pixlm.runtime.io_spec: still importable from here for one
# version, with a DeprecationWarning.
_MOVED_TO_IO_SPEC = (
    "OPSET",
    "ATOL_FP32",
    "INPUT_IDS",
    "LOGITS",
    "BATCH",
    "SEQ",
    "PAST",
    "KV_LAYOUT",
    "past_key",
    "past_value",
    "present_key",
    "present_value",
    "input_names",
    "output_names",
)


def __getattr__(name: str):  # PEP 562
    if name in _MOVED_TO_IO_SPEC:
        from pixlm.runtime import io_spec

        warnings.warn(
            f"pixlm.runtime.manifest.{name} moved to pixlm.runtime.io_spec.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(io_spec, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# manifest.json keys (top level)
K_SCHEMA = "schema"
K_SCHEMA_VERSION = "schema_version"
K_MODEL = "model"  # PixLMConfig as a dict: n_codes, n_labels, grid_h, grid_w, n_layer, n_head, d_model, ...
K_TOKENIZER = "tokenizer"  # TokenizerConfig as a dict, palette included
K_LABELS = "labels"  # label names, index i <-> token n_codes + 1 + i
K_VOCAB = "vocabulary"  # {"n_codes", "bos", "first_label", "size"}
K_IO = "io"  # pixlm.runtime.io_spec.DecoderIO.io_record(), plus "exporter" and "tensorrt_lint"
K_FILES = "files"  # {"fp32": {"path", "sha256", "precision", "format", "bytes"}, "int8": {...}, ...}
K_METRICS = "metrics"  # {"fp32": {"accuracy", "max_abs_logit_diff", ...}, "int8": {...}}
K_PRODUCER = "producer"  # {"pixlm", "torch", "onnx", "onnxruntime", "tensorrt"}
K_RECOMMENDED = "recommended"  # {"cpu": fastest file at batch 16 that passed the gate, "tensorrt": key}
# {"data", "split", "range": [file, first, end], "images", "report_split"}: the held-out images the
# export fitted the gate, the INT8 gate and its choices on; reports use "report_split", never these
K_CALIBRATION = "calibration"
C_DATA, C_SPLIT, C_RANGE, C_IMAGES, C_REPORT_SPLIT = "data", "split", "range", "images", "report_split"
K_OOD = "ood"  # {file key: pixlm.runtime.novelty.OODGate.to_dict()}: the "unknown" gate per file
# a scene model's alert rules (pixlm.runtime.alerts.AlertRules.to_dict()): per-tile thresholds fitted
# on calibration frames of the camera's footage, persistence, life cycle, the grid and stride to run at
K_ALERTS = "alerts"
# sha256 of the manifest itself: canonical JSON (sorted keys, no spaces) of every key but this one,
# written by the exporter and checked on load (pixlm.runtime.bundle.manifest_sha256)
K_MANIFEST_SHA256 = "manifest_sha256"

# files: one entry per produced file, keyed by what it is
FP32, INT8, INT8_DYNAMIC = "fp32", "int8", "int8-dynamic"  # ONNX files


def exact_under_reuse(file_key: str) -> bool:
    """Whether a file's logits from a cached prefix equal a full pass: not for dynamic INT8, whose
    activation scales follow each call (the manifest's ``prefix_reuse_max_abs_logit_diff``)."""
    return "dynamic" not in file_key


TRT_PREFIX = "tensorrt-"  # TensorRT engines: "tensorrt-int8", "tensorrt-fp16"
F_PATH, F_SHA256, F_BYTES = "path", "sha256", "bytes"  # relative to the bundle folder
F_PRECISION, F_FORMAT = "precision", "format"  # "fp32" | "int8" | "fp16";  FORMAT_*
F_METADATA = "metadata"  # TensorRT: the engine's sidecar JSON, itself {path, sha256, bytes}
# key in "ood" of the gate this file uses: its own (fitted on its outputs; a TensorRT engine's is
# refitted on the engine when it is built). Bundles before it: engines used their source ONNX's.
F_GATE_SOURCE = "gate_source"
FORMAT_ONNX, FORMAT_TRT = "onnx", "tensorrt-engine"
QUANT_QDQ, QUANT_DYNAMIC = "qdq-static", "dynamic"  # F_QUANTIZATION of int8 ONNX files
F_QUANTIZATION = "quantization"

# metrics[file key]: what the exporter measured on that file
M_ACCURACY = "accuracy"  # label accuracy on the held-out split, 0..1
M_EVAL_IMAGES = "eval_images"
M_MAX_ABS_DIFF = "max_abs_logit_diff"  # vs PyTorch, full forward on validation images
M_KV_MAX_ABS_DIFF = "kv_max_abs_logit_diff"  # prefill + one-token decode vs full forward
M_LABEL_AGREEMENT = "label_agreement"  # fraction of images whose label argmax equals PyTorch's
M_MS_BATCH1 = "ms_per_frame_batch1"
M_FPS_BATCH16 = "frames_per_s_batch16"
# prefix reuse: logits of "prefill a prefix, then the rest on its cache" vs one full prefill, max |Δ|
# over prefixes of 1/4, 1/2 and 3/4 of the image. Float files: rounding (~1e-5). Dynamic INT8: its
# activation scales follow each call's inputs, so a reused prefix is not bit-exact; this says how far.
M_REUSE_MAX_ABS_DIFF = "prefix_reuse_max_abs_logit_diff"
M_REUSE_LABEL_AGREEMENT = "prefix_reuse_label_agreement"  # share of images whose label argmax is unchanged


def onnx_filename(key: str) -> str:
    """File name of an ONNX file in a bundle: ``model.fp32.onnx``, ``model.int8.onnx`` ..."""
    return f"model.{key}.onnx"


def engine_filename(precision: str) -> str:
    """File name of a TensorRT engine (``model.int8.engine``) and its sidecar (+ ``.json``)."""
    return f"model.{precision}.engine"

"""PixLM -> one self-contained ONNX file with a KV cache, per the contract in ``runtime/io_spec``.

Exporter: torch 2.13's TorchScript exporter (``torch.onnx.export(..., dynamo=False)``), pinned at
opset ``io_spec.OPSET`` = 17. Both torch exporters handle this model; this one was chosen because
it writes opset 17 directly (LayerNormalization is native from 17, and TensorRT 10 parses 9..20),
names nodes after module paths (``/m/blocks.0/attn/qkv/MatMul``, readable in Netron and in
quantization reports), writes one file with no ``.onnx.data`` side file, and exports in about a
tenth of a second where the dynamo exporter takes seconds. It is deprecated upstream since torch
2.9 but present in the pinned 2.13; its DeprecationWarning is silenced here.

The attention mask: SDPA's bool mask becomes ``Where(mask, 0, -inf)`` added to QK^T before
Softmax, then ``Where(IsNaN(p), 0, p)`` (fully masked rows). The mask path stays float in INT8
exports (see ``quantize.py``).

    input_ids (B, T) ─┐
    past.{i}.key/value (B, nh, P, hs) ─► KVWrapper ─► PixLM.forward ─► logits (B, T, V)
                                                                    └► present.{i}.* (B, nh, P+T, hs)
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import onnx
import torch

from pixlm.model import PixLM
from pixlm.runtime.io_spec import OPSET, DecoderIO

EXPORTER = "torchscript"  # recorded in the manifest's io section


class KVWrapper(torch.nn.Module):
    """Flat tensors in and out (what ONNX needs) around PixLM's list of (key, value) pairs."""

    def __init__(self, model: PixLM):
        super().__init__()
        self.m = model
        self.n_layer = model.cfg.n_layer

    def forward(self, input_ids: torch.Tensor, *past_flat: torch.Tensor) -> tuple[torch.Tensor, ...]:
        past = [(past_flat[2 * i], past_flat[2 * i + 1]) for i in range(self.n_layer)]
        logits, presents = self.m(input_ids, past)
        out = [logits]
        for k, v in presents:
            out += [k, v]
        return tuple(out)


def _dynamic_axes(n_layer: int) -> dict[str, dict[int, str]]:
    return DecoderIO(n_layer, 0, 0).dynamic_axes()  # the axes do not depend on the head sizes


def __getattr__(name: str):  # PEP 562: moved to io_spec, importable here for one version
    if name == "dynamic_axes":
        warnings.warn(
            "pixlm.export.onnx_export.dynamic_axes moved to pixlm.runtime.io_spec; use "
            "DecoderIO.from_config(model_cfg).dynamic_axes()",
            DeprecationWarning,
            stacklevel=2,
        )
        return _dynamic_axes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def export_onnx(model: PixLM, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write ``model`` to ``path`` (one file) and check it with ``onnx.checker`` (full check)."""
    path = Path(path)
    cfg = model.cfg
    model = model.eval()
    spec = DecoderIO.from_config(cfg.to_dict())
    # Example inputs with batch 2, 3 new tokens, 4 cached: no dimension is 1 or equal to another,
    # so the tracer cannot specialise a symbolic size to a constant.
    ids = torch.randint(0, cfg.n_codes, (2, 3))
    past = [torch.zeros(spec.kv_shape(2, 4)) for _ in spec.past_names]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            KVWrapper(model).eval(),  # eval: the exporter restores the wrapper's mode onto the model
            (ids, *past),
            str(path),
            input_names=spec.input_names,
            output_names=spec.output_names,
            dynamic_axes=spec.dynamic_axes(),
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    proto.producer_name, proto.doc_string = "pixlm-export", "PixLM decoder with KV cache (pixlm bundle)"
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)
    return path

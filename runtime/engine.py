"""Engines: one call that runs the exported decoder, with its KV cache, on some backend.

An :class:`Engine` takes new token ids and the cache from earlier calls and returns logits and
the extended cache, exactly like ``PixLM.forward`` but in numpy::

    logits, past = engine.prefill(ids)            # ids (B, T) int64 -> logits (B, T, vocab)
    logits, past = engine.run(next_ids, past)     # next_ids (B, 1): one more token per row

``past`` is a list with one ``(key, value)`` per layer, each ``(B, n_head, P, head_dim)``
float32 (``pixlm.runtime.manifest.KV_LAYOUT``). An empty cache has P = 0.

:class:`OrtEngine` runs an ONNX file from a bundle with ONNX Runtime; the exporter validates
every ONNX file through it, so the code checked at export time is the code the camera runs.
The TensorRT engine lives in ``pixlm.runtime.engine_trt`` (imported only when asked for).
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from pixlm.runtime import manifest as mf

KV = tuple[np.ndarray, np.ndarray]  # (key, value), each (B, n_head, P, head_dim) float32


class Engine(Protocol):
    """What a recognizer needs from a backend; shapes as in the module docstring."""

    n_layer: int
    n_head: int
    head_dim: int
    vocab_size: int

    def run(self, input_ids: np.ndarray, past: list[KV] | None = None) -> tuple[np.ndarray, list[KV]]:
        """input_ids (B, T) at positions P..P+T-1 -> logits (B, T, vocab), present cache (P+T)."""
        ...

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, list[KV]]:
        """``run`` with an empty cache."""
        ...


class OrtEngine:
    """An exported PixLM ONNX file (the contract in ``manifest``) in an ONNX Runtime session.

    ``providers``: ONNX Runtime execution providers, default CPU. ``threads``: intra-op threads
    (None = ONNX Runtime's default, one per core).
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = str(onnx_path)
        try:
            self.session = ort.InferenceSession(
                self.path, options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # ONNX Runtime raises its own types (InvalidProtobuf, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({first})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.n_layer = sum(1 for name in inputs if name.endswith(".key"))
        missing = [n for n in mf.input_names(self.n_layer) if n not in inputs]
        missing += [n for n in mf.output_names(self.n_layer) if n not in outputs]
        if missing:
            raise ValueError(f"{self.path}: not a pixlm decoder, missing inputs/outputs {missing}")
        if self.n_layer == 0:
            raise ValueError(f"{self.path}: no {mf.past_key(0)} input (no KV cache)")
        _, self.n_head, _, self.head_dim = inputs[mf.past_key(0)].shape  # static dims
        self.vocab_size = self.session.get_outputs()[outputs.index(mf.LOGITS)].shape[2]
        self._outputs = mf.output_names(self.n_layer)

    def empty_past(self, batch: int) -> list[KV]:
        """A cache holding nothing: P = 0."""
        z = np.zeros((batch, self.n_head, 0, self.head_dim), dtype=np.float32)
        return [(z, z)] * self.n_layer

    def run(self, input_ids: np.ndarray, past: list[KV] | None = None) -> tuple[np.ndarray, list[KV]]:
        input_ids = np.asarray(input_ids, dtype=np.int64)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {input_ids.shape}")
        if past is None:
            past = self.empty_past(input_ids.shape[0])
        if len(past) != self.n_layer:
            raise ValueError(f"past has {len(past)} layers, the model has {self.n_layer}")
        feed = {mf.INPUT_IDS: input_ids}
        for i, (k, v) in enumerate(past):
            feed[mf.past_key(i)] = np.asarray(k, dtype=np.float32)
            feed[mf.past_value(i)] = np.asarray(v, dtype=np.float32)
        out = self.session.run(self._outputs, feed)
        return out[0], [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(self.n_layer)]

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, list[KV]]:
        return self.run(input_ids, None)

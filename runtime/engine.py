"""Engines: one call that runs the exported decoder, with its KV cache, on some backend.

An :class:`Engine` takes new token ids and the cache from earlier calls and returns logits and
the extended cache, exactly like ``PixLM.forward`` but in numpy::

    logits, past = engine.prefill(ids)            # ids (B, T) int64 -> logits (B, T, vocab)
    logits, past = engine.run(next_ids, past)     # next_ids (B, 1): one more token per row

``past`` is a list with one ``(key, value)`` per layer, each ``(B, n_head, P, head_dim)``
float32 (``pixlm.runtime.io_spec``: names, layout, feeds). An empty cache has P = 0.

:class:`OrtEngine` runs an ONNX file from a bundle with ONNX Runtime; the exporter validates
every ONNX file through it, so the code checked at export time is the code the camera runs.
The TensorRT engine lives in ``pixlm.runtime.engine_trt`` (imported only when asked for).
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np

from pixlm.runtime.io_spec import KV, LOGITS, DecoderIO, input_names, output_names, past_key


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


# Most token positions one CPU call should hold (8 rows of the shipped model's BOS + 196). ONNX
# Runtime's CPU arena keeps the largest call's activations for the session's life: 16 rows held
# about 30 MB more than 8, and on a CPU they bought no speed (`pixlm run vtest.avi --grid 2x2`,
# --batch 8 against 16: 0.99x wall, best of 5; docs/performance.md). The streamer splits larger
# batches into calls of at most this many positions.
CPU_CALL_POSITIONS = 8 * 197


class OrtEngine:
    """An exported PixLM ONNX file (the contract in ``io_spec``) in an ONNX Runtime session.

    ``providers``: ONNX Runtime execution providers, default CPU. ``threads``: intra-op threads
    (None = ONNX Runtime's default, one per core). ``call_positions``: the most positions (rows x
    tokens) a streamer should put in one call: ``CPU_CALL_POSITIONS`` on the CPU, None (no limit
    of its own) on a GPU provider.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        providers: list[str] | None = None,
        threads: int | None = None,
    ):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # Memory patterns plan one arena block per input shape seen, and a stream's calls come in
        # many row counts: off, `pixlm run vtest.avi --grid 2x2` peaked 5 MiB lower, no slower.
        options.enable_mem_pattern = False
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.path = str(onnx_path)
        cpu_only = all(p == "CPUExecutionProvider" for p in (providers or ["CPUExecutionProvider"]))
        self.call_positions: int | None = CPU_CALL_POSITIONS if cpu_only else None
        try:
            self.session = ort.InferenceSession(
                self.path, options, providers=providers or ["CPUExecutionProvider"]
            )
        except Exception as e:  # ONNX Runtime raises its own types (InvalidProtobuf, Fail, ...)
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"{self.path}: ONNX Runtime cannot load it ({first})") from None
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        n_layer = DecoderIO.layers_in(inputs)
        missing = [n for n in input_names(n_layer) if n not in inputs]
        missing += [n for n in output_names(n_layer) if n not in outputs]
        if missing:
            raise ValueError(f"{self.path}: not a pixlm decoder, missing inputs/outputs {missing}")
        if n_layer == 0:
            raise ValueError(f"{self.path}: no {past_key(0)} input (no KV cache)")
        _, n_head, _, head_dim = inputs[past_key(0)].shape  # static dims
        vocab_size = self.session.get_outputs()[outputs.index(LOGITS)].shape[2]
        self.io = DecoderIO(n_layer, n_head, head_dim, vocab_size)
        self.n_layer, self.n_head, self.head_dim, self.vocab_size = n_layer, n_head, head_dim, vocab_size

    def empty_past(self, batch: int) -> list[KV]:
        """A cache holding nothing: P = 0."""
        return self.io.empty_past(batch)

    def run(self, input_ids: np.ndarray, past: list[KV] | None = None) -> tuple[np.ndarray, list[KV]]:
        out = self.session.run(self.io.output_names, self.io.step_feed(input_ids, past))
        return out[0], [(out[1 + 2 * i], out[2 + 2 * i]) for i in range(self.n_layer)]

    def prefill(self, input_ids: np.ndarray) -> tuple[np.ndarray, list[KV]]:
        return self.run(input_ids, None)

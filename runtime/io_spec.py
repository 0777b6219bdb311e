"""The I/O contract between the exported ONNX decoder and its engines, declared once.

Like Hugging Face Optimum's ``OnnxConfig``, one object built from the model config says what goes
in and what comes out, and every piece of code that touches the graph reads it: the exporter
(names and dynamic axes), the validator, INT8 calibration, ONNX Runtime's and TensorRT's engines
(feeds, the empty cache, the optimization profiles), the parity check and the manifest's ``io``.
The names are Optimum's decoder names, so common tooling recognises them:

    =============================  =======  ================================================
    name                           dtype    shape
    =============================  =======  ================================================
    input_ids                      int64    [batch_size, sequence_length]
    past_key_values.{i}.key        float32  [batch_size, n_head, past_sequence_length, head_dim]
    past_key_values.{i}.value      float32  [batch_size, n_head, past_sequence_length, head_dim]
    logits                         float32  [batch_size, sequence_length, vocab_size]
    present.{i}.key                float32  [batch_size, n_head, past + sequence_length, head_dim]
    present.{i}.value              float32  same as present.{i}.key
    =============================  =======  ================================================

``past_sequence_length`` may be 0 (prefill). Positions continue from the past length, so feeding
a sequence in pieces equals feeding it whole. Recognition is one call on "BOS + tokens + an empty
cache"; later calls go on from the cache it returns::

    tokens (B, N) ─► with_bos ─► input_ids (B, N+1) ─┐
                           empty_past(B), P = 0 ─────┴─► feed ─► engine ─► logits, present (P = N+1)
    new ids (B, T) + a present as past ─────────────────► feed ─► engine ─► logits, present (P + T)

TensorRT fixes the shapes it accepts when it builds an engine: one optimization profile per kind
of call (:meth:`DecoderIO.trt_profiles`; T = BOS + every image token, B = the largest batch)::

    profile 0  prefill   input_ids [1..B, 1..T]     past [1..B, nh, 0, hs]        (empty cache)
    profile 1  decode    input_ids [1..B, 1]        past [1..B, nh, 1..T-1, hs]   (completion)
    profile 2  extend    input_ids [1..B, 1..T-1]   past [1..B, nh, 1..T-1, hs]   (prefix reuse)

:class:`ProfileRules` reads them back from an engine's sidecar and says which call each admits.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

OPSET = 17  # pinned; see docs/export.md, "The ONNX contract"
ATOL_FP32 = 1e-4  # ONNX Runtime vs PyTorch, max |delta logits|

INPUT_IDS = "input_ids"
LOGITS = "logits"
BATCH, SEQ, PAST = "batch_size", "sequence_length", "past_sequence_length"
KV_LAYOUT = [BATCH, "n_head", PAST, "head_dim"]  # every past and present tensor, in this order

KV = tuple[np.ndarray, np.ndarray]  # (key, value), each (B, n_head, P, head_dim) float32

# TensorRT optimization profiles, in the engine's order; engines built before "extend" have two.
TRT_PROFILES = ("prefill", "decode", "extend")


def past_key(i: int) -> str:
    return f"past_key_values.{i}.key"


def past_value(i: int) -> str:
    return f"past_key_values.{i}.value"


def present_key(i: int) -> str:
    return f"present.{i}.key"


def present_value(i: int) -> str:
    return f"present.{i}.value"


def input_names(n_layer: int) -> list[str]:
    names = [INPUT_IDS]
    for i in range(n_layer):
        names += [past_key(i), past_value(i)]
    return names


def output_names(n_layer: int) -> list[str]:
    names = [LOGITS]
    for i in range(n_layer):
        names += [present_key(i), present_value(i)]
    return names


def with_bos(bos: int, tokens: np.ndarray) -> np.ndarray:
    """Image tokens (B, N) -> input_ids (B, N+1) int64: BOS, then the tokens."""
    tokens = np.asarray(tokens)
    return np.concatenate([np.full((len(tokens), 1), bos, dtype=np.int64), tokens], axis=1)


_PAST_KEY = re.compile(r"past_key_values\.\d+\.key")


@dataclass(frozen=True)
class DecoderIO:
    """The contract for one model: its KV dimensions, and optionally its vocabulary size and its
    longest sequence (``max_tokens``, BOS + every image token: TensorRT's profiles need it)."""

    n_layer: int
    n_head: int
    head_dim: int
    vocab_size: int | None = None
    max_tokens: int | None = None

    @classmethod
    def from_config(cls, model_cfg: Mapping) -> DecoderIO:
        """From a model config as a dict (``PixLMConfig.to_dict()``, the manifest's ``model``)."""
        return cls(
            n_layer=model_cfg["n_layer"],
            n_head=model_cfg["n_head"],
            head_dim=model_cfg["d_model"] // model_cfg["n_head"],
            vocab_size=model_cfg["n_codes"] + 1 + model_cfg["n_labels"] if "n_codes" in model_cfg else None,
            max_tokens=model_cfg["grid_h"] * model_cfg["grid_w"] + 1,
        )

    @staticmethod
    def layers_in(names: Iterable[str]) -> int:
        """How many layers a graph's tensor names carry a cache for (its ``past_key_values.{i}.key``)."""
        return sum(1 for n in names if _PAST_KEY.fullmatch(n))

    # -- names, types and shapes --------------------------------------------------------------
    @property
    def input_names(self) -> list[str]:
        return input_names(self.n_layer)

    @property
    def output_names(self) -> list[str]:
        return output_names(self.n_layer)

    @property
    def past_names(self) -> list[str]:
        """Every cache input, key then value per layer: the order engines bind and return them."""
        return self.input_names[1:]

    @property
    def present_names(self) -> list[str]:
        return self.output_names[1:]

    @staticmethod
    def dtype(name: str) -> np.dtype:
        """int64 for ``input_ids``; float32 for logits and every cache tensor."""
        return np.dtype(np.int64 if name == INPUT_IDS else np.float32)

    def kv_shape(self, batch: int, length: int) -> tuple[int, int, int, int]:
        """Shape of one cache tensor holding ``length`` tokens (``KV_LAYOUT``)."""
        return (batch, self.n_head, length, self.head_dim)

    def kv_dims(self) -> tuple:
        """A past tensor's dimensions as the graph declares them: symbolic batch and length."""
        return (BATCH, self.n_head, PAST, self.head_dim)

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Symbolic dimensions of every input and output, as ``torch.onnx.export`` takes them."""
        total = f"{PAST} + {SEQ}"
        axes = {INPUT_IDS: {0: BATCH, 1: SEQ}, LOGITS: {0: BATCH, 1: SEQ}}
        for i in range(self.n_layer):
            axes[past_key(i)] = axes[past_value(i)] = {0: BATCH, 2: PAST}
            axes[present_key(i)] = axes[present_value(i)] = {0: BATCH, 2: total}
        return axes

    def io_record(self) -> dict:
        """The bundle manifest's ``io`` section (the exporter adds what it used)."""
        return {
            "inputs": self.input_names,
            "outputs": self.output_names,
            "opset": OPSET,
            "kv_layout": list(KV_LAYOUT),
            "dynamic_axes": {k: {str(a): n for a, n in v.items()} for k, v in self.dynamic_axes().items()},
        }

    # -- feeds ---------------------------------------------------------------------------------
    def empty_past(self, batch: int) -> list[KV]:
        """A cache holding nothing: P = 0."""
        z = np.zeros(self.kv_shape(batch, 0), dtype=np.float32)
        return [(z, z)] * self.n_layer

    def step_feed(self, input_ids: np.ndarray, past: list[KV] | None = None) -> dict[str, np.ndarray]:
        """{name: array} for one call: ``input_ids`` (B, T) on ``past`` (None: the empty cache)."""
        input_ids = np.asarray(input_ids, dtype=self.dtype(INPUT_IDS))
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch, tokens), got shape {input_ids.shape}")
        if past is None:
            past = self.empty_past(input_ids.shape[0])
        if len(past) != self.n_layer:
            raise ValueError(f"past has {len(past)} layers, the model has {self.n_layer}")
        feed = {INPUT_IDS: input_ids}
        for i, (k, v) in enumerate(past):
            feed[past_key(i)] = np.asarray(k, dtype=self.dtype(past_key(i)))
            feed[past_value(i)] = np.asarray(v, dtype=self.dtype(past_value(i)))
        return feed

    def prefill_feed(self, bos: int, tokens: np.ndarray) -> dict[str, np.ndarray]:
        """BOS + image tokens (B, N) + the empty cache: one recognition call."""
        return self.step_feed(with_bos(bos, tokens))

    # -- TensorRT ------------------------------------------------------------------------------
    def _profile_table(self) -> dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]]:
        """Per profile: (new tokens, cache length), each (min, opt, max)."""
        if self.max_tokens is None:
            raise ValueError("TensorRT profiles need max_tokens (build the spec with from_config)")
        T = self.max_tokens
        return {
            "prefill": ((1, T, T), (0, 0, 0)),
            "decode": ((1, 1, 1), (1, T - 1, T - 1)),
            "extend": ((1, T // 2, T - 1), (1, T // 2, T - 1)),
        }

    def trt_profiles(self, max_batch: int) -> list[dict]:
        """The engine's optimization profiles: {"name", "shapes": {input name: (min, opt, max)}}."""
        batch = (1, min(max_batch, 16), max_batch)
        out = []
        for name, (tokens, cache) in self._profile_table().items():
            ids = tuple((b, t) for b, t in zip(batch, tokens, strict=True))
            kv = tuple(self.kv_shape(b, p) for b, p in zip(batch, cache, strict=True))
            shapes = {INPUT_IDS: ids}
            for i in range(self.n_layer):
                shapes[past_key(i)] = shapes[past_value(i)] = kv
            out.append({"name": name, "shapes": shapes})
        return out

    def profile_split(self, profile: str) -> int:
        """Where a parity check splits a whole sequence for ``profile``: the tokens before it are
        the cache, the rest is the call (the profile's opt cache length; 0 for prefill)."""
        return self._profile_table()[profile][1][1]


class ProfileRules:
    """Which calls an engine's profiles admit, from its sidecar's ``profiles`` (no TensorRT needed)."""

    def __init__(self, profile_list: list[dict]):
        self._ranges = []  # per profile: (batch lo, hi), (new tokens lo, hi), (past lo, hi)
        for p in profile_list:
            (b0, t0), _, (b1, t1) = p["shapes"][INPUT_IDS]
            lo, _, hi = p["shapes"][past_key(0)]
            self._ranges.append(((b0, b1), (t0, t1), (lo[2], hi[2])))
        self.max_batch = max(r[0][1] for r in self._ranges)
        # prefix reuse feeds several tokens on top of a cache: does any profile take that?
        self.chunked_past = any(r[1][1] > 1 and r[2][1] > 0 for r in self._ranges)

    def select(self, batch: int, tokens: int, past: int) -> int:
        """Index of the first profile covering the call; ValueError naming the call otherwise."""
        for i, ((b0, b1), (t0, t1), (p0, p1)) in enumerate(self._ranges):
            if b0 <= batch <= b1 and t0 <= tokens <= t1 and p0 <= past <= p1:
                return i
        raise ValueError(
            f"TensorRT engine: no optimization profile takes batch {batch}, {tokens} new tokens on a "
            f"cache of {past}"
        )

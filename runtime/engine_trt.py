"""TensorRT engine for a bundle's ``tensorrt-*`` file; imported only when asked for.

Needs TensorRT 10.x (``TRT_RANGE``) and cuda-python 12.x (``CUDA_PYTHON_RANGE``: JetPack 6 is
CUDA 12, and cuda-python 13 dropped the ``cudart`` module this code uses); on a Jetson TensorRT
comes with JetPack 6 and ``pip install "cuda-python>=12,<13"`` adds the bindings. Other versions
are refused with what to install. An engine is specific to the GPU model and TensorRT version it
was built with, so :func:`check_engine_metadata` compares its sidecar JSON with this device first
and refuses a mismatch with the command that rebuilds it.

Profiles (:func:`profiles`, built by ``pixlm.export.tensorrt``)::

    profile 0  prefill   input_ids [1..B, 1..N+1]   past [1..B, nh, 0, hs]      (empty cache)
    profile 1  decode    input_ids [1..B, 1]        past [1..B, nh, 1..N, hs]   (completion)
    profile 2  extend    input_ids [1..B, 1..N]     past [1..B, nh, 1..N, hs]   (prefix reuse)

``run`` picks the profile that covers its call (:class:`ProfileRules`) and refuses one none covers.
Engines built before the extend profile existed have only the first two; the recognizer asks
``chunked_past`` and then recomputes a changed region in full instead of from its cache.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from pixlm.runtime import manifest as mf
from pixlm.runtime.trt_buffers import DeviceBuffers
from pixlm.runtime.trt_buffers import check as _check

REBUILD_HINT = "rebuild it on this device: pixlm-export CHECKPOINT -o OUT_DIR --tensorrt"


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or the CUDA bindings) is not installed here."""


class EngineMismatchError(ValueError):
    """An engine built for another GPU or TensorRT version."""


def profiles(model_cfg: dict, max_batch: int) -> list[dict]:
    """The engine's optimization profiles: {"name", "shapes": {input name: (min, opt, max)}}."""
    nh, hs = model_cfg["n_head"], model_cfg["d_model"] // model_cfg["n_head"]
    T = model_cfg["grid_h"] * model_cfg["grid_w"] + 1  # BOS + image
    opt_b = min(max_batch, 16)
    ids = {
        "prefill": ((1, 1), (opt_b, T), (max_batch, T)),
        "decode": ((1, 1), (opt_b, 1), (max_batch, 1)),
        "extend": ((1, 1), (opt_b, T // 2), (max_batch, T - 1)),
    }
    past = {
        "prefill": ((1, nh, 0, hs), (opt_b, nh, 0, hs), (max_batch, nh, 0, hs)),
        "decode": ((1, nh, 1, hs), (opt_b, nh, T - 1, hs), (max_batch, nh, T - 1, hs)),
        "extend": ((1, nh, 1, hs), (opt_b, nh, T // 2, hs), (max_batch, nh, T - 1, hs)),
    }
    out = []
    for name in ("prefill", "decode", "extend"):
        shapes = {mf.INPUT_IDS: ids[name]}
        for i in range(model_cfg["n_layer"]):
            shapes[mf.past_key(i)] = shapes[mf.past_value(i)] = past[name]
        out.append({"name": name, "shapes": shapes})
    return out


class ProfileRules:
    """Which calls an engine's profiles admit, from its sidecar's ``profiles`` (no TensorRT needed)."""

    def __init__(self, profile_list: list[dict]):
        self._ranges = []  # per profile: (batch lo, hi), (new tokens lo, hi), (past lo, hi)
        for p in profile_list:
            (b0, t0), _, (b1, t1) = p["shapes"][mf.INPUT_IDS]
            lo, _, hi = p["shapes"][mf.past_key(0)]
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


TRT_RANGE = (10, 11)  # supported TensorRT major versions: [10, 11)
CUDA_PYTHON_RANGE = (12, 13)  # supported cuda-python major versions: [12, 13)
TRT_HINT = (
    "on a Jetson it comes with JetPack 6 (`sudo apt install nvidia-jetpack`); on an x86 GPU machine "
    '`pip install "tensorrt-cu12>=10,<11"`'
)


def check_version(what: str, version: str, supported: tuple[int, int], hint: str) -> None:
    """Refuse a ``version`` whose major number lies outside ``supported`` [lo, hi)."""
    try:
        major = int(str(version).split(".")[0])
    except ValueError:
        raise TensorRTUnavailable(f"{what} {version!r}: unreadable version; {hint}") from None
    if not supported[0] <= major < supported[1]:
        raise TensorRTUnavailable(
            f"{what} {version} found; pixlm supports {supported[0]}.x to {supported[1] - 1}.x: {hint}"
        )


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(f"TensorRT is not installed: {TRT_HINT}") from e
    check_version("TensorRT", trt.__version__, TRT_RANGE, TRT_HINT)
    return trt


def _cudart():
    hint = 'pip install "cuda-python>=12,<13" (JetPack 6 is CUDA 12)'
    try:
        import cuda
    except ImportError as e:
        raise TensorRTUnavailable(f"CUDA Python bindings missing: {hint}") from e
    try:
        import cuda.bindings as bindings
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6

        check_version("cuda-python", bindings.__version__, CUDA_PYTHON_RANGE, hint)
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python 12.x
        except ImportError as e:
            raise TensorRTUnavailable(
                f"cuda-python {getattr(cuda, '__version__', '?')}: no cudart; {hint}"
            ) from e
    return cudart


def current_device() -> dict:
    """{"gpu": name, "compute_capability": "8.7"} of CUDA device 0."""
    try:
        prop = _check(_cudart().cudaGetDeviceProperties(0))
        name = prop.name.decode() if isinstance(prop.name, bytes) else str(prop.name)
        return {"gpu": name.strip("\x00 "), "compute_capability": f"{prop.major}.{prop.minor}"}
    except TensorRTUnavailable:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()[0]
        name, cc = (s.strip() for s in out.split(","))
        return {"gpu": name, "compute_capability": cc}


def check_engine_metadata(
    meta: dict, engine_path: str | os.PathLike, device: dict | None = None, trt_version: str | None = None
) -> None:
    """Refuse an engine whose sidecar says it was built for another GPU or TensorRT version."""
    if device is None:
        device = current_device()
    if trt_version is None:
        trt_version = import_tensorrt().__version__
    if meta.get("tensorrt") != trt_version:
        raise EngineMismatchError(
            f"{engine_path}: built with TensorRT {meta.get('tensorrt')}, this device has {trt_version}; "
            + REBUILD_HINT
        )
    for key in ("gpu", "compute_capability"):
        if meta.get(key) != device[key]:
            raise EngineMismatchError(
                f"{engine_path}: built for {key} {meta.get(key)}, this device is {device[key]}; "
                + REBUILD_HINT
            )


class TrtEngine:
    """The :class:`pixlm.runtime.engine.Engine` interface over a TensorRT engine file.

    Memory (``pixlm.runtime.trt_buffers``): every buffer is allocated once, at the profiles'
    largest shapes; ``run`` returns the present cache as :class:`DeviceKV` views that stay on the
    GPU, so a decode loop that feeds them back copies no KV at all.
    """

    def __init__(self, engine_path: str | os.PathLike, metadata_path: str | os.PathLike | None = None):
        trt = import_tensorrt()
        self._cudart = _cudart()
        self.path = Path(engine_path)
        meta_path = Path(metadata_path or f"{engine_path}.json")
        self.metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        check_engine_metadata(self.metadata, self.path, trt_version=trt.__version__)
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineMismatchError(f"{self.path}: TensorRT could not load this engine; " + REBUILD_HINT)
        self._stream = _check(self._cudart.cudaStreamCreate())
        self._contexts = []
        for profile in range(self.engine.num_optimization_profiles):
            ctx = self.engine.create_execution_context()
            ctx.set_optimization_profile_async(profile, int(self._stream))
            self._contexts.append(ctx)
        self.rules = ProfileRules(self.metadata["profiles"])
        self.max_batch, self.chunked_past = self.rules.max_batch, self.rules.chunked_past
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.n_layer = sum(1 for n in names if n.startswith("past_key_values.") and n.endswith(".key"))
        prefill = self.metadata["profiles"][0]["shapes"][mf.INPUT_IDS][2]
        shape = self.metadata["profiles"][1]["shapes"][mf.past_key(0)][2]
        self.n_head, self.head_dim = shape[1], shape[3]
        self.vocab_size = int(self.engine.get_tensor_shape(mf.LOGITS)[-1])
        self.buffers = DeviceBuffers(
            self._cudart,
            int(self._stream),
            max_batch=self.max_batch,
            max_tokens=int(prefill[1]),  # BOS + every image token: the longest sequence
            n_layer=self.n_layer,
            n_head=self.n_head,
            head_dim=self.head_dim,
            vocab=self.vocab_size,
        )

    def run(self, input_ids: np.ndarray, past=None):
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        B, T = input_ids.shape
        P = 0 if past is None else past[0][0].shape[2]
        ctx = self._contexts[self.rules.select(B, T, P)]
        buf = self.buffers
        with buf.lock:
            resident = None if past is None else buf.resident_set(past)
            if resident is None:  # host arrays (or nothing): upload into set 0, present into set 1
                past_set, out_set = 0, 1
                if past is not None:
                    buf.claim(past_set)
                for i, t in enumerate(t for kv in past or [] for t in kv):
                    buf.upload_kv(past_set, i, np.ascontiguousarray(t, np.float32))
            else:  # the previous present, still on the device: bound as is, no copy
                past_set, out_set = resident, 1 - resident
            buf.claim(out_set)
            buf.upload_ids(input_ids)
            self._shape(ctx, mf.INPUT_IDS, input_ids.shape)
            ctx.set_tensor_address(mf.INPUT_IDS, buf.ids)
            past_names = mf.input_names(self.n_layer)[1:]
            for i, name in enumerate(past_names):
                self._shape(ctx, name, (B, self.n_head, P, self.head_dim))
                ctx.set_tensor_address(name, buf.kv[past_set][i])
            present_names = mf.output_names(self.n_layer)[1:]
            ctx.set_tensor_address(mf.LOGITS, buf.logits)
            for i, name in enumerate(present_names):
                ctx.set_tensor_address(name, buf.kv[out_set][i])
            if not ctx.execute_async_v3(int(self._stream)):  # TensorRT 10 takes the handle as an int
                raise RuntimeError(f"{self.path}: TensorRT execution failed")
            logits = buf.download_logits(tuple(ctx.get_tensor_shape(mf.LOGITS)))  # synchronizes
            shapes = [tuple(ctx.get_tensor_shape(n)) for n in present_names]
            views = [buf.present(out_set, i, shape) for i, shape in enumerate(shapes)]
        return logits, [(views[2 * i], views[2 * i + 1]) for i in range(self.n_layer)]

    def prefill(self, input_ids: np.ndarray):
        return self.run(input_ids, None)

    def _shape(self, ctx, name: str, shape: tuple[int, ...]) -> None:
        if not ctx.set_input_shape(name, tuple(int(d) for d in shape)):  # False: outside the profile
            raise ValueError(f"{self.path}: TensorRT refused shape {tuple(shape)} for {name}")

    def close(self) -> None:
        """Free the GPU and pinned memory (also done when the engine is garbage-collected)."""
        if getattr(self, "buffers", None) is not None:
            self.buffers.free()
            self.buffers = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

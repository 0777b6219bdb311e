"""TensorRT engine for a bundle's ``tensorrt-*`` file; imported only when asked for.

Needs TensorRT 10.x (``TRT_RANGE``) and cuda-python 12.x (``CUDA_PYTHON_RANGE``: JetPack 6 is
CUDA 12, and cuda-python 13 dropped the ``cudart`` module this code uses); on a Jetson TensorRT
comes with JetPack 6 and ``pip install "cuda-python>=12,<13"`` adds the bindings. Other versions
are refused with what to install. An engine is specific to the GPU model and TensorRT version it
was built with, so :func:`check_engine_metadata` compares its sidecar JSON with this device first
and refuses a mismatch with the command that rebuilds it.

The optimization profiles (prefill, decode, extend) are part of the I/O contract, declared in
``pixlm.runtime.io_spec`` (``DecoderIO.trt_profiles``) and recorded in the engine's sidecar.
``run`` picks the profile that covers its call (``io_spec.ProfileRules``) and refuses one none
covers. Engines built before the extend profile existed have only the first two; the recognizer
asks ``chunked_past`` and then recomputes a changed region in full instead of from its cache.
"""

from __future__ import annotations

import json
import os
import subprocess
import warnings
from pathlib import Path

import numpy as np

from pixlm.runtime import io_spec
from pixlm.runtime.io_spec import INPUT_IDS, LOGITS, DecoderIO, past_key
from pixlm.runtime.trt_buffers import DeviceBuffers
from pixlm.runtime.trt_buffers import check as _check

REBUILD_HINT = "rebuild it on this device: pixlm-export CHECKPOINT -o OUT_DIR --tensorrt"


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or the CUDA bindings) is not installed here."""


class EngineMismatchError(ValueError):
    """An engine built for another GPU or TensorRT version."""


def _profiles(model_cfg: dict, max_batch: int) -> list[dict]:
    return DecoderIO.from_config(model_cfg).trt_profiles(max_batch)


# Names whose home moved to pixlm.runtime.io_spec: importable from here for one version, with a
# DeprecationWarning saying what to use instead.
_MOVED = {
    "ProfileRules": ("io_spec.ProfileRules", lambda: io_spec.ProfileRules),
    "profiles": ("io_spec.DecoderIO.from_config(model_cfg).trt_profiles(max_batch)", lambda: _profiles),
}


def __getattr__(name: str):  # PEP 562
    if name in _MOVED:
        use, value = _MOVED[name]
        warnings.warn(
            f"pixlm.runtime.engine_trt.{name} moved to pixlm.runtime.io_spec; use {use}",
            DeprecationWarning,
            stacklevel=2,
        )
        return value()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
        self.rules = io_spec.ProfileRules(self.metadata["profiles"])
        self.max_batch, self.chunked_past = self.rules.max_batch, self.rules.chunked_past
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        prefill = self.metadata["profiles"][0]["shapes"][INPUT_IDS][2]
        shape = self.metadata["profiles"][1]["shapes"][past_key(0)][2]
        self.io = DecoderIO(
            n_layer=DecoderIO.layers_in(names),
            n_head=shape[1],
            head_dim=shape[3],
            vocab_size=int(self.engine.get_tensor_shape(LOGITS)[-1]),
            max_tokens=int(prefill[1]),  # BOS + every image token: the longest sequence
        )
        self.n_layer, self.n_head, self.head_dim = self.io.n_layer, self.io.n_head, self.io.head_dim
        self.vocab_size = self.io.vocab_size
        self.buffers = DeviceBuffers(
            self._cudart,
            int(self._stream),
            max_batch=self.max_batch,
            max_tokens=self.io.max_tokens,
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
            self._shape(ctx, INPUT_IDS, input_ids.shape)
            ctx.set_tensor_address(INPUT_IDS, buf.ids)
            for i, name in enumerate(self.io.past_names):
                self._shape(ctx, name, self.io.kv_shape(B, P))
                ctx.set_tensor_address(name, buf.kv[past_set][i])
            present_names = self.io.present_names
            ctx.set_tensor_address(LOGITS, buf.logits)
            for i, name in enumerate(present_names):
                ctx.set_tensor_address(name, buf.kv[out_set][i])
            if not ctx.execute_async_v3(int(self._stream)):  # TensorRT 10 takes the handle as an int
                raise RuntimeError(f"{self.path}: TensorRT execution failed")
            logits = buf.download_logits(tuple(ctx.get_tensor_shape(LOGITS)))  # synchronizes
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

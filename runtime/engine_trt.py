"""TensorRT engine for a bundle's ``tensorrt-*`` file; imported only when asked for.

Needs TensorRT 10.x and cuda-python (``pip install cuda-python``); on a Jetson both come with
JetPack 6. An engine is specific to the GPU model and TensorRT version it was built with, so
:func:`check_engine_metadata` compares its sidecar JSON with this device first and refuses a
mismatch with the command that rebuilds it.

Profiles (see ``pixlm.export.tensorrt``): 0 = prefill (empty cache), 1 = decode (one new token
per row with a cache). ``run`` picks the profile from the shape of its call; a multi-token call
with a non-empty cache is not covered by either profile and is refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

from pixlm.runtime import manifest as mf

REBUILD_HINT = "rebuild it on this device: pixlm-export CHECKPOINT -o OUT_DIR --tensorrt"


class TensorRTUnavailable(RuntimeError):
    """TensorRT (or the CUDA bindings) is not installed here."""


class EngineMismatchError(ValueError):
    """An engine built for another GPU or TensorRT version."""


def import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise TensorRTUnavailable(
            "TensorRT is not installed: on a Jetson it comes with JetPack 6 (TensorRT 10.x, "
            "`sudo apt install nvidia-jetpack`); on an x86 GPU machine `pip install tensorrt-cu12`"
        ) from e
    major = int(trt.__version__.split(".")[0])
    if major < 10:
        raise TensorRTUnavailable(f"TensorRT {trt.__version__} found; pixlm needs TensorRT 10.x")
    return trt


def _cudart():
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError as e:
            raise TensorRTUnavailable("CUDA Python bindings missing: pip install cuda-python") from e
    return cudart


def _check(result):
    err, *rest = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


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
    """The :class:`pixlm.runtime.engine.Engine` interface over a TensorRT engine file."""

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
            ctx.set_optimization_profile_async(profile, self._stream)
            self._contexts.append(ctx)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.n_layer = sum(1 for n in names if n.startswith("past_key_values.") and n.endswith(".key"))
        shape = self.metadata["profiles"][1]["shapes"][mf.past_key(0)][2]
        self.n_head, self.head_dim = shape[1], shape[3]
        self.vocab_size = int(self.engine.get_tensor_shape(mf.LOGITS)[-1])

    def run(self, input_ids: np.ndarray, past=None):
        input_ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        B, T = input_ids.shape
        if past is None:
            z = np.zeros((B, self.n_head, 0, self.head_dim), np.float32)
            past = [(z, z)] * self.n_layer
        P = past[0][0].shape[2]
        if P > 0 and T != 1:
            raise ValueError("TensorRT engine: with a cache, feed one token per call (decode profile)")
        ctx = self._contexts[0 if P == 0 else 1]
        feed = {mf.INPUT_IDS: input_ids}
        for i, (k, v) in enumerate(past):
            feed[mf.past_key(i)] = np.ascontiguousarray(k, np.float32)
            feed[mf.past_value(i)] = np.ascontiguousarray(v, np.float32)
        cudart, buffers, outputs = self._cudart, [], {}
        try:
            for name, host in feed.items():
                ctx.set_input_shape(name, host.shape)
                ptr = _check(cudart.cudaMalloc(max(host.nbytes, 1)))
                buffers.append(ptr)
                if host.nbytes:
                    _check(
                        cudart.cudaMemcpy(
                            ptr, host.ctypes.data, host.nbytes, cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
                        )
                    )
                ctx.set_tensor_address(name, ptr)
            for name in mf.output_names(self.n_layer):
                host = np.empty(tuple(ctx.get_tensor_shape(name)), np.float32)
                ptr = _check(cudart.cudaMalloc(max(host.nbytes, 1)))
                buffers.append(ptr)
                ctx.set_tensor_address(name, ptr)
                outputs[name] = (host, ptr)
            if not ctx.execute_async_v3(self._stream):
                raise RuntimeError(f"{self.path}: TensorRT execution failed")
            for host, ptr in outputs.values():
                _check(
                    cudart.cudaMemcpyAsync(
                        host.ctypes.data,
                        ptr,
                        host.nbytes,
                        cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                        self._stream,
                    )
                )
            _check(cudart.cudaStreamSynchronize(self._stream))
        finally:
            for ptr in buffers:
                cudart.cudaFree(ptr)
        o = [outputs[n][0] for n in mf.output_names(self.n_layer)]
        return o[0], [(o[1 + 2 * i], o[2 + 2 * i]) for i in range(self.n_layer)]

    def prefill(self, input_ids: np.ndarray):
        return self.run(input_ids, None)

"""GPU memory for the TensorRT engine: allocated once, KV cache kept on the device between calls.

Design (not yet timed: the machines it was written on have no GPU with TensorRT)::

    init:  one device buffer per I/O tensor at the largest shape any profile admits
           KV: two sets A and B (ping-pong), each layer's key and value (B_max, nh, T, hs)
           pinned host twins (cudaMallocHost) for input_ids, logits and each KV tensor
    call:  past = the previous call's present, still on the device?  bind it as is (no copy)
           past = host arrays (a region's remembered cache)?           pinned -> device, async
           present -> the other set; logits -> pinned host -> numpy (the only download per call)
    later: present comes back as DeviceKV: numpy-like, downloaded only if someone reads it
           (prefix reuse keeps a region's rows on the host; completion never reads it)

No cudaMalloc/cudaFree per call, no KV copy per decode step (completion feeds present back as
past), and every host<->device copy goes through page-locked memory on the engine's stream.
Before a set is overwritten, DeviceKVs still pointing at it are downloaded, so a view never
silently changes under its holder.
"""

from __future__ import annotations

import ctypes
import threading
import weakref

import numpy as np


def check(result):
    """cuda-python returns (error, *values): raise on an error, return the value(s)."""
    err, *rest = result
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


class Pinned:
    """Page-locked host memory, seen as a numpy array of up to ``nbytes``."""

    def __init__(self, cudart, nbytes: int):
        self._cudart = cudart
        self.nbytes = nbytes
        self.ptr = int(check(cudart.cudaMallocHost(max(nbytes, 1))))
        self._bytes = np.ctypeslib.as_array((ctypes.c_uint8 * max(nbytes, 1)).from_address(self.ptr))

    def view(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        return self._bytes[:n].view(dtype).reshape(shape)

    def free(self) -> None:
        if self.ptr:
            self._cudart.cudaFreeHost(self.ptr)
            self.ptr = 0


class DeviceKV:
    """One KV tensor (B, nh, P, hs) float32 left on the device after a call; behaves as a numpy
    array for readers (``shape``, indexing, ``np.asarray``) by downloading itself once."""

    def __init__(self, buffers: DeviceBuffers, kv_set: int, index: int, shape: tuple[int, ...]):
        self._buffers, self.kv_set, self.index, self.shape = buffers, kv_set, index, tuple(shape)
        self.dtype = np.dtype(np.float32)
        self._host: np.ndarray | None = None

    @property
    def on_device(self) -> bool:
        return self._host is None

    def numpy(self) -> np.ndarray:
        if self._host is None:
            self._host = self._buffers.download_kv(self.kv_set, self.index, self.shape)
        return self._host

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __getitem__(self, item):
        return self.numpy()[item]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * 4


class DeviceBuffers:
    """Every device and pinned buffer of one engine, sized at the profiles' maxima."""

    def __init__(
        self,
        cudart,
        stream,
        *,
        max_batch: int,
        max_tokens: int,
        n_layer: int,
        n_head: int,
        head_dim: int,
        vocab: int,
    ):
        self.cudart, self.stream = cudart, stream
        self.n_kv = 2 * n_layer  # key and value per layer, in io_spec order (DecoderIO.past_names)
        self.kv_bytes = max_batch * n_head * max_tokens * head_dim * 4
        ids_bytes, logits_bytes = max_batch * max_tokens * 8, max_batch * max_tokens * vocab * 4
        self._device: list[int] = []
        self.ids = self._malloc(ids_bytes)
        self.logits = self._malloc(logits_bytes)
        self.kv = [[self._malloc(self.kv_bytes) for _ in range(self.n_kv)] for _ in range(2)]  # sets A, B
        self.pinned_ids = Pinned(cudart, ids_bytes)
        self.pinned_logits = Pinned(cudart, logits_bytes)
        self.pinned_kv = [Pinned(cudart, self.kv_bytes) for _ in range(self.n_kv)]
        self._views: list[weakref.WeakSet[DeviceKV]] = [weakref.WeakSet(), weakref.WeakSet()]
        self.lock = threading.RLock()  # run() holds it while claim() downloads views
        self.copies = {"h2d_bytes": 0, "d2h_bytes": 0}  # for tests and benchmarks

    def _malloc(self, nbytes: int) -> int:
        ptr = int(check(self.cudart.cudaMalloc(max(nbytes, 1))))
        self._device.append(ptr)
        return ptr

    # -- copies on the engine's stream --------------------------------------------------------
    def _copy(self, dst: int, src: int, nbytes: int, kind: str) -> None:
        k = self.cudart.cudaMemcpyKind
        direction = k.cudaMemcpyHostToDevice if kind == "h2d" else k.cudaMemcpyDeviceToHost
        check(self.cudart.cudaMemcpyAsync(dst, src, nbytes, direction, self.stream))
        self.copies[f"{kind}_bytes"] += nbytes

    def sync(self) -> None:
        check(self.cudart.cudaStreamSynchronize(self.stream))

    def upload_ids(self, ids: np.ndarray) -> None:
        self.pinned_ids.view(ids.shape, np.int64)[...] = ids
        self._copy(self.ids, self.pinned_ids.ptr, ids.nbytes, "h2d")

    def upload_kv(self, kv_set: int, index: int, host: np.ndarray) -> None:
        if host.nbytes > self.kv_bytes:
            raise ValueError(f"KV tensor of {host.shape} exceeds the engine's maximum")
        self.pinned_kv[index].view(host.shape, np.float32)[...] = host
        if host.nbytes:
            self._copy(self.kv[kv_set][index], self.pinned_kv[index].ptr, host.nbytes, "h2d")

    def download_logits(self, shape: tuple[int, ...]) -> np.ndarray:
        out = self.pinned_logits.view(shape, np.float32)
        self._copy(self.pinned_logits.ptr, self.logits, out.nbytes, "d2h")
        self.sync()
        return out.copy()  # the pinned buffer is reused by the next call

    def download_kv(self, kv_set: int, index: int, shape: tuple[int, ...]) -> np.ndarray:
        with self.lock:
            out = self.pinned_kv[index].view(shape, np.float32)
            if out.nbytes:
                self._copy(self.pinned_kv[index].ptr, self.kv[kv_set][index], out.nbytes, "d2h")
                self.sync()
            return out.copy()

    # -- ping-pong bookkeeping ----------------------------------------------------------------
    def claim(self, kv_set: int) -> None:
        """About to overwrite ``kv_set``: whoever still holds a view of it gets its data now."""
        for view in list(self._views[kv_set]):
            view.numpy()
        self._views[kv_set] = weakref.WeakSet()

    def present(self, kv_set: int, index: int, shape: tuple[int, ...]) -> DeviceKV:
        view = DeviceKV(self, kv_set, index, shape)
        self._views[kv_set].add(view)
        return view

    def resident_set(self, past) -> int | None:
        """The KV set ``past`` lies in, when every tensor of it is a live view of one set, in order."""
        flat = [t for kv in past for t in kv]
        if not flat or not all(isinstance(t, DeviceKV) and t._buffers is self and t.on_device for t in flat):
            return None
        s = flat[0].kv_set
        ok = all(t.kv_set == s and t.index == i for i, t in enumerate(flat))
        return s if ok and len(flat) == self.n_kv else None

    def free(self) -> None:
        for s in (0, 1):
            self.claim(s)
        for ptr in self._device:
            self.cudart.cudaFree(ptr)
        self._device = []
        for p in (self.pinned_ids, self.pinned_logits, *self.pinned_kv):
            p.free()

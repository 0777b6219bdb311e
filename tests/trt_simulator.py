"""The slice of the TensorRT 10 and cuda-python 12 APIs that ``TrtEngine`` calls, simulated on the
CPU so that its memory code runs in `make test` (no GPU with TensorRT is lent here).

What is simulated, and what is real:

* "device" and "pinned" memory are host buffers at real addresses; every copy is checked to lie
  inside allocations of the right kind (a wrong size or pointer fails the test, not the process),
  and counted (allocations, bytes each way);
* the execution context enforces the engine's optimization profiles on ``set_input_shape`` (it
  returns False, as TensorRT does) and takes the stream handle as an ``int``;
* the math is a real ONNX Runtime session on the bundle's ONNX file, reading the inputs from and
  writing the outputs to the bound addresses.

Not simulated: TensorRT's kernels, timing, asynchrony. It tests the engine's bookkeeping, not speed.
"""

from __future__ import annotations

import ctypes
import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pixlm.runtime import manifest as mf


class Memory:
    def __init__(self) -> None:
        self.blocks: dict[int, tuple[np.ndarray, str]] = {}  # address -> (buffer, "device" | "host")
        self.counts = {"cudaMalloc": 0, "cudaMallocHost": 0, "h2d_bytes": 0, "d2h_bytes": 0, "h2d": 0}
        self.counts["d2h"] = 0

    def alloc(self, n: int, kind: str) -> int:
        buf = np.zeros(n, np.uint8)
        self.blocks[buf.ctypes.data] = (buf, kind)
        return buf.ctypes.data

    def check(self, ptr: int, n: int, kind: str) -> None:
        for base, (buf, k) in self.blocks.items():
            if base <= ptr and ptr + n <= base + buf.nbytes:
                assert k == kind, f"{n} bytes at {ptr:#x}: {k} memory where {kind} memory was expected"
                return
        raise AssertionError(f"{n} bytes at {ptr:#x} lie outside every {kind} allocation")

    def array(self, ptr: int, shape, dtype) -> np.ndarray:
        n = int(np.prod(shape)) * np.dtype(dtype).itemsize
        self.check(ptr, n, "device")
        raw = (ctypes.c_uint8 * max(n, 1)).from_address(ptr)
        return np.ctypeslib.as_array(raw)[:n].view(dtype).reshape(shape)


def make_cudart(memory: Memory) -> types.ModuleType:
    rt = types.ModuleType("cuda.bindings.runtime")

    class cudaMemcpyKind(enum.IntEnum):  # noqa: N801 - cuda-python's name
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def malloc(n, kind, counter):
        memory.counts[counter] += 1
        return (0, memory.alloc(n, kind))

    def memcpy_async(dst, src, n, kind, stream):
        assert isinstance(stream, int), "pass the stream handle as an int"
        to_device = kind == cudaMemcpyKind.cudaMemcpyHostToDevice
        memory.check(dst, n, "device" if to_device else "host")
        memory.check(src, n, "host" if to_device else "device")
        ctypes.memmove(dst, src, n)
        key = "h2d" if to_device else "d2h"
        memory.counts[key] += 1
        memory.counts[f"{key}_bytes"] += n
        return (0,)

    def free(ptr):
        memory.blocks.pop(ptr)
        return (0,)

    prop = types.SimpleNamespace(name=b"Simulated Orin", major=8, minor=7)
    rt.cudaMemcpyKind = cudaMemcpyKind
    rt.cudaMalloc = lambda n: malloc(n, "device", "cudaMalloc")
    rt.cudaMallocHost = lambda n: malloc(n, "host", "cudaMallocHost")
    rt.cudaFree = rt.cudaFreeHost = free
    rt.cudaMemcpyAsync = memcpy_async
    rt.cudaMemcpy = lambda dst, src, n, kind: memcpy_async(dst, src, n, kind, 0)
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamSynchronize = lambda stream: (0,)
    rt.cudaGetDeviceProperties = lambda device: (0, prop)
    return rt


class Context:
    def __init__(self, engine: Engine) -> None:
        self.engine, self.profile, self.shapes, self.addresses = engine, None, {}, {}

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert isinstance(stream, int)
        self.profile = index
        return True

    def set_input_shape(self, name: str, shape) -> bool:
        lo, _, hi = self.engine.profiles[self.profile]["shapes"][name]
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            return False  # TensorRT logs an error and returns False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple:
        b, t = self.shapes[mf.INPUT_IDS]
        if name == mf.LOGITS:
            return (b, t, self.engine.vocab)
        _, nh, p, hs = self.shapes[mf.past_key(0)]
        return (b, nh, p + t, hs)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = int(ptr)
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int), "TensorRT 10 takes the stream handle as an int"
        mem = self.engine.memory
        feed = {}
        for name in mf.input_names(self.engine.n_layer):
            dtype = np.int64 if name == mf.INPUT_IDS else np.float32
            feed[name] = mem.array(self.addresses[name], self.shapes[name], dtype).copy()
        outputs = mf.output_names(self.engine.n_layer)
        for name, value in zip(outputs, self.engine.session.run(outputs, feed), strict=True):
            assert value.shape == self.get_tensor_shape(name)
            mem.array(self.addresses[name], value.shape, np.float32)[...] = value
        return True


class Engine:
    def __init__(self, spec: dict, memory: Memory) -> None:
        self.memory, self.profiles = memory, spec["profiles"]
        self.session = ort.InferenceSession(spec["onnx"], providers=["CPUExecutionProvider"])
        self.n_layer = sum(1 for i in self.session.get_inputs() if i.name.endswith(".key"))
        self.vocab = self.session.get_outputs()[0].shape[2]
        self.names = mf.input_names(self.n_layer) + mf.output_names(self.n_layer)
        self.num_optimization_profiles = len(self.profiles)
        self.num_io_tensors = len(self.names)

    def get_tensor_name(self, i: int) -> str:
        return self.names[i]

    def get_tensor_shape(self, name: str) -> tuple:
        assert name == mf.LOGITS
        return (-1, -1, self.vocab)

    def create_execution_context(self) -> Context:
        return Context(self)


def install(monkeypatch, version: str = "10.3.0") -> Memory:
    """Put simulated ``tensorrt`` and ``cuda.bindings.runtime`` modules in ``sys.modules``."""
    memory = Memory()
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version

    class Logger:
        WARNING = 2

        def __init__(self, level: int) -> None:
            self.level = level

    class Runtime:
        def __init__(self, logger: Logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes) -> Engine:
            return Engine(json.loads(data), memory)

    trt.Logger, trt.Runtime = Logger, Runtime
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    bindings.__version__ = "12.6.0"
    bindings.runtime = make_cudart(memory)
    cuda.bindings = bindings
    for name, module in [
        ("tensorrt", trt),
        ("cuda", cuda),
        ("cuda.bindings", bindings),
        ("cuda.bindings.runtime", bindings.runtime),
    ]:
        monkeypatch.setitem(sys.modules, name, module)
    return memory


def write_engine(onnx_path: Path, out: Path, profile_list: list[dict], version: str = "10.3.0") -> Path:
    """A simulated engine file for ``onnx_path`` and the sidecar metadata TrtEngine checks."""
    out.write_text(json.dumps({"onnx": str(onnx_path), "profiles": profile_list}))
    meta = {"tensorrt": version, "gpu": "Simulated Orin", "compute_capability": "8.7"}
    Path(f"{out}.json").write_text(json.dumps({**meta, "profiles": profile_list}))
    return out

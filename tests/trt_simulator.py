"""The slice of the TensorRT 10 and cuda-python 12 APIs that pixlm calls, simulated on the CPU so
that the engine's memory code and the export's engine build run in `make test` (no GPU with
TensorRT is lent here).

What is simulated, and what is real:

* "device" and "pinned" memory are host buffers at real addresses; every copy is checked to lie
  inside allocations of the right kind (a wrong size or pointer fails the test, not the process),
  and counted (allocations, bytes each way);
* a stream is a queue, as on a GPU: ``cudaMemcpyAsync`` and ``execute_async_v3`` only enqueue, and
  nothing moves until ``cudaStreamSynchronize`` runs the queue in order. Host code that reads a
  download before synchronizing reads stale bytes; a pinned buffer rewritten before its upload ran
  uploads the new bytes. ``cudaFree``/``cudaFreeHost`` synchronize first, as CUDA's do;
* ``execute_async_v3`` refuses bindings where an output's device range overlaps an input's or
  another output's (TensorRT reads the cache while it writes the present: an aliased KV buffer
  gives garbage on a GPU, so here it fails the test at once);
* the execution context enforces the engine's optimization profiles on ``set_input_shape`` (it
  returns False, as TensorRT does) and takes the stream handle as an ``int``;
* the math is a real ONNX Runtime session on the engine's ONNX file, reading the inputs from and
  writing the outputs to the bound addresses when the stream runs it. An engine built with the FP16
  flag (FP16 and INT8 engines) rounds its outputs to float16, so its numbers differ a little from
  its ONNX file's, as a real engine's do;
* the builder (``Builder``, ``OnnxParser``, builder config, profiles, timing cache) takes what
  ``pixlm.export.tensorrt.build_engine`` gives it and serializes the ONNX file, its profiles and
  its precision into the "engine" bytes.

Not simulated: TensorRT's kernels, timing, several streams racing. It tests bookkeeping, not speed.
"""

from __future__ import annotations

import base64
import ctypes
import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pixlm.runtime import io_spec as mf


class Memory:
    def __init__(self) -> None:
        self.blocks: dict[int, tuple[np.ndarray, str]] = {}  # address -> (buffer, "device" | "host")
        self.counts = {"cudaMalloc": 0, "cudaMallocHost": 0, "h2d_bytes": 0, "d2h_bytes": 0, "h2d": 0}
        self.counts["d2h"] = 0
        self.queues: dict[int, list] = {}  # stream handle -> work not yet run (callables, in order)

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

    def enqueue(self, stream: int, work) -> None:
        self.queues.setdefault(stream, []).append(work)

    def synchronize(self, stream: int | None = None) -> None:
        """Run what ``stream`` (None: every stream) has queued, in order."""
        for s in [stream] if stream is not None else list(self.queues):
            work, self.queues[s] = self.queues.get(s, []), []
            for w in work:
                w()

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())


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
        memory.enqueue(stream, lambda: ctypes.memmove(dst, src, n))  # the bytes move at sync time
        key = "h2d" if to_device else "d2h"
        memory.counts[key] += 1
        memory.counts[f"{key}_bytes"] += n
        return (0,)

    def memcpy(dst, src, n, kind):
        memory.synchronize()  # cudaMemcpy waits for the device, then copies
        memcpy_async(dst, src, n, kind, 0)
        memory.synchronize(0)
        return (0,)

    def free(ptr):
        memory.synchronize()  # cudaFree and cudaFreeHost wait for the device first
        memory.blocks.pop(ptr)
        return (0,)

    def stream_synchronize(stream):
        assert isinstance(stream, int), "pass the stream handle as an int"
        memory.synchronize(stream)
        return (0,)

    prop = types.SimpleNamespace(name=b"Simulated Orin", major=8, minor=7)
    rt.cudaMemcpyKind = cudaMemcpyKind
    rt.cudaMalloc = lambda n: malloc(n, "device", "cudaMalloc")
    rt.cudaMallocHost = lambda n: malloc(n, "host", "cudaMallocHost")
    rt.cudaFree = rt.cudaFreeHost = free
    rt.cudaMemcpyAsync = memcpy_async
    rt.cudaMemcpy = memcpy
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamSynchronize = stream_synchronize
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

    def _ranges(self, names: list[str], dtype_of) -> dict[str, tuple[int, int]]:
        """Device byte range [start, end) each bound tensor covers at its current shape."""
        out = {}
        for name in names:
            assert name in self.addresses, f"{name}: no address bound before execute_async_v3"
            shape = self.shapes[name] if name in self.shapes else self.get_tensor_shape(name)
            n = int(np.prod(shape)) * np.dtype(dtype_of(name)).itemsize
            self.engine.memory.check(self.addresses[name], n, "device")
            out[name] = (self.addresses[name], self.addresses[name] + n)
        return out

    def execute_async_v3(self, stream: int) -> bool:
        assert isinstance(stream, int), "TensorRT 10 takes the stream handle as an int"
        n_layer = self.engine.n_layer
        inputs = self._ranges(mf.input_names(n_layer), lambda n: np.int64 if n == mf.INPUT_IDS else "f4")
        outputs = self._ranges(mf.output_names(n_layer), lambda n: np.float32)
        for i, (out, (a, b)) in enumerate(outputs.items()):
            others = {**inputs, **dict(list(outputs.items())[:i])}
            for name, (c, d) in others.items():
                if a < d and c < b and a < b and c < d:  # two non-empty ranges that intersect
                    raise AssertionError(
                        f"output {out} [{a:#x}, {b:#x}) overlaps {name} [{c:#x}, {d:#x}): TensorRT would "
                        "write it while it reads it"
                    )
        # what TensorRT takes at enqueue time: the bindings and shapes as they are now
        addresses = dict(self.addresses)
        shapes = {**self.shapes, **{n: self.get_tensor_shape(n) for n in outputs}}
        self.engine.memory.enqueue(stream, lambda: self.engine.execute(addresses, shapes))
        return True


class Engine:
    def __init__(self, spec: dict, memory: Memory) -> None:
        self.memory, self.profiles = memory, spec["profiles"]
        model = base64.b64decode(spec["onnx_b64"]) if "onnx_b64" in spec else spec["onnx"]
        self.session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        self.half = spec.get("precision", "fp32") in ("fp16", "int8")  # float layers in FP16
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

    def execute(self, addresses: dict[str, int], shapes: dict[str, tuple]) -> None:
        """One queued execution: read the inputs where they are bound now, write the outputs."""
        feed = {}
        for name in mf.input_names(self.n_layer):
            dtype = np.int64 if name == mf.INPUT_IDS else np.float32
            feed[name] = self.memory.array(addresses[name], shapes[name], dtype).copy()
        outputs = mf.output_names(self.n_layer)
        for name, value in zip(outputs, self.session.run(outputs, feed), strict=True):
            assert value.shape == shapes[name]
            if self.half:
                value = value.astype(np.float16).astype(np.float32)
            self.memory.array(addresses[name], value.shape, np.float32)[...] = value


# -- the builder: what pixlm.export.tensorrt.build_engine calls ------------------------------------
class MemoryPoolType(enum.IntEnum):
    WORKSPACE = 0


class BuilderFlag(enum.IntEnum):
    FP16 = 0
    INT8 = 1


class Network:
    def __init__(self) -> None:
        self.onnx: bytes | None = None


class OnnxParser:
    def __init__(self, network: Network, logger) -> None:
        self.network, self.errors = network, []

    def parse_from_file(self, path: str) -> bool:
        data = Path(path).read_bytes()
        try:
            ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - TensorRT records the parser's error and returns False
            self.errors.append(str(e))
            return False
        self.network.onnx = data
        return True

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, list] = {}

    def set_shape(self, name: str, lo, opt, hi) -> None:
        self.shapes[name] = [list(lo), list(opt), list(hi)]


class TimingCache:
    def __init__(self, blob: bytes) -> None:
        self.blob = blob

    def serialize(self) -> bytes:
        return self.blob or b"simulated timing cache"


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[BuilderFlag] = set()
        self.profiles: list[OptimizationProfile] = []
        self.cache: TimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, nbytes: int) -> None:
        assert nbytes > 0

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, blob: bytes) -> TimingCache:
        return TimingCache(bytes(blob))

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        self.cache = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        return self.cache


class Builder:
    def __init__(self, logger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> Network:
        return Network()

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network, config: BuilderConfig) -> bytes:
        assert network.onnx is not None, "build before a successful parse"
        precision = "fp16" if BuilderFlag.FP16 in config.flags else "fp32"
        if BuilderFlag.INT8 in config.flags:
            precision = "int8"
        spec = {
            "onnx_b64": base64.b64encode(network.onnx).decode("ascii"),
            "profiles": [{"shapes": p.shapes} for p in config.profiles],
            "precision": precision,
        }
        return json.dumps(spec).encode()


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
    trt.Builder, trt.OnnxParser, trt.MemoryPoolType, trt.BuilderFlag = (
        Builder,
        OnnxParser,
        MemoryPoolType,
        BuilderFlag,
    )
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

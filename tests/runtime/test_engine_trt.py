"""The TensorRT engine's device check (runs without TensorRT: it compares metadata only)."""

from __future__ import annotations

import pytest

from pixlm.runtime.engine_trt import EngineMismatchError, check_engine_metadata

META = {"tensorrt": "10.3.0", "gpu": "Orin", "compute_capability": "8.7", "precision": "int8"}
HERE = {"gpu": "Orin", "compute_capability": "8.7"}


def test_same_device_and_version_is_accepted():
    check_engine_metadata(META, "m.engine", device=HERE, trt_version="10.3.0")


@pytest.mark.parametrize(
    "device, version",
    [(HERE, "10.7.0"), ({"gpu": "NVIDIA A100", "compute_capability": "8.0"}, "10.3.0")],
)
def test_engine_for_another_device_is_refused(device, version):
    with pytest.raises(EngineMismatchError, match="rebuild it on this device: pixlm-export .* --tensorrt"):
        check_engine_metadata(META, "m.engine", device=device, trt_version=version)


# -- the engine's shape contract, obeyed by the runtime ----------------------------------------------
import numpy as np  # noqa: E402

from conftest import VTEST  # noqa: E402
from pixlm.runtime.io_spec import DecoderIO, ProfileRules  # noqa: E402
from pixlm.runtime.recognizer import Recognizer  # noqa: E402
from pixlm.runtime.stream import Streamer  # noqa: E402


class RuleBoundEngine:
    """A real ONNX Runtime engine that takes only the calls a TensorRT engine with these profiles
    takes (batch, new tokens and cache length per profile), so `make test` refuses whatever a
    Jetson would refuse. Records the profile each call used."""

    def __init__(self, engine, profile_list):
        self._engine, self.rules, self.used = engine, ProfileRules(profile_list), []
        self.max_batch, self.chunked_past = self.rules.max_batch, self.rules.chunked_past
        for name in ("n_layer", "n_head", "head_dim", "vocab_size"):
            setattr(self, name, getattr(engine, name))

    def run(self, ids, past=None):
        cache = 0 if past is None else past[0][0].shape[2]
        self.used.append(self.rules.select(ids.shape[0], ids.shape[1], cache))
        return self._engine.run(ids, past)

    def prefill(self, ids):
        return self.run(ids, None)


@pytest.mark.parametrize("n_profiles", [2, 3])
def test_streaming_obeys_the_tensorrt_profiles(tiny_bundle, n_profiles):
    """Prefix reuse on an engine with the prefill and decode profiles only (engines built before
    the extend profile) made a call no profile covers on the second frame; with the fallback it
    recomputes changed regions in full. With the extend profile, reuse runs from the cache. Either
    way the results equal a plain full recompute, and no call exceeds the profiles' max batch."""
    rec = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1, unknown=False)
    reference = [
        [rr.result.score for rr in fr.regions]
        for fr in Streamer(rec, [str(VTEST)], grid=(4, 5), max_frames=6, prefix_reuse=False)
    ]
    bound = RuleBoundEngine(
        rec.engine, DecoderIO.from_config(rec.bundle.model_config).trt_profiles(max_batch=8)[:n_profiles]
    )
    rec.engine = bound
    got = [
        [rr.result.score for rr in fr.regions]
        for fr in Streamer(rec, [str(VTEST)], grid=(4, 5), max_frames=6, max_batch=32, prefix_reuse=True)
    ]
    assert np.allclose(got, reference, atol=1e-5)
    assert (2 in bound.used) == (n_profiles == 3)  # the extend profile serves reuse when present
    rec.complete(np.zeros((28, 28), np.uint8), known_rows=2, seed=0)  # completion: the decode profile
    assert bound.used[-1] == 1


def test_profile_rules_match_the_build_profiles():
    cfg = {"n_head": 2, "d_model": 32, "grid_h": 7, "grid_w": 7, "n_layer": 2, "n_codes": 64, "n_labels": 10}
    build = DecoderIO.from_config(cfg).trt_profiles(max_batch=16)
    rules = ProfileRules(build)
    assert rules.max_batch == 16 and rules.chunked_past
    assert rules.select(16, 50, 0) == 0 and rules.select(3, 1, 30) == 1 and rules.select(3, 20, 30) == 2
    for call in ((17, 50, 0), (1, 51, 0), (1, 50, 1)):
        with pytest.raises(ValueError, match="no optimization profile takes"):
            rules.select(*call)
    assert not ProfileRules(build[:2]).chunked_past


@pytest.mark.parametrize(
    "what, version, supported, ok",
    [
        ("TensorRT", "10.3.0", (10, 11), True),
        ("TensorRT", "10.13.1", (10, 11), True),
        ("TensorRT", "11.0.0", (10, 11), False),  # `pip install tensorrt-cu12` brings this now
        ("TensorRT", "8.6.1", (10, 11), False),
        ("cuda-python", "12.6.2", (12, 13), True),
        ("cuda-python", "13.0.1", (12, 13), False),  # no cudart; CUDA 13, not JetPack 6's 12
    ],
)
def test_supported_version_ranges(what, version, supported, ok):
    """TensorRT 10.x and cuda-python 12.x only; others refused with what to install."""
    from pixlm.runtime.engine_trt import TensorRTUnavailable, check_version

    if ok:
        check_version(what, version, supported, "hint")
    else:
        with pytest.raises(TensorRTUnavailable, match=rf"{what} {version} found; pixlm supports"):
            check_version(what, version, supported, "hint")


@pytest.mark.parametrize("profile", ["prefill", "decode", "extend"])
def test_parity_feeds_reproduce_the_full_forward(tiny_bundle, profile):
    """trt_parity checks every profile (prefill, decode, extend): the decode and extend feeds, a cache from
    ONNX Runtime plus the rest of the image, give the full forward's last logits on ONNX Runtime."""
    from pixlm.data import load_fashion_mnist
    from pixlm.export.trt_parity import feeds
    from pixlm.runtime.bundle import Bundle
    from pixlm.runtime.engine import OrtEngine

    bundle = Bundle.load(tiny_bundle)
    engine = OrtEngine(bundle.path("fp32"), threads=1)
    images = load_fashion_mnist(split="test").images[:6]
    (full,) = feeds(bundle, images, 6, "prefill")
    (part,) = feeds(bundle, images, 6, profile, engine)
    n = full["input_ids"].shape[1]
    assert part["input_ids"].shape[1] == {"prefill": n, "decode": 1, "extend": n - n // 2}[profile]
    want, _ = engine.run(full["input_ids"])
    past = [
        (part[f"past_key_values.{i}.key"], part[f"past_key_values.{i}.value"]) for i in range(engine.n_layer)
    ]
    got, _ = engine.run(part["input_ids"], past)
    assert np.allclose(got[:, -1], want[:, -1], atol=1e-4)


# -- the TensorRT engine's memory, on a simulated TensorRT 10 / CUDA -------------------------------
import trt_simulator  # noqa: E402

from pixlm.runtime.engine import OrtEngine  # noqa: E402


@pytest.fixture
def trt_engine(tiny_bundle, tmp_path, monkeypatch):
    """A TrtEngine over the tiny bundle's fp32 ONNX: the real engine code, on the simulated API."""
    from pixlm.runtime.bundle import Bundle
    from pixlm.runtime.engine_trt import TrtEngine

    memory = trt_simulator.install(monkeypatch)
    bundle = Bundle.load(tiny_bundle)
    path = trt_simulator.write_engine(
        bundle.path("fp32"), tmp_path / "m.engine", DecoderIO.from_config(bundle.model_config).trt_profiles(8)
    )
    engine = TrtEngine(path)
    yield engine, OrtEngine(bundle.path("fp32"), threads=1), memory, bundle
    engine.close()


def test_tensorrt_engine_allocates_once_and_keeps_the_kv_on_the_device(trt_engine):
    """Before: cudaMalloc/cudaFree for every tensor of every call, and the whole KV cache copied
    host -> device on every decode step. Now: buffers at init only; a decode step moves the new
    token in and the logits out, nothing else."""
    engine, ort_engine, memory, bundle = trt_engine
    ids = np.random.default_rng(0).integers(0, bundle.tokenizer.n_codes, (4, 30))
    ids[:, 0] = bundle.tokenizer.bos
    mallocs = memory.counts["cudaMalloc"], memory.counts["cudaMallocHost"]
    logits, past = engine.prefill(ids[:, :20])
    ref_logits, ref_past = ort_engine.prefill(ids[:, :20])
    assert np.allclose(logits, ref_logits, atol=1e-4)
    for t in range(20, 30):  # decode: one token per step, the cache fed back as it came out
        before = dict(memory.counts)
        logits, past = engine.run(ids[:, t : t + 1], past)
        ref_logits, ref_past = ort_engine.run(ids[:, t : t + 1], ref_past)
        assert np.allclose(logits, ref_logits, atol=1e-4), f"decode step {t}"
        assert memory.counts["h2d_bytes"] - before["h2d_bytes"] == ids[:, t : t + 1].nbytes
        assert memory.counts["d2h_bytes"] - before["d2h_bytes"] == logits.nbytes
    assert (memory.counts["cudaMalloc"], memory.counts["cudaMallocHost"]) == mallocs
    assert np.allclose(np.asarray(past[0][0]), ref_past[0][0], atol=1e-4)  # readable when wanted


def test_tensorrt_engine_views_survive_later_calls_and_host_caches_upload(trt_engine):
    """A present cache held while later calls reuse its GPU buffers is downloaded first, never
    overwritten; a cache from the host (prefix reuse) goes in through pinned memory."""
    engine, ort_engine, _, bundle = trt_engine
    ids = np.random.default_rng(1).integers(0, bundle.tokenizer.n_codes, (3, 25))
    ids[:, 0] = bundle.tokenizer.bos
    _, held = engine.prefill(ids[:, :10])
    _, ref_held = ort_engine.prefill(ids[:, :10])
    for _ in range(3):  # both ping-pong sets are overwritten
        engine.prefill(ids[:, :15])
        _, p = engine.prefill(ids[:, :5])
        engine.run(ids[:, 5:6], p)
    host = [(np.asarray(k), np.asarray(v)) for k, v in held]
    for (k, v), (rk, rv) in zip(host, ref_held, strict=True):
        assert np.allclose(k, rk, atol=1e-4) and np.allclose(v, rv, atol=1e-4)
    rows = [(k[1:3, :, :8].copy(), v[1:3, :, :8].copy()) for k, v in host]  # rows, shorter: from the host
    logits, _ = engine.run(ids[1:3, 8:20], rows)
    ref, _ = ort_engine.run(ids[1:3, 8:20], [(k[1:3, :, :8], v[1:3, :, :8]) for k, v in ref_held])
    assert np.allclose(logits, ref, atol=1e-4)
    with pytest.raises(ValueError, match="no optimization profile"):
        engine.prefill(np.zeros((9, 5), np.int64))  # beyond max batch 8


def test_recognizer_and_streamer_run_on_the_tensorrt_engine(trt_engine):
    """Prefix reuse across frames and completion through TrtEngine give what ONNX Runtime gives."""
    engine, ort_engine, _, bundle = trt_engine
    ort_rec = Recognizer(bundle, ort_engine, "ort-cpu", "fp32", unknown=False)
    trt_rec = Recognizer(bundle, engine, "tensorrt", "fp32", unknown=False)

    def scores(rec):
        frames = Streamer(rec, [str(VTEST)], grid=(2, 3), max_frames=5, max_batch=8, prefix_reuse=True)
        return [[rr.result.score for rr in fr.regions] for fr in frames]

    assert np.allclose(scores(trt_rec), scores(ort_rec), atol=1e-4)
    assert trt_rec.stats["tokens_saved"] > 0  # the cache path was taken
    image = np.full((28, 28), 128, np.uint8)
    a = trt_rec.complete(image, known_rows=5, seed=3)
    b = ort_rec.complete(image, known_rows=5, seed=3)
    assert np.array_equal(a, b)


def test_the_simulator_fails_an_aliased_kv_cache_and_a_missing_sync(trt_engine):
    """The simulator must fail what a GPU would get wrong. Before, it copied every input before
    writing the outputs, copied synchronously and made stream sync a no-op: with the KV ping-pong
    removed (the present written over the past being read) the decode test still passed. Now
    copies and executions wait on the stream until ``cudaStreamSynchronize``, and an output bound
    over an input is refused. Removing the ping-pong from ``TrtEngine.run`` or the sync from
    ``download_logits`` makes the three engine tests above fail."""
    engine, ort_engine, memory, bundle = trt_engine
    ids = np.random.default_rng(2).integers(0, bundle.tokenizer.n_codes, (2, 12))
    ids[:, 0] = bundle.tokenizer.bos
    want, _ = ort_engine.prefill(ids[:, :10])
    buf = engine.buffers
    buf.sync = lambda: None  # download_logits without its sync: the host reads before the copy ran
    stale, _ = engine.prefill(ids[:, :10])
    assert memory.pending > 0 and not np.allclose(stale, want, atol=1e-2)
    del buf.sync
    memory.synchronize()
    got, past = engine.prefill(ids[:, :10])
    assert np.allclose(got, want, atol=1e-4) and memory.pending == 0
    buf.kv[1] = buf.kv[0]  # one KV set, no ping-pong: the present lands on the past being read
    with pytest.raises(AssertionError, match=r"output present\.0\.key .* overlaps past_key_values\.0\.key"):
        engine.run(ids[:, 10:11], past)

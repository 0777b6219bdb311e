"""The I/O contract between the exported decoder and its engines (``pixlm.runtime.io_spec``), torch-free."""

from __future__ import annotations

import numpy as np
import pytest

from pixlm.runtime import io_spec
from pixlm.runtime.bundle import Bundle
from pixlm.runtime.engine import OrtEngine
from pixlm.runtime.io_spec import INPUT_IDS, DecoderIO, ProfileRules, with_bos

CFG = {"n_codes": 64, "n_labels": 10, "grid_h": 7, "grid_w": 7, "n_layer": 2, "n_head": 2, "d_model": 32}


def test_the_spec_follows_the_model_config():
    spec = DecoderIO.from_config(CFG)
    assert (spec.n_layer, spec.n_head, spec.head_dim, spec.vocab_size, spec.max_tokens) == (2, 2, 16, 75, 50)
    assert spec.input_names == [
        "input_ids",
        *(f"past_key_values.{i}.{kv}" for i in (0, 1) for kv in ("key", "value")),
    ]
    assert spec.output_names == ["logits", *(f"present.{i}.{kv}" for i in (0, 1) for kv in ("key", "value"))]
    axes = spec.dynamic_axes()
    per_layer = [
        [f"past_key_values.{i}.key", f"past_key_values.{i}.value", f"present.{i}.key", f"present.{i}.value"]
        for i in (0, 1)
    ]
    assert list(axes) == ["input_ids", "logits", *per_layer[0], *per_layer[1]]  # the manifest's order
    assert axes["present.1.value"] == {0: "batch_size", 2: "past_sequence_length + sequence_length"}
    assert spec.dtype(INPUT_IDS) == np.int64 and spec.dtype("present.0.key") == np.float32


def test_prefill_feed_is_bos_tokens_and_an_empty_cache():
    spec = DecoderIO.from_config(CFG)
    tokens = np.arange(3 * 49).reshape(3, 49) % 64
    feed = spec.prefill_feed(64, tokens)
    assert list(feed) == spec.input_names
    ids = feed[INPUT_IDS]
    assert ids.dtype == np.int64 and ids.shape == (3, 50)
    assert (ids[:, 0] == 64).all() and (ids[:, 1:] == tokens).all()
    assert np.array_equal(ids, with_bos(64, tokens))
    for name in spec.past_names:
        assert feed[name].shape == (3, 2, 0, 16) and feed[name].dtype == np.float32


def test_step_feed_refuses_what_no_engine_takes():
    spec = DecoderIO.from_config(CFG)
    with pytest.raises(ValueError, match=r"input_ids must be \(batch, tokens\)"):
        spec.step_feed(np.zeros(5, np.int64))
    with pytest.raises(ValueError, match="past has 1 layers, the model has 2"):
        spec.step_feed(np.zeros((1, 1), np.int64), spec.empty_past(1)[:1])


def test_each_profile_admits_the_call_it_is_built_for():
    """The parity check feeds each profile its own kind of call (``profile_split``); the rules the
    runtime reads from an engine's sidecar pick that same profile for it."""
    spec = DecoderIO.from_config(CFG)
    rules = ProfileRules(spec.trt_profiles(max_batch=8))
    T = spec.max_tokens
    for index, name in enumerate(io_spec.TRT_PROFILES):
        split = spec.profile_split(name)
        assert rules.select(8, T - split, split) == index
    assert [spec.profile_split(n) for n in io_spec.TRT_PROFILES] == [0, T - 1, T // 2]


def test_an_engine_reads_the_spec_from_its_onnx_file(tiny_bundle):
    """OrtEngine learns the dimensions from the graph; they equal the manifest's model config's,
    and the spec's prefill feed runs in its session as ``prefill`` does."""
    bundle = Bundle.load(tiny_bundle)
    engine = OrtEngine(bundle.path("fp32"), threads=1)
    want = DecoderIO.from_config(bundle.model_config)
    assert engine.io == DecoderIO(want.n_layer, want.n_head, want.head_dim, want.vocab_size)
    tokens = bundle.tokenizer.encode(np.zeros((28, 28), np.uint8))[None]
    direct = engine.session.run(None, want.prefill_feed(bundle.tokenizer.bos, tokens))
    logits, past = engine.prefill(with_bos(bundle.tokenizer.bos, tokens))
    assert np.array_equal(direct[0], logits) and np.array_equal(direct[-1], past[-1][1])


def test_a_cpu_session_plans_no_memory_pattern_per_call_shape(tiny_bundle):
    """A stream calls the engine with many row counts, and ONNX Runtime's memory patterns keep a
    planned block per shape: with them on, `pixlm run vtest.avi --grid 2x2` peaked 5 MiB higher
    for no speed (docs/performance.md)."""
    engine = OrtEngine(Bundle.load(tiny_bundle).path("fp32"), threads=1)
    assert engine.session.get_session_options().enable_mem_pattern is False


@pytest.mark.parametrize(
    "module, name",
    [
        ("pixlm.runtime.manifest", "INPUT_IDS"),
        ("pixlm.runtime.manifest", "past_key"),
        ("pixlm.runtime.manifest", "ATOL_FP32"),
        ("pixlm.runtime.manifest", "KV_LAYOUT"),
        ("pixlm.runtime.engine_trt", "ProfileRules"),
        ("pixlm.runtime.engine_trt", "profiles"),
    ],
)
def test_moved_names_still_import_with_a_warning(module, name):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"{module}.{name} moved to pixlm.runtime.io_spec"):
        value = getattr(importlib.import_module(module), name)
    if name == "profiles":
        assert value(CFG, 8) == DecoderIO.from_config(CFG).trt_profiles(8)
    else:
        assert value is getattr(io_spec, name)

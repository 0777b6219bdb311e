"""Recognizer and Streamer on a real bundle (exported by the real CLI), real images and video.

torch is blocked in this folder: everything here is what the camera box runs.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest

from conftest import VTEST
from pixlm.data import load_fashion_mnist
from pixlm.runtime import manifest as mf
from pixlm.runtime.bundle import BundleError
from pixlm.runtime.engine import CPU_CALL_POSITIONS
from pixlm.runtime.recognizer import BackendUnavailable, Recognizer
from pixlm.runtime.sources import SourceError
from pixlm.runtime.stream import Streamer, grid_regions


@pytest.fixture(scope="module")
def rec(tiny_bundle) -> Recognizer:
    """Closed set (every input gets its best label); the "unknown" gate: test_novelty.py."""
    return Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1, unknown=False)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VTEST))
    out = [cap.read()[1] for _ in range(40)]
    assert all(f is not None for f in out)
    return out


def test_predict_matches_the_exported_accuracy(rec):
    # the export measured its accuracy on the first images of its calibration split
    cal = rec.bundle.manifest[mf.K_CALIBRATION]
    data = load_fashion_mnist(split=cal[mf.C_SPLIT])
    images, labels = data.images[: cal[mf.C_IMAGES]], data.labels[: cal[mf.C_IMAGES]]
    results = rec.predict_batch(list(images))
    acc = np.mean([r.label_index == y for r, y in zip(results, labels, strict=True)])
    assert acc == pytest.approx(rec.bundle.metrics["fp32"]["accuracy"], abs=1e-9)  # same 500 images
    r = results[0]
    assert r.label == rec.labels[r.label_index] and 0 < r.score <= 1
    assert [name for name, _ in r.top_k][0] == r.label and len(r.top_k) == 3
    assert r.anomaly > 0 and set(r.timings) == {"tokenize", "infer", "post"}


def test_predict_batch_equals_single_predictions(rec, frames):
    batch = rec.predict_batch(frames[:4], nll_map=True)
    for f, b in zip(frames[:4], batch, strict=True):
        one = rec.predict(f, nll_map=True)
        assert one.label == b.label and one.score == pytest.approx(b.score, abs=1e-5)
        assert np.allclose(one.nll_map, b.nll_map, atol=1e-4)
    assert batch[0].nll_map.shape == rec.tokenizer.grid


def test_prefix_reuse_equals_full_recompute_on_real_video(rec, frames):
    regions = grid_regions(frames[0].shape[1], frames[0].shape[0], 2, 2)
    memory = [None] * len(regions)
    reused = 0
    for f in frames:
        tokens = rec.tokenizer.encode_batch([r.crop(f) for r in regions])
        full = rec.predict_tokens(tokens, nll_map=True)
        fast, memory = rec.predict_reusing(tokens, memory, nll_map=True)
        for a, b in zip(full, fast, strict=True):
            assert a.label == b.label
            assert abs(a.score - b.score) < 1e-5 and abs(a.anomaly - b.anomaly) < 1e-5
            assert np.abs(a.nll_map - b.nll_map).max() < 1e-4
            reused += b.reused_tokens
    assert reused > 0  # a static camera: most frames share a prefix with the one before
    assert rec.stats["tokens_saved"] >= reused


def test_complete_keeps_known_rows_and_fills_the_rest(rec):
    image = load_fashion_mnist(split="test").images[0]
    rows, cols = rec.tokenizer.grid
    p = rec.tokenizer.config.patch
    a = rec.complete(image, known_rows=3, seed=1)
    b = rec.complete(image, known_rows=3, seed=1)
    assert a.shape == image.shape and np.array_equal(a, b)
    known = rec.tokenizer.decode(rec.tokenizer.encode(image))[: 3 * p]
    assert np.array_equal(a[: 3 * p], known)
    with pytest.raises(ValueError, match="known_rows"):
        rec.complete(image, known_rows=rows + 1)


def test_stream_a_video_file_in_a_grid_with_batching(rec):
    seen = []
    with Streamer(rec, [str(VTEST)], grid=(2, 2), max_batch=8, stride=5, max_frames=30) as s:
        for fr in s:
            seen.append(fr)
    assert [fr.index for fr in seen] == list(range(0, 150, 5))  # every 5th frame, none lost
    assert all(len(fr.regions) == 4 for fr in seen)
    rec0 = seen[0].records()[0]
    for key in ("source", "frame", "timestamp", "region", "label", "score", "top_k", "anomaly", "timings_ms"):
        assert key in rec0
    assert rec0["region"]["xywh"] == [0, 0, 384, 288]


def test_anomaly_threshold_raises_alerts_and_heat_maps_come_only_when_used(rec):
    """Alerts compare persistent surprise, so a threshold computes the token maps they need; with
    neither alerts nor an overlay, no map is built."""
    with Streamer(rec, [str(VTEST)], max_frames=5, anomaly_threshold=0.0, alert_after=1e-3) as s:
        out = list(s)
    assert [all(rr.anomalous for rr in fr.regions) for fr in out] == [False] + [True] * 4
    assert [rr.alert.phase for rr in out[1].regions] == ["start"]
    for reuse in (True, False):
        with Streamer(rec, [str(VTEST)], max_frames=2, prefix_reuse=reuse) as s:
            assert all(rr.result.nll_map is None and rr.alert is None for fr in s for rr in fr.regions)
        with Streamer(rec, [str(VTEST)], max_frames=2, nll_map=True, prefix_reuse=reuse) as s:
            maps = [rr.result.nll_map for fr in s for rr in fr.regions]
        assert len(maps) == 2 and all(m.shape == rec.tokenizer.grid for m in maps)


def test_peak_anomaly_score_finds_what_the_mean_dilutes(rec, frames, tmp_path):
    """`anomaly_peak` is the mean surprise of a region's most surprising tenth of tokens, so it is
    never below `anomaly`; alerts on it fire where a mean-based threshold stays quiet."""
    r = rec.predict(frames[0], nll_map=True)
    top = np.sort(r.nll_map.ravel())[-max(1, r.nll_map.size // 10) :]
    assert r.anomaly_peak == pytest.approx(top.mean() / rec.pixels_per_token, rel=1e-5)
    assert r.anomaly_peak > r.anomaly and r.to_dict()["anomaly_peak"] == round(r.anomaly_peak, 6)
    threshold = (r.anomaly + r.anomaly_peak) / 2
    still = tmp_path / "still"  # the same frame twice: what persisted is that frame's surprise
    still.mkdir()
    for i in range(2):
        cv2.imwrite(str(still / f"{i}.png"), frames[0])
    flagged = {}
    for score in ("mean", "peak"):
        options = dict(anomaly_threshold=threshold, anomaly_score=score, alert_after=1e-6)
        with Streamer(rec, [str(still)], **options) as s:
            flagged[score] = [fr.regions[0].anomalous for fr in s]
    assert flagged == {"mean": [False, False], "peak": [False, True]}
    with pytest.raises(ValueError, match="anomaly_score"):
        Streamer(rec, [str(VTEST)], anomaly_score="max")


def test_region_outside_the_frame_skips_the_source_and_says_why(rec):
    events = []
    with Streamer(rec, [str(VTEST)], rois=[(700, 500, 100, 100)], max_frames=1, on_event=events.append) as s:
        assert list(s) == [] and s.sources[0].status == "error"
    assert any("outside the 768x576 frame" in e.message for e in events if e.source.endswith("vtest.avi"))


def test_bad_sources_and_bundles_are_clear_errors(rec, tmp_path):
    with pytest.raises(SourceError, match="unknown URI scheme"):
        with Streamer(rec, ["ftp://127.0.0.1/x"]) as s:
            list(s)
    with pytest.raises(BundleError, match="no such bundle"):
        Recognizer.open(tmp_path / "nothing")
    with pytest.raises(BackendUnavailable, match="ort-cuda"):
        Recognizer.open(rec.bundle, backend="ort-cuda")
    with pytest.raises(BackendUnavailable, match="ort-trt"):
        Recognizer.open(rec.bundle, backend="ort-trt")


class _CountingEngine:
    """The real ONNX Runtime engine, recording the batch size of every call it gets."""

    def __init__(self, engine, max_batch=None, call_positions=None):
        self._engine, self.batches = engine, []
        if max_batch is not None:
            self.max_batch = max_batch
        self.call_positions = call_positions
        for name in ("n_layer", "n_head", "head_dim", "vocab_size"):
            setattr(self, name, getattr(engine, name))

    def run(self, ids, past=None):
        self.batches.append(len(ids))
        return self._engine.run(ids, past)

    def prefill(self, ids):
        self.batches.append(len(ids))
        return self._engine.prefill(ids)


@pytest.mark.parametrize("reuse", [False, True])
def test_no_engine_call_exceeds_the_batch_cap(tiny_bundle, reuse):
    """--batch caps the regions per engine call (a 4x5 grid and --batch 4 once made calls of 20
    regions); an engine's own limit (a TensorRT profile's max batch) caps them too."""
    rec = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1, unknown=False)
    real = rec.engine
    for cap, engine_max, expect in ((4, None, 4), (16, 3, 3)):
        rec.engine = spy = _CountingEngine(real, engine_max)
        with Streamer(rec, [str(VTEST)], grid=(4, 5), max_batch=cap, max_frames=6, prefix_reuse=reuse) as s:
            out = list(s)
        assert len(out) == 6 and all(len(fr.regions) == 20 for fr in out)
        assert max(spy.batches) == expect and len(spy.batches) >= 20 // expect  # the first frame alone


def test_a_cpu_engine_gets_calls_of_at_most_its_positions(tiny_bundle):
    """ONNX Runtime's CPU arena keeps the largest call's activations: a batch of 16 regions of
    197 positions held ~30 MB more than two calls of 8, for no speed. The CPU engine says how many
    positions a call should hold; the streamer splits batches to fit (it used to send all 16)."""
    rec = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1, unknown=False)
    n = rec.tokenizer.n_tokens + 1  # BOS + image tokens
    assert rec.engine.call_positions == CPU_CALL_POSITIONS and CPU_CALL_POSITIONS // n >= 8
    rec.engine = spy = _CountingEngine(rec.engine, call_positions=3 * n)
    with Streamer(rec, [str(VTEST)], grid=(4, 5), max_batch=16, max_frames=4) as s:
        out = list(s)
    assert len(out) == 4 and max(spy.batches) == 3 and sum(spy.batches) == 80


def test_grids_too_fine_or_too_large_are_refused(rec):
    events = []
    with Streamer(rec, [str(VTEST)], grid=(30, 30), max_frames=1, on_event=events.append) as s:
        assert list(s) == [] and s.sources[0].status == "error"  # the source is skipped, with the reason
    assert any("grid 30x30 cuts the 768x576 frame into 25x19-pixel tiles" in e.message for e in events)
    with pytest.raises(ValueError, match="more than 1024 regions"):
        Streamer(rec, [str(VTEST)], grid=(100, 100))


def test_top_k_below_one_is_refused(tiny_bundle):
    """top_k=0 is refused (it returned an empty label)."""
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", top_k=0)


def test_prefix_memory_owns_its_arrays(rec, frames):
    """Each region's remembered KV cache and label logits are its own arrays, not views that keep a
    whole batch's outputs alive."""
    regions = grid_regions(frames[0].shape[1], frames[0].shape[0], 2, 2)
    memory = [None] * len(regions)
    for f in frames[:3]:  # a first full prefill, then partial recomputes
        _, memory = rec.predict_reusing(rec.tokenizer.encode_batch([r.crop(f) for r in regions]), memory)
    for m in memory:
        for k, v in m.past:
            assert k.base is None and v.base is None and k.shape[0] == 1
        assert m.head.base is None


def test_a_looped_file_plays_every_pass_when_its_lane_is_full_at_its_end(rec, tmp_path):
    """The worker stopped once every source had reached its end, even a file with passes left: at
    the end of a pass the status turns "eos" before the end marker is queued (an event sink runs in
    between), and a file whose lane was full then was taken as finished. `--loop 6` over 20,000
    frames of vtest.avi ended after 4 passes (a memory run)."""
    cap = cv2.VideoCapture(str(VTEST))
    clip = tmp_path / "short.avi"
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(6):
        out.write(cap.read()[1])
    out.release()

    def slow_sink(event) -> None:  # e.g. an MQTT publish, in the reader thread
        if event.status == "eos":
            time.sleep(0.5)

    indices = []
    with Streamer(rec, [str(clip)], grid=(2, 2), max_batch=4, loop=3, on_event=slow_sink) as s:
        for fr in s:
            indices.append(fr.index)
            time.sleep(0.05)  # the engine is slower than the decoder: the file's lane stays full
    assert indices == list(range(6)) * 3

"""Prefix reuse's policy: when a cached prefix is used, and how regions share engine calls; its
memory and calls, which hand back each region's new memory; and that streaming from Python is as
exact as ``pixlm run``.

Real clips (vtest.avi, and the benchmark's static scene written from it) and a real ONNX Runtime
session of the tiny bundle; the engine is wrapped only to count the positions it computes.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import VTEST, pixlm_run, read_jsonl
from pixlm.runtime import manifest as mf
from pixlm.runtime.bench import clip_tokens, reuse_shares, write_static_clip
from pixlm.runtime.bundle import manifest_sha256
from pixlm.runtime.prefix_reuse import PrefixMemory, ReusePolicy, waves
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.stream import Streamer


class CountingEngine:
    """The real engine, counting rows x new tokens of every call (what the policy saves)."""

    def __init__(self, engine):
        self.engine, self.positions, self.calls = engine, 0, 0

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def run(self, ids, past=None):
        self.positions += ids.size
        self.calls += 1
        return self.engine.run(ids, past)

    def prefill(self, ids):
        return self.run(ids, None)


@pytest.fixture(scope="module")
def rec(tiny_bundle) -> Recognizer:
    r = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32", threads=1, unknown=False)
    r.engine = CountingEngine(r.engine)
    return r


def test_the_plan_declines_reuse_when_little_is_reusable_and_takes_it_when_much_is():
    policy, n = ReusePolicy(), 196
    # a new region, and the others changed within their first few tokens: one full pass, as
    # without reuse (their few cached positions are worth less than a second call)
    assert policy.plan([0, 2, 3, 1], n) == [(0, [0, 3, 1, 2])]
    # no new region: one call from the earliest change (it still skips two positions a row)
    assert policy.plan([2, 3, 1, 4], n) == [(1, [2, 0, 1, 3])]
    # a new region and three that kept most of their tokens: the new one alone in a full pass, the
    # others from the smallest of their first changes, an unchanged one in no call at all
    assert policy.plan([0, 150, 155, n], n) == [(0, [0]), (150, [1, 2])]
    # one early change no longer drags the rest back to it (before: one call from token 2)
    plan = policy.plan([2, 150, 160, 180], n)
    assert plan[0] == (2, [0]) and all(start >= 150 for start, _ in plan[1:])
    planned, full = policy.cost([2, 150, 160, 180], n)
    assert planned < 0.5 * full
    # an expensive call (a GPU): the rows stay together
    assert len(ReusePolicy(call_cost=1e4).plan([2, 150, 160, 180], n)) == 1
    assert policy.plan([n, n], n) == [] and policy.plan([], n) == []


def test_a_batch_holding_a_region_twice_runs_in_waves_and_the_memory_keeps_the_last():
    keys = [("cam", "r0"), ("cam", "r1"), ("cam", "r0"), ("cam", "r0"), ("file", "r0"), ("cam", "r1")]
    assert waves(keys) == [[0, 1, 4], [2, 5], [3]] and waves([]) == []
    memory = PrefixMemory()
    assert memory.recall(keys[:2]) == [None, None] and len(memory) == 0
    memory.remember(keys[:2], ["a", "b"])
    memory.remember(keys[2:3], ["c"])  # the region's next frame replaces its previous one
    assert memory.recall(keys) == ["c", "b", "c", "c", None, "b"] and len(memory) == 2


def test_reuse_hands_back_new_memory_and_leaves_the_old_alone(rec, scenes):
    """The calls return each region's new memory instead of writing into the list they are given;
    the deprecated method that did write into it still does, with a warning, and agrees."""
    first, second = scenes["vtest"][:2]  # people walking: some regions change, some keep a prefix
    _, memory = rec.predict_reusing(first, [None] * len(first))
    given = list(memory)
    before = [(m.tokens.copy(), m.logp.copy(), m.head.copy()) for m in memory]
    results, new = rec.predict_reusing(second, memory)
    assert all(a is b for a, b in zip(memory, given, strict=True))
    for m, (tokens, logp, head) in zip(memory, before, strict=True):
        assert (
            np.array_equal(m.tokens, tokens) and np.array_equal(m.logp, logp) and np.array_equal(m.head, head)
        )
    assert [np.array_equal(m.tokens, t) for m, t in zip(new, second, strict=True)] == [True] * len(second)
    old = list(memory)
    with pytest.warns(DeprecationWarning, match="predict_tokens_reusing.*predict_reusing"):
        legacy = rec.predict_tokens_reusing(second, old)
    assert [r.to_dict() for r in legacy] == [r.to_dict() for r in results]
    for a, b in zip(old, new, strict=True):
        assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.logp, b.logp)


@pytest.fixture(scope="module")
def scenes(rec, tmp_path_factory) -> dict[str, np.ndarray]:
    static = write_static_clip(tmp_path_factory.mktemp("clips") / "static.avi", frames=40)
    return {"vtest": clip_tokens(rec, str(VTEST), 40), "static": clip_tokens(rec, str(static), 40)}


def test_the_policy_keeps_what_each_region_could_on_real_clips(rec, scenes):
    """Per region, vtest.avi keeps a good share of its tokens, but one call per frame from the
    frame's smallest first change kept far less; the policy keeps nearly all of it. The static
    scene keeps more than vtest.avi."""
    policy = rec.reuse_policy
    shares = {name: reuse_shares(tokens, policy) for name, tokens in scenes.items()}
    for s in shares.values():
        assert s["old"] <= s["planned"] <= s["region"]
        assert s["planned"] >= 0.9 * s["region"]
    assert shares["static"]["region"] > shares["vtest"]["region"]


def test_reuse_runs_fewer_positions_than_one_call_from_the_smallest_change_and_stays_exact(rec, scenes):
    """Regions whose first changes are far apart: before the policy, every one ran from the
    earliest change; now the late ones run from their own, and results equal a full recompute."""
    tokens = scenes["static"][0]  # (4 regions, n)
    n = tokens.shape[1]
    _, memory = rec.predict_reusing(tokens, [None] * len(tokens))
    changed = tokens.copy()
    firsts = [1, n - 3, n - 2, n - 1]
    for row, j in enumerate(firsts):
        changed[row, j] = (changed[row, j] + 1) % rec.n_codes
    rec.engine.positions = rec.engine.calls = 0
    fast, memory = rec.predict_reusing(changed, memory, nll_map=True)
    # region 0 alone from token 1 (its n - 1 tokens), the other three from n - 3 (3 tokens each)
    assert rec.reuse_policy.plan(firsts, n) == [(1, [0]), (n - 3, [1, 2, 3])]
    assert rec.engine.positions == (n - 1) + 3 * 3 and rec.engine.calls == 2
    full = rec.predict_tokens(changed, nll_map=True)
    for a, b in zip(full, fast, strict=True):
        assert a.label == b.label and abs(a.score - b.score) < 1e-5
        assert np.abs(a.nll_map - b.nll_map).max() < 1e-4
    assert [r.reused_tokens for r in fast] == [2] + [n - 2] * 3  # BOS + the tokens before the call's start
    rec.engine.positions = rec.engine.calls = 0
    again, kept = rec.predict_reusing(changed, memory)  # the same frame again: nothing to compute
    assert rec.engine.positions == rec.engine.calls == 0
    assert [r.reused_tokens for r in again] == [n + 1] * 4
    assert [r.score for r in again] == [r.score for r in fast]
    assert all(a is b for a, b in zip(kept, memory, strict=True))  # unchanged regions keep their memory


def test_a_static_scene_computes_fewer_positions_than_people_walking(rec, scenes):
    """Streaming both clips frame by frame, the engine computes exactly the positions the plan of
    each frame's first changes asks for (counted from the tokens, not from the recognizer), every
    region reports the cached positions it was given, and every score equals a full pass. The
    static scene then computes under half of what people walking do, who still reuse some.
    (Before: the test asserted ``computed <= 1.0``, which no run can fail.)"""
    computed = {}
    for name, tokens in scenes.items():
        frames, regions, n = tokens.shape
        memory: list = [None] * regions
        planned = got = 0
        previous = None
        for frame in tokens:
            firsts = [0] * regions
            if previous is not None:
                firsts = [_first_change(p, t) for p, t in zip(previous, frame, strict=True)]
            starts = [n] * regions  # n: unchanged, no call
            for start, rows in rec.reuse_policy.plan(firsts, n):
                planned += len(rows) * (n + 1 if start == 0 else n - start)
                for i in rows:
                    starts[i] = start
            rec.engine.positions = 0
            results, memory = rec.predict_reusing(frame, memory)
            got += rec.engine.positions
            assert [r.reused_tokens for r in results] == [0 if j == 0 else j + 1 for j in starts]
            for a, b in zip(rec.predict_tokens(frame), results, strict=True):
                assert (
                    a.label == b.label and abs(a.score - b.score) < 1e-5 and abs(a.anomaly - b.anomaly) < 1e-5
                )
            previous = frame
        assert got == planned, f"{name}: {got} positions computed, the plan asks for {planned}"
        computed[name] = got / (frames * regions * (n + 1))
    assert computed["static"] < 0.5 * computed["vtest"] and computed["vtest"] < 0.9, computed


def _first_change(previous: np.ndarray, tokens: np.ndarray) -> int:
    """Index of a region's first changed token since its previous frame; len(tokens) if none."""
    changed = np.flatnonzero(previous != tokens)
    return int(changed[0]) if len(changed) else len(tokens)


def test_the_python_api_streams_the_file_and_scores_the_cli_does(tiny_bundle, tmp_path):
    """A bundle that recommends the dynamic INT8 file for CPUs (its activation scales follow each
    call, so a prefix reused from the cache is not what a full pass gives). By default neither
    ``pixlm run`` nor the Python API reuses prefixes, and both run the recommended file; with reuse
    both run fp32. Either way they agree on every region of every frame of vtest.avi (one frame per
    engine call, so the dynamic file's scales see the same rows). Reuse on the dynamic file is
    refused rather than silently inexact."""
    bundle = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, bundle)
    man = json.loads((bundle / mf.MANIFEST).read_text())
    man[mf.K_RECOMMENDED]["cpu"] = mf.INT8_DYNAMIC  # what a box where it ran fastest writes
    man[mf.K_MANIFEST_SHA256] = manifest_sha256(man)
    (bundle / mf.MANIFEST).write_text(json.dumps(man))

    for reuse in (False, True):
        rec = Recognizer.open(bundle, backend="ort-cpu", threads=1, exact_reuse=reuse)
        assert rec.file_key == (mf.FP32 if reuse else mf.INT8_DYNAMIC)
        with Streamer(
            rec, [str(VTEST)], grid=(2, 2), max_frames=12, max_batch=4, prefix_reuse=reuse
        ) as frames:
            python = {(fr.index, rr.region.name): rr.result.to_dict() for fr in frames for rr in fr.regions}
        assert (rec.stats["tokens_saved"] > 0) == reuse
        out = tmp_path / f"cli-{reuse}.jsonl"
        args = ["--bundle", str(bundle), "--backend", "ort-cpu", "--grid", "2x2", "--max-frames", "12"]
        args += ["--batch", "4", "--threads", "1", "--jsonl", str(out), "-q"]
        p = pixlm_run(str(VTEST), *args, *(["--prefix-reuse"] if reuse else []))
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        cli = {(r["frame"], r["region"]["name"]): r for r in read_jsonl(out) if r["type"] == "result"}
        assert cli.keys() == python.keys() and len(cli) == 48
        for key, want in cli.items():
            got = python[key]
            assert got["label"] == want["label"], key
            assert abs(got["score"] - want["score"]) <= 2e-6, (key, got["score"], want["score"])
            assert abs(got["ood_score"] - want["ood_score"]) <= 2e-4, (
                key,
                got["ood_score"],
                want["ood_score"],
            )
            assert (got["reused_tokens"] > 0) <= reuse
    dynamic = Recognizer.open(bundle, backend="ort-cpu", threads=1)
    assert dynamic.file_key == mf.INT8_DYNAMIC  # the recommendation, the default
    with pytest.raises(ValueError, match="exact_reuse=True"):
        Streamer(dynamic, [str(VTEST)], prefix_reuse=True)

"""Prefix reuse's policy: when a cached prefix is used, and how regions share engine calls.

Real clips (vtest.avi, and the benchmark's static scene written from it) and a real ONNX Runtime
session of the tiny bundle; the engine is wrapped only to count the positions it computes.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import VTEST
from pixlm.runtime.bench import clip_tokens, reuse_shares, write_static_clip
from pixlm.runtime.prefix_reuse import ReusePolicy
from pixlm.runtime.recognizer import Recognizer


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
    memory: list = [None] * len(tokens)
    rec.predict_tokens_reusing(tokens, memory)
    changed = tokens.copy()
    firsts = [1, n - 3, n - 2, n - 1]
    for row, j in enumerate(firsts):
        changed[row, j] = (changed[row, j] + 1) % rec.n_codes
    rec.engine.positions = rec.engine.calls = 0
    fast = rec.predict_tokens_reusing(changed, memory, nll_map=True)
    # region 0 alone (from token 1, or a full pass), the other three from n - 3: at most 2 calls
    assert rec.engine.positions <= (n + 1) + 3 * 3 and rec.engine.calls <= 2
    full = rec.predict_tokens(changed, nll_map=True)
    for a, b in zip(full, fast, strict=True):
        assert a.label == b.label and abs(a.score - b.score) < 1e-5
        assert np.abs(a.nll_map - b.nll_map).max() < 1e-4
    assert [r.reused_tokens for r in fast][1:] == [n - 2] * 3


def test_a_static_scene_computes_fewer_positions_than_people_walking(rec, scenes):
    """Streaming both clips frame by frame: the policy takes the static scene's long prefixes and
    computes far fewer positions than a full pass would; reuse never computes more."""
    computed = {}
    for name, tokens in scenes.items():
        memory: list = [None] * tokens.shape[1]
        rec.engine.positions = 0
        for frame in tokens:
            rec.predict_tokens_reusing(frame, memory)
        computed[name] = rec.engine.positions / (tokens.shape[0] * tokens.shape[1] * (tokens.shape[2] + 1))
    assert computed["static"] < 0.6 and computed["vtest"] <= 1.0
    assert computed["static"] < computed["vtest"]

"""KV prefix reuse for static cameras: what each region remembers, when using it pays, and the
engine calls that use it.

::

    PrefixMemory.recall(keys) --> each region's Prefix from its last frame (None: never seen)
                                          |
    tokens of a batch's regions --first_change--> j per region
                                          |
                       ReusePolicy.plan: sort by j, cut into engine calls (a cost model)
                                          |
    run_reusing: call from 0 (BOS + every token: a full pass)  or  call from j (the cache holds
        BOS + tokens[:j], every row of the call starts at the call's smallest j)  or  no call (j = n)
                                          |
    new Prefix per region, positions taken from the cache --> PrefixMemory.remember(keys, ...)

A causal model's output at a token depends only on the tokens before it, so a region's cached KV up
to its first changed token is what a full recompute would produce: reuse is exact, and the policy
only decides how much work to skip. It used to put every partial region in one call from the
batch's smallest j: on ``vtest.avi`` (people walking, 2x2 grid) a region keeps 30% of its tokens
on average, but the smallest j of four regions is about 5 of 196, so a call of four regions skipped
3% of the work and paid for the copies (0.79x at batch 16 in `pixlm bench`). The policy instead groups
regions of similar j, as long as the saved positions outweigh the cost of another engine call, and
sends regions with little to keep into the full pass with the new ones.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from pixlm.runtime import scoring
from pixlm.runtime.engine import KV, Engine


@dataclass
class Prefix:
    """Per-region memory for prefix reuse: last tokens, their KV cache and next-token log-probs."""

    tokens: np.ndarray  # (N,)
    past: list[KV]  # per layer (1, nh, N+1, hd): BOS + N image tokens
    logp: np.ndarray  # (N, n_codes) log-probs of each image token's position
    head: np.ndarray  # (V,): the logits after the last image token (labels, open-set gate)


def first_change(memory: Prefix | None, tokens: np.ndarray, n: int) -> int:
    """Index of the first token that differs from the region's previous frame (n: none; 0: no memory)."""
    if memory is None:
        return 0
    changed = np.flatnonzero(memory.tokens != tokens)
    return int(changed[0]) if len(changed) else n


@dataclass(frozen=True)
class ReusePolicy:
    """Which regions of a batch reuse their cached prefix, and which share an engine call.

    Cost model, in positions of engine work (one position = one token through the decoder): a call
    costs ``call_cost`` positions plus, per row, the positions it computes (n + 1 for a full pass,
    n - j from a cached prefix of j + 1 positions) plus ``copy_cost`` per cached position gathered
    into the call's past. Measured with ONNX Runtime on 2 CPU threads for the shipped model
    (``pixlm bench`` prints its own measurement): a position costs ~0.05 ms and a call ~4 positions
    above its rows (8 here, to leave room for the Python around it); gathering a cached position
    costs under 1% of computing it. Batching barely helps on a CPU, so cutting a batch into a few
    calls costs little. A GPU's call cost is far larger: give it a larger ``call_cost`` and the plan
    keeps bigger calls.
    """

    call_cost: float = 8.0
    copy_cost: float = 0.01

    def work(self, j: int, n: int) -> float:
        """Cost of one row run from first change ``j`` (0: a full pass) on n image tokens."""
        return float(n + 1) if j == 0 else (n - j) + self.copy_cost * (j + 1)

    def plan(self, first_change: Sequence[int], n: int) -> list[tuple[int, list[int]]]:
        """First changes (one per region; 0 = no usable memory, n = unchanged) -> engine calls as
        ``(start, rows)``: start 0 is a full pass, j > 0 runs tokens[j:] on the cached prefix.
        Unchanged regions need no call and appear in none.

        Rows of a call start at its smallest j, so the best calls are runs of regions sorted by j;
        a dynamic programme over the cut points finds the cheapest (O(rows^2), rows <= a batch). A
        single full pass of every row is one of the plans considered, so in the model the plan is
        never dearer than recomputing everything.
        """
        order = sorted((j, i) for i, j in enumerate(first_change) if j < n)
        m = len(order)
        best = [0.0] + [float("inf")] * m  # best[b]: cheapest plan of the first b sorted rows
        cut = [0] * (m + 1)
        for b in range(1, m + 1):
            for a in range(b):
                c = best[a] + self.call_cost + (b - a) * self.work(order[a][0], n)
                if c < best[b]:
                    best[b], cut[b] = c, a
        calls = []
        b = m
        while b > 0:
            a = cut[b]
            calls.append((order[a][0], [i for _, i in order[a:b]]))
            b = a
        return calls[::-1]

    def cost(self, first_change: Sequence[int], n: int) -> tuple[float, float]:
        """(planned, full recompute of every row) in positions: the saving the plan expects."""
        planned = sum(
            self.call_cost + len(rows) * self.work(start, n) for start, rows in self.plan(first_change, n)
        )
        full = self.call_cost + len(first_change) * (n + 1.0) if len(first_change) else 0.0
        return planned, full


class PrefixMemory:
    """Each region's :class:`Prefix` from its last frame, by key (a stream keys by source name and
    region name). Grows by one entry per region ever seen, and holds each one's own arrays."""

    def __init__(self) -> None:
        self._prefixes: dict[Hashable, Prefix] = {}

    def recall(self, keys: Sequence[Hashable]) -> list[Prefix | None]:
        """The regions' prefixes, None for a region not seen before."""
        return [self._prefixes.get(k) for k in keys]

    def remember(self, keys: Sequence[Hashable], prefixes: Sequence[Prefix]) -> None:
        self._prefixes.update(zip(keys, prefixes, strict=True))

    def __len__(self) -> int:
        return len(self._prefixes)


def waves(keys: Sequence[Hashable]) -> list[list[int]]:
    """Indices of ``keys`` in waves that hold each key at most once, in order: a batch with two
    frames of one region runs the second after the first, so it reuses that frame, not an older one."""
    seen: dict[Hashable, int] = {}
    out: list[list[int]] = []
    for i, key in enumerate(keys):
        w = seen[key] = seen.get(key, -1) + 1
        if w == len(out):
            out.append([])
        out[w].append(i)
    return out


Prefill = Callable[[np.ndarray], tuple[np.ndarray, list[KV]]]  # image tokens (B, N) -> logits, present


def run_reusing(
    tokens: np.ndarray,
    memory: Sequence[Prefix | None],
    policy: ReusePolicy,
    engine: Engine,
    prefill: Prefill,
    n_codes: int,
) -> tuple[list[Prefix], list[int]]:
    """Run regions' tokens (B, N) on the engine, each only from its first token that changed since
    its previous frame (``memory``, one per row), where ``policy`` expects that to pay; the other
    regions go through ``prefill`` (BOS + tokens, an empty cache: a full pass).

    Returns each region's new :class:`Prefix` (an unchanged region keeps its own) and the positions
    it took from the cache: 0 after a full pass, j + 1 (BOS + tokens[:j]) from a cached prefix,
    N + 1 when nothing changed. ``memory`` and its prefixes are left as they were.
    """
    n = tokens.shape[1]
    changes = [first_change(m, t, n) for m, t in zip(memory, tokens, strict=True)]
    if not getattr(engine, "chunked_past", True):
        # an engine without a profile for several tokens on a cache (older TensorRT engines):
        # a changed region is recomputed in full, which is exact too
        changes = [0 if j < n else j for j in changes]
    prefixes = list(memory)
    cached = [n + 1] * len(tokens)  # unchanged: everything from the cache
    for start, rows in policy.plan(changes, n):
        if start == 0:
            logits, present = prefill(tokens[rows])
        else:
            logits, present = _from_prefix(engine, tokens[rows, start:], [memory[i] for i in rows], start)
        for r, i in enumerate(rows):
            logp = scoring.log_softmax(logits[r, :-1, :n_codes])
            if start:  # the log-probs up to the call's start are the cached prefix's
                logp = np.concatenate([memory[i].logp[: start + 1], logp])
            prefixes[i] = Prefix(tokens[i].copy(), _own_rows(present, r), logp, logits[r, -1].copy())
            cached[i] = start + 1 if start else 0
    return prefixes, cached


def _from_prefix(
    engine: Engine, new: np.ndarray, memory: list[Prefix], j: int
) -> tuple[np.ndarray, list[KV]]:
    """One call for regions whose tokens from ``j`` on are ``new`` (B, N - j): j is their smallest
    first change (recomputing a few unchanged tokens gives the same values and keeps the batch
    whole). The cache holds BOS + tokens[:j]; the outputs predict tokens j+1.. and the label."""
    past = [
        (
            np.concatenate([m.past[layer][0][:, :, : j + 1] for m in memory]),
            np.concatenate([m.past[layer][1][:, :, : j + 1] for m in memory]),
        )
        for layer in range(len(memory[0].past))
    ]
    return engine.run(new, past)


def _own_rows(present: list[KV], r: int) -> list[KV]:
    """Row ``r`` of every layer's KV, copied: a view would keep the whole batch's arrays alive for as
    long as the region is remembered (all regions of a batch pinned 16 caches each)."""
    return [(k[r : r + 1].copy(), v[r : r + 1].copy()) for k, v in present]

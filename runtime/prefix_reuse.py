"""KV prefix reuse for static cameras: what each region remembers, and when using it pays.

::

    tokens of a batch's regions --first change since each region's last frame--> j per region
                                          |
                       ReusePolicy.plan: sort by j, cut into engine calls (a cost model)
                                          |
        call from 0 (BOS + every token: a full pass)  or  call from j (the cache holds BOS +
        tokens[:j], every row of the call starts at the call's smallest j)   or  no call (j = n)

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

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pixlm.runtime.engine import KV


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

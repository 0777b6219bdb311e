"""Alerts a surveillance operator can keep on: a region that *stays* surprising, with a life cycle.

A region's anomaly score in one frame is a poor alarm: people walk through every busy tile, and a
walker surprises the scene model for the second or two it takes to pass. What separates a left
object from a walker is that it stays, so the alert score is a surprise that persisted::

    per-token surprise maps of a region over the last ``after_s`` seconds (scene time)
        -> elementwise minimum: what was surprising in every frame of that window (a walker's
           tokens change place from frame to frame and drop out; a left object's stay)
        -> reduced to one number: ``peak`` (the mean of the top tenth, bits per pixel) or ``mean``
        -> hot when above the region's threshold (open alerts: above ``hysteresis`` x threshold)
    life cycle per (source, region):
        not hot -> hot: ``start`` (a new alert id)
        still hot: ``update`` at most every ``update_every_s`` seconds, carrying the peak so far
        quiet for ``end_after_s`` seconds: ``end``, with its duration and peak

A camera moved or defocused makes most of its regions surprising at once; a covered one makes them
blank (one token nearly everywhere: a pixel model finds a dark, flat image *unsurprising*). When at
least ``TAMPER_SHARE`` of them are hot or blank, the source raises its own alert
(region ``tamper``, the whole frame), with the same life cycle (not with one threshold for every
region, ``--anomaly-threshold``, which is not fitted to them).

Because a token must stay surprising for ``after_s`` before the score rises, the start is
``after_s`` (plus a frame) after an object appears: ``--alert-after`` is that minimum time.

Thresholds are per region: a high quantile of the region's alert score over calibration frames
of the camera's own footage that the model did not train on (``pixlm-export`` computes them and
stores them in the bundle manifest, ``"alerts"``), so a busy walkway gets a higher bar than a
lawn. Scene time is the video's own clock for files (frame index / fps: a file read faster than
real time, or with ``--stride``, keeps its seconds) and the capture time for cameras. A source
whose time goes backwards (``--loop``, a reconnect) starts its regions afresh.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

SCORES = ("peak", "mean")  # how a region's persistent surprise map becomes one number
PHASES = ("start", "update", "end")
# A manifest threshold above this many bits per pixel would silence its region (a uniform guess over
# 256 codes of 2x2 pixels costs 2): refused on load, as the open-set gate's MAX_THRESHOLD is.
MAX_THRESHOLD = 64.0
MAX_GAP_S = 10.0  # a jump in scene time longer than this (a reconnect) starts a region afresh
TAMPER = "tamper"  # the region name of a camera's own alert
TAMPER_SHARE = 0.5  # covered, moved or defocused: at least half of the regions hot (or blank) at once
BLANK_SHARE = 0.5  # a region whose commonest token covers this share of it shows no texture (a covered lens)


def reduce_map(bits: np.ndarray, score: str = "peak") -> float:
    """One number of a surprise map: the mean of its top tenth (``peak``) or of all (``mean``)."""
    flat = np.asarray(bits, dtype=np.float64).ravel()
    if score == "mean":
        return float(flat.mean())
    k = max(1, flat.size // 10)
    return float(np.partition(flat, -k)[-k:].mean())


def scene_time(index: int, timestamp: float, fps: float | None) -> float:
    """Seconds on the scene's clock: frame index / fps for a file, the capture time otherwise."""
    return index / fps if fps else timestamp


@dataclass(frozen=True)
class AlertRules:
    """When a region raises an alert. ``thresholds``: per region name (a calibrated grid), with
    ``default`` for regions not named (None: those regions never alert)."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    default: float | None = None
    after_s: float = 1.0
    end_after_s: float = 2.0
    update_every_s: float = 5.0
    hysteresis: float = 0.8
    score: str = "peak"
    grid: tuple[int, int] | None = None  # the grid the thresholds were fitted for
    # a token counts only while its palette colour stays within this many grey levels of its
    # value in the window's last frame (a left object is still; a person standing shifts): None: off
    still_levels: float | None = None
    calibration: Mapping = field(default_factory=dict)  # which frames, which quantile: for people

    def __post_init__(self) -> None:
        if not (math.isfinite(self.after_s) and self.after_s >= 0):  # 0: one frame is enough
            raise ValueError(f"after_s must be a number of seconds >= 0, got {self.after_s}")
        if not (math.isfinite(self.end_after_s) and self.end_after_s > 0):
            raise ValueError(f"end_after_s must be a positive number of seconds, got {self.end_after_s}")
        if not (math.isfinite(self.update_every_s) and self.update_every_s >= 0):
            raise ValueError(f"update_every_s must be >= 0 seconds, got {self.update_every_s}")
        if self.still_levels is not None and not (
            math.isfinite(self.still_levels) and self.still_levels >= 0
        ):
            raise ValueError(f"still_levels must be a number >= 0 or None, got {self.still_levels}")
        if not 0 < self.hysteresis <= 1:
            raise ValueError(f"hysteresis must lie in (0, 1], got {self.hysteresis}")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}")
        for name, v in [*self.thresholds.items(), ("default", self.default)]:
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"alert threshold of {name} must be a number >= 0, got {v}")

    def threshold(self, region: str) -> float | None:
        return self.thresholds.get(region, self.default)

    def scaled(self, factor: float) -> AlertRules:
        """Every threshold times ``factor`` (the study's curve)."""
        return replace(
            self,
            thresholds={k: v * factor for k, v in self.thresholds.items()},
            default=None if self.default is None else self.default * factor,
        )

    def to_dict(self) -> dict:
        """The manifest's ``"alerts"`` entry."""
        return {
            "score": self.score,
            "after_s": self.after_s,
            "end_after_s": self.end_after_s,
            "update_every_s": self.update_every_s,
            "hysteresis": self.hysteresis,
            "grid": list(self.grid) if self.grid else None,
            "still_levels": self.still_levels,
            "thresholds": {k: round(float(v), 6) for k, v in self.thresholds.items()},
            "calibration": dict(self.calibration),
        }

    @classmethod
    def from_dict(cls, d: Mapping) -> AlertRules:
        """From a manifest entry; a value that would silence or break alerts is refused."""
        try:
            grid = d.get("grid")
            high = [k for k, v in dict(d["thresholds"]).items() if float(v) > MAX_THRESHOLD]
            if high:
                raise ValueError(f"thresholds above {MAX_THRESHOLD:g} bits/px would silence {high[:3]}")
            return cls(
                thresholds={str(k): float(v) for k, v in dict(d["thresholds"]).items()},
                after_s=float(d.get("after_s", 1.0)),
                end_after_s=float(d.get("end_after_s", 2.0)),
                update_every_s=float(d.get("update_every_s", 5.0)),
                hysteresis=float(d.get("hysteresis", 0.8)),
                score=str(d.get("score", "peak")),
                grid=(int(grid[0]), int(grid[1])) if grid else None,
                still_levels=None if d.get("still_levels") is None else float(d["still_levels"]),
                calibration=dict(d.get("calibration", {})),
            )
        except (KeyError, TypeError, IndexError, AttributeError) as e:
            raise ValueError(f"alert rules are malformed: {e!r}") from None


@dataclass
class Alert:
    """An open or ended alert of one region."""

    id: str
    started: float  # scene time of the start
    peak: float
    last_hot: float
    last_update: float


@dataclass
class Phase:
    """What one frame did to a region's alert: ``phase`` is None on most frames."""

    score: float  # the alert score (persistent surprise) in this frame
    hot: bool
    phase: str | None = None
    alert: Alert | None = None

    def fields(self, t: float) -> dict:
        """The alert fields an ``anomaly`` event carries."""
        a = self.alert
        assert a is not None and self.phase is not None
        end = a.last_hot if self.phase == "end" else t
        return {
            "phase": self.phase,
            "alert_id": a.id,
            "alert_score": round(self.score, 6),
            "peak": round(a.peak, 6),
            "started": round(a.started, 6),
            "duration_s": round(max(0.0, end - a.started), 3),
        }


def blank(codes: np.ndarray) -> bool:
    """Whether a region's tokens show no texture: its commonest code covers ``BLANK_SHARE`` of them."""
    codes = np.asarray(codes).ravel()
    return bool(np.bincount(codes).max() >= BLANK_SHARE * len(codes))


def code_distance(palette: np.ndarray) -> np.ndarray:
    """(K, K) largest difference in grey levels between two palette entries' pixels."""
    p = np.asarray(palette, dtype=np.int16)
    return np.abs(p[:, None, :] - p[None, :, :]).max(-1)


class Persistence:
    """A region's surprise maps over the last ``after_s`` seconds, and their elementwise minimum;
    with ``still`` ((K, K) palette distances) and ``levels``, a token whose colour moved by more
    than ``levels`` within the window counts as not surprising (it moved: not left there)."""

    def __init__(self, after_s: float, still: np.ndarray | None = None, levels: float | None = None) -> None:
        self.after_s, self.still, self.levels = after_s, still, levels
        self._maps: deque[tuple[float, np.ndarray, np.ndarray | None]] = deque()

    def push(self, t: float, bits: np.ndarray, codes: np.ndarray | None = None) -> np.ndarray | None:
        """Add a frame's map (and its token codes); return the minimum over a window that spans
        ``after_s`` (None until it does: a region seen for less has not stayed surprising yet)."""
        if self._maps and (t < self._maps[-1][0] or t - self._maps[-1][0] > MAX_GAP_S):
            self._maps.clear()  # time went back (a loop) or jumped (a reconnect)
        self._maps.append((t, np.asarray(bits, dtype=np.float32), codes))
        while len(self._maps) >= 2 and self._maps[1][0] <= t - self.after_s:
            self._maps.popleft()  # keep one frame at or before the window's start
        if t - self._maps[0][0] < self.after_s * (1 - 1e-9):
            return None
        low = np.min(np.stack([m for _, m, _ in self._maps]), axis=0)
        if self.still is None or self.levels is None or codes is None:
            return low
        moved = np.zeros(low.shape, bool)
        for _, _, c in self._maps:
            if c is not None:
                moved |= (self.still[c, codes] > self.levels).reshape(low.shape)
        return np.where(moved, 0.0, low)


class AlertBook:
    """Alert state of every (source, region): persistence and life cycle. One per stream and model;
    ``name`` (a model's, when a stream runs several) starts its alert ids, so they stay unique."""

    def __init__(self, rules: AlertRules, palette: np.ndarray | None = None, name: str = "") -> None:
        self.rules = rules
        self._prefix = f"{name}:" if name else ""
        self._still = (
            code_distance(palette) if palette is not None and rules.still_levels is not None else None
        )
        self._persist: dict[tuple[str, str], Persistence] = {}
        self._open: dict[tuple[str, str], Alert] = {}
        self._last_t: dict[tuple[str, str], float] = {}
        self._count = 0

    def observe(
        self, source: str, region: str, t: float, bits: np.ndarray, codes: np.ndarray | None = None
    ) -> Phase:
        """One frame of one region: ``bits`` is its surprise map (bits per pixel per token),
        ``codes`` its token codes (for ``still_levels``)."""
        key = (source, region)
        p = self._persist.get(key)
        if p is None:
            p = self._persist[key] = Persistence(self.rules.after_s, self._still, self.rules.still_levels)
        if key in self._last_t and t < self._last_t[key]:
            self._open.pop(key, None)  # a loop or restart: the old alert belongs to the old pass
        self._last_t[key] = t
        persistent = p.push(t, bits, codes)
        score = 0.0 if persistent is None else reduce_map(persistent, self.rules.score)
        return self.step(key, t, score)

    def tamper(self, source: str, t: float, hot: Sequence[bool], blank: Sequence[bool]) -> Phase:
        """The camera's own alert: most of its regions hot (they persisted already) or blank for
        ``after_s`` (covered, moved, defocused), with the same life cycle; one flag per region."""
        if not self.rules.thresholds:  # one bar for every region (an override) is not fitted to them
            return Phase(0.0, False)
        key = (source, TAMPER)
        p = self._persist.get(key)
        if p is None:
            p = self._persist[key] = Persistence(self.rules.after_s)
        held = p.push(t, np.asarray(blank, np.float32))  # blank in every frame of the window
        odd = np.asarray(hot, bool) | (held > 0 if held is not None else False)
        share = float(odd.mean()) if len(odd) else 0.0
        if share < TAMPER_SHARE and key not in self._open:
            return Phase(share, False)  # the common case
        return self.step(key, t, share, threshold=TAMPER_SHARE)

    def step(self, key: tuple[str, str], t: float, score: float, threshold: float | None = None) -> Phase:
        """The life cycle, given the alert score (the study calls this on stored scores)."""
        threshold = self.rules.threshold(key[1]) if threshold is None else threshold
        alert = self._open.get(key)
        if threshold is None:
            return Phase(score, False)
        if alert is None:
            if score <= threshold:
                return Phase(score, False)
            self._count += 1
            alert = Alert(f"{self._prefix}{key[0]}/{key[1]}/{self._count}", t, score, t, t)
            self._open[key] = alert
            return Phase(score, True, "start", alert)
        if score > self.rules.hysteresis * threshold:
            alert.last_hot, alert.peak = t, max(alert.peak, score)
            if self.rules.update_every_s and t - alert.last_update >= self.rules.update_every_s:
                alert.last_update = t
                return Phase(score, True, "update", alert)
            return Phase(score, True)
        if t - alert.last_hot >= self.rules.end_after_s:
            del self._open[key]
            return Phase(score, False, "end", alert)
        return Phase(score, False)

    def forget(self, source: str) -> None:
        """Drop a source's state (it reconnected or was replaced)."""
        for d in (self._persist, self._open, self._last_t):
            for k in [k for k in d if k[0] == source]:
                del d[k]


def fit_thresholds(
    scores: Mapping[str, Iterable[float]],
    quantile: float = 1.0,
    floor_quantile: float = 0.5,
    margin: float = 1.0,
) -> dict[str, float]:
    """Per-region thresholds from each region's alert scores on calibration frames: the
    ``quantile`` of its own scores, at least the ``floor_quantile`` of those values over all regions
    (a lawn tile that never surprised the model still needs a bar), times ``margin`` (calibration
    is seconds of footage; a stream runs for hours)."""
    own = {}
    for name, s in scores.items():
        s = np.asarray(list(s), dtype=np.float64)
        own[name] = float(np.quantile(s, quantile)) if len(s) else 0.0
    floor = float(np.quantile(list(own.values()), floor_quantile)) if own else 0.0
    return {k: margin * max(v, floor) for k, v in own.items()}

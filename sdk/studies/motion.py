"""Abnormal behaviour on a real camera: does a model of how the scene moves notice it?

::

    vtest.avi (10 frames/s): frames [0, 50%) trained the motion model (pixlm train --motion) and the
    appearance model; [50, 60%) calibrated both bundles' per-tile alert thresholds (pixlm-export);
    [60, 100%) is where behaviour is staged and every number is reported (every 2nd frame, as
    the bundles stream it)
    walkers: blobs unlike the training frames' median background, tracked frame to frame; their
    pixels are pasted by their own mask (no rectangle of path texture comes along)
    per seed, at random times in the report part, none overlapping another in space and time:
        running     a walker's footage at 3-4x speed for 2-4 s, on its own path, at the clip's rate
        intrusion   a walker moved, at walking pace, onto a path where walkers covered < 1% of
                    the training frames (the lawn)
        loitering   a walker who stops for 10-14 s where walkers pass (>= 5% of training frames),
                    swaying by a pixel
        wrong way   only in tiles whose training flow has one dominant direction (the mean
                    direction's resultant length >= 0.8); on vtest.avi people walk both ways
                    through every busy tile, and the study says so
    scored per region (the 6x8 grid) and second (the highest score of its frames):
        pixlm motion       the motion bundle's per-token surprise, top tenth (bits per pixel)
        pixlm appearance   the scene bundle's, the same way (what motion adds is the difference)
        pixlm both         both bundles on the camera: the larger of score / its tile's threshold
        flow histogram     the same optical flow as 33-bin histograms (still; 4 speeds x 8
                           directions), mean Hellinger distance to the tile's 5 nearest training ones
        frame difference   mean absolute grey change since the previous frame, as z of the tile's
                           training frames
    metrics: AUROC per kind (positive: a region covering >= 1/4 of the anomaly's box in that second;
    negative: a region-second no anomaly touched), over all region-seconds and over those with
    motion (>= 1% of the tile's pixels changed by > 25 grey levels between frames) only;
    alerted within 3 s and false alerts a minute, each method through the motion bundle's rule
    (pixlm.runtime.alerts, thresholds: each tile's highest calibration score), "both" raising
    either bundle's alerts
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from pixlm.data import read_frames
from pixlm.progress import bar
from pixlm.runtime.alerts import AlertRules, code_distance, fit_thresholds, reduce_map
from pixlm.runtime.defaults import VTEST
from pixlm.runtime.motion import Motion, velocity_of
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.regions import Region, grid_regions
from pixlm.studies.alerts import (
    _cover,
    _overlap,
    alert_events,
    median_background,
    persistent_scores,
    split_frames,
)
from pixlm.studies.common import auroc, write_json, write_png

KINDS = ("running", "intrusion", "loitering", "wrong-way")
CONTROL = "walking"  # staged like the anomalies but normal: a walker at its own pace on its own path
STAGED = (*KINDS, CONTROL)
METHODS = ("pixlm motion", "pixlm appearance", "pixlm both", "flow histogram", "frame difference")
BASELINES = ("flow histogram", "frame difference")
WITHIN_S = 3.0  # alerted: an alert on a region covering the anomaly within this long of its start
GRACE_S = 2.0  # a region-second up to this long after an anomaly left it is neither normal nor not
MOVING = 25  # grey levels: a pixel that changed more between two frames moved
MOVING_SHARE = 0.01  # a region-second "with motion": this share of its pixels moved in some frame
NARROW = 0.8  # wrong way: a tile's training directions' resultant length at least this
STILL_SPEED = 0.02  # frame heights per second: slower is "still" in the flow histogram
SPEED_EDGES = (0.02, 0.06, 0.15, 0.3)  # the histogram's speed bins (frame heights per second)
KNN = 5
FACTORS = np.round(np.geomspace(0.5, 8.0, 17), 3)  # threshold scalings: the found/false curve
DESIGN_UNTIL = "0.6"  # the design's anomalies are staged in 50-60%: frames no report uses


@dataclass
class MotionOptions:
    bundle: Path = Path("build/vtest-motion")
    scene_bundle: Path | None = Path("build/vtest-scene")
    out: Path = Path("out/studies")
    video: str = VTEST
    seeds: int = 7
    quick: bool = False
    design: bool = False  # on a design bundle: choose the alert margin on frames before the report part


@dataclass
class Track:
    """A walker followed frame to frame: per clip frame, its box and its pixels under its mask."""

    frames: list[int] = field(default_factory=list)
    boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    pixels: list[np.ndarray] = field(default_factory=list)  # (h, w, 3) BGR
    masks: list[np.ndarray] = field(default_factory=list)  # (h, w) bool


@dataclass
class Staged:
    """One staged anomaly: per report frame position, what is pasted where."""

    kind: str
    start: float  # seconds from the first report frame
    end: float
    paste: dict[int, tuple[tuple[int, int, int, int], np.ndarray, np.ndarray]]  # j -> box, pixels, mask
    at: dict[int, float] = field(default_factory=dict)  # j -> its time, seconds from the first report frame

    def union(self) -> tuple[int, int, int, int]:
        b = np.array([p[0] for p in self.paste.values()])
        x0, y0 = b[:, 0].min(), b[:, 1].min()
        return (int(x0), int(y0), int((b[:, 0] + b[:, 2]).max() - x0), int((b[:, 1] + b[:, 3]).max() - y0))


# -- walkers -------------------------------------------------------------------------------------
def walker_blobs(frame: np.ndarray, background: np.ndarray) -> tuple[int, np.ndarray, np.ndarray]:
    """Connected foreground blobs (OpenCV's stats and labels) of a frame against the background."""
    fg = (cv2.absdiff(frame, background).astype(np.int16).sum(2) > 60).astype(np.uint8)
    fg = cv2.morphologyEx(fg, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    fg = cv2.morphologyEx(fg, cv2.MORPH_CLOSE, np.ones((7, 7), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(fg)
    return n, labels, stats


def track_walkers(frames: list[np.ndarray], background: np.ndarray, min_len: int = 20) -> list[Track]:
    """Single upright walkers (blobs of 500-8000 px, taller than wide), each matched to the nearest
    blob of the next frame within 25 px; a track ends at the first frame without one."""
    live: list[Track] = []
    done: list[Track] = []
    for i, f in enumerate(frames):
        n, labels, stats = walker_blobs(f, background)
        blobs = [
            k
            for k in range(1, n)
            if 500 <= stats[k, 4] <= 8000 and stats[k, 3] >= 1.2 * stats[k, 2] and 40 <= stats[k, 3] <= 170
        ]
        centre = {k: (stats[k, 0] + stats[k, 2] / 2, stats[k, 1] + stats[k, 3] / 2) for k in blobs}
        taken, still = set(), []
        for tr in live:
            x, y, w, h = tr.boxes[-1]
            c = (x + w / 2, y + h / 2)
            near = [(np.hypot(centre[k][0] - c[0], centre[k][1] - c[1]), k) for k in blobs if k not in taken]
            near = [d for d in near if d[0] <= 25]
            if not near:
                (done if len(tr.frames) >= min_len else []).append(tr)
                continue
            k = min(near)[1]
            taken.add(k)
            _extend(tr, i, f, labels, stats, k)
            still.append(tr)
        for k in blobs:
            if k not in taken:
                tr = Track()
                _extend(tr, i, f, labels, stats, k)
                still.append(tr)
        live = still
    return done + [tr for tr in live if len(tr.frames) >= min_len]


def _extend(tr: Track, i: int, frame: np.ndarray, labels: np.ndarray, stats: np.ndarray, k: int) -> None:
    x, y, w, h = (int(v) for v in stats[k, :4])
    tr.frames.append(i)
    tr.boxes.append((x, y, w, h))
    tr.pixels.append(frame[y : y + h, x : x + w].copy())
    tr.masks.append(labels[y : y + h, x : x + w] == k)


# -- staging -------------------------------------------------------------------------------------
def stage(
    seed: int,
    tracks: list[Track],
    report: np.ndarray,
    fps: float,
    traffic: np.ndarray,
    counts: dict[str, int],
    wrong_way_tiles: list[Region],
) -> list[Staged]:
    """``counts[kind]`` anomalies of each kind at random times, none overlapping another in space
    and time (see the module's docstring)."""
    rng = np.random.default_rng(3000 + seed)
    h, w = traffic.shape
    t_rep = (report - report[0]) / fps
    out: list[Staged] = []
    for kind in STAGED:
        made, tries = 0, 0
        while made < counts.get(kind, 0) and tries < 2000:
            tries += 1
            a = _one(kind, rng, tracks, t_rep, fps, traffic, (w, h), wrong_way_tiles)
            if a is None or not a.paste:
                continue
            box = a.union()
            if any(
                _overlap(box, o.union()) and a.start < o.end + GRACE_S and o.start < a.end + GRACE_S
                for o in out
            ):
                continue
            out.append(a)
            made += 1
    return out


def _one(kind, rng, tracks, t_rep, fps, traffic, size, wrong_way_tiles) -> Staged | None:
    w, h = size
    span = float(t_rep[-1])
    if kind in ("running", CONTROL):
        speed, dur = (rng.uniform(3, 4), rng.uniform(2, 4)) if kind == "running" else (1.0, rng.uniform(3, 6))
        need = int(np.ceil(speed * dur * fps)) + 1
        ok = [t for t in tracks if len(t.frames) >= need]
        if not ok or span < dur:
            return None
        tr = ok[rng.integers(len(ok))]
        k0 = int(rng.integers(0, len(tr.frames) - need + 1))
        start = float(rng.uniform(0, span - dur))
        pos = lambda dt: k0 + int(round(speed * dt * fps))  # noqa: E731
        return _render(kind, tr, t_rep, start, dur, pos, (0, 0))
    if kind == "intrusion":
        dur = rng.uniform(4, 8)
        need = int(np.ceil(dur * fps)) + 1
        ok = [t for t in tracks if len(t.frames) >= need]
        if not ok or span < dur:
            return None
        tr = ok[rng.integers(len(ok))]
        k0 = int(rng.integers(0, len(tr.frames) - need + 1))
        boxes = tr.boxes[k0 : k0 + need]
        for _ in range(50):  # an offset that puts the whole path where walkers never were
            dx, dy = int(rng.integers(-w, w)), int(rng.integers(-h, h))
            moved = [(x + dx, y + dy, bw, bh) for x, y, bw, bh in boxes]
            if (
                all(0 <= x and x + bw <= w and 0 <= y and y + bh <= h for x, y, bw, bh in moved)
                and max(traffic[y : y + bh, x : x + bw].mean() for x, y, bw, bh in moved) < 0.01
            ):
                start = float(rng.uniform(0, span - dur))
                return _render(kind, tr, t_rep, start, dur, lambda dt: k0 + int(round(dt * fps)), (dx, dy))
        return None
    if kind == "loitering":
        dur = rng.uniform(10, 14)
        if span < dur:
            return None
        tr = tracks[rng.integers(len(tracks))]
        k = int(rng.integers(0, len(tr.frames) - 1))
        x, y, bw, bh = tr.boxes[k]
        if traffic[y : y + bh, x : x + bw].mean() < 0.05:
            return None  # only where walkers pass
        start = float(rng.uniform(0, span - dur))
        jitter = rng.integers(-1, 2, size=(len(t_rep), 2))
        a = _render(kind, tr, t_rep, start, dur, lambda dt: k + int(dt) % 2, (0, 0))
        for j, (box, px, m) in a.paste.items():  # sway by a pixel
            a.paste[j] = ((box[0] + int(jitter[j, 0]), box[1] + int(jitter[j, 1]), box[2], box[3]), px, m)
        a.paste = {j: p for j, p in a.paste.items() if _inside(p[0], w, h)}
        a.at = {j: t for j, t in a.at.items() if j in a.paste}
        return a
    if not wrong_way_tiles:  # wrong way: a walker through a one-way tile, played backwards
        return None
    tile = wrong_way_tiles[rng.integers(len(wrong_way_tiles))]
    dur = rng.uniform(3, 6)
    need = int(np.ceil(dur * fps)) + 1
    ok = [t for t in tracks if len(t.frames) >= need and any(_cover(tile, b) > 0.5 for b in t.boxes)]
    if not ok or span < dur:
        return None
    tr = ok[rng.integers(len(ok))]
    inside = [k for k, b in enumerate(tr.boxes) if _cover(tile, b) > 0.5]  # the stretch crosses the tile
    k0 = int(np.clip(inside[rng.integers(len(inside))] - need // 2, 0, len(tr.frames) - need))
    start = float(rng.uniform(0, span - dur))
    return _render(kind, tr, t_rep, start, dur, lambda dt: k0 + need - 1 - int(round(dt * fps)), (0, 0))


def _inside(box, w, h) -> bool:
    return box[0] >= 0 and box[1] >= 0 and box[0] + box[2] <= w and box[1] + box[3] <= h


def _render(kind, tr: Track, t_rep, start, dur, pos, offset) -> Staged:
    paste, at = {}, {}
    for j, t in enumerate(t_rep):
        if start <= t < start + dur:
            k = min(max(pos(t - start), 0), len(tr.frames) - 1)
            x, y, bw, bh = tr.boxes[k]
            paste[j] = ((x + offset[0], y + offset[1], bw, bh), tr.pixels[k], tr.masks[k])
            at[j] = float(t)
    return Staged(kind, start, start + dur, paste, at)


def show(frame: np.ndarray, j: int, staged: list[Staged]) -> np.ndarray:
    """Report frame ``j`` with every anomaly staged at it pasted in."""
    on = [a.paste[j] for a in staged if j in a.paste]
    if not on:
        return frame
    out = frame.copy()
    for (x, y, bw, bh), px, m in on:
        out[y : y + bh, x : x + bw][m] = px[m]
    return out


# -- scores --------------------------------------------------------------------------------------
def flow_histogram(velocity: np.ndarray) -> np.ndarray:
    """(h, w, 2) velocity -> 33 shares: still, then 4 speeds x 8 directions."""
    v = velocity.reshape(-1, 2)
    speed = np.hypot(v[:, 0], v[:, 1])
    out = np.zeros(1 + 4 * 8)
    out[0] = (speed < STILL_SPEED).sum()
    moving = speed >= STILL_SPEED
    sb = np.searchsorted(SPEED_EDGES, speed[moving], side="right") - 1
    db = ((np.arctan2(v[moving, 1], v[moving, 0]) + np.pi) / (2 * np.pi) * 8).astype(int) % 8
    np.add.at(out, 1 + sb * 8 + db, 1)
    return out / max(1, len(v))


class Scores:
    """Every method's per-frame, per-tile scores over one sequence of frames (state kept inside)."""

    def __init__(self, rec: Recognizer, scene: Recognizer | None, regions: list[Region], fps: float) -> None:
        self.rec, self.scene, self.regions, self.fps = rec, scene, regions, fps
        self.still = code_distance(scene.tokenizer.palette) if scene is not None else None

    def run(self, frames: list[np.ndarray], index: np.ndarray, desc: str) -> dict[str, np.ndarray]:
        """(F, R) scores per method (F frames, the first has no motion: scored 0), the moving share
        (F, R), the motion maps (F, R, rows, cols) and the scene model's maps and codes."""
        motion = Motion(self.rec.tokenizer.config.motion)
        ppt = self.rec.pixels_per_token
        f, r = len(frames), len(self.regions)
        out = {m: np.zeros((f, r)) for m in ("pixlm motion", "frame difference")}
        out["moving"] = np.zeros((f, r))
        out["hist"] = np.zeros((f, r, 33))
        grid = self.rec.tokenizer.grid
        out["maps"] = np.zeros((f, r, *grid), np.float32)
        sg = self.scene.tokenizer.grid if self.scene else grid
        out["scene_maps"] = np.zeros((f, r, *sg), np.float32)
        out["scene_codes"] = np.zeros((f, r, sg[0] * sg[1]), np.int64)
        prev = None
        with bar(desc=desc, total=f, leave=False, unit="frame") as pb:
            for i, frame in enumerate(frames):
                grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                image = motion.image("clip", frame, index[i] / self.fps)
                if image is not None:
                    tokens = self.rec.tokenizer.encode_batch([g.crop(image) for g in self.regions])
                    res = self.rec.predict_tokens(tokens, nll_map=True)
                    v = velocity_of(image[::4, ::4], motion.config)
                    diff = cv2.absdiff(grey, prev)
                    for k, g in enumerate(self.regions):
                        m = res[k].nll_map / ppt
                        out["maps"][i, k] = m
                        out["pixlm motion"][i, k] = reduce_map(m, "peak")
                        d = g.crop(diff)
                        out["frame difference"][i, k] = d.mean()
                        out["moving"][i, k] = (d > MOVING).mean()
                        out["hist"][i, k] = flow_histogram(_crop4(g, v))
                if self.scene is not None:
                    crops = [g.crop(frame) for g in self.regions]
                    res = self.scene.predict_batch(crops, nll_map=True)
                    codes = self.scene.tokenizer.encode_batch(crops)
                    for k in range(r):
                        out["scene_maps"][i, k] = res[k].nll_map / self.scene.pixels_per_token
                        out["scene_codes"][i, k] = codes[k]
                prev = grey
                pb.update()
        return out


def _crop4(g: Region, v: np.ndarray) -> np.ndarray:
    return v[g.y // 4 : (g.y + g.h) // 4, g.x // 4 : (g.x + g.w) // 4]


def hist_distance(train: np.ndarray, hists: np.ndarray) -> np.ndarray:
    """(F, R) mean Hellinger distance of each histogram to its tile's ``KNN`` nearest training ones."""
    out = np.zeros(hists.shape[:2])
    for r in range(hists.shape[1]):
        a, b = np.sqrt(train[:, r]), np.sqrt(hists[:, r])
        d = np.sqrt(np.maximum(((b[:, None, :] - a[None, :, :]) ** 2).sum(-1), 0) / 2)
        out[:, r] = np.sort(d, axis=1)[:, :KNN].mean(1)
    return out


def direction_spread(train: dict, regions: list[Region]) -> dict[str, dict]:
    """Per tile: how moving pixels' directions spread over the training frames (the resultant length
    of their unit vectors: 1 = one direction, 0 = evenly both ways) and the share of moving pixels."""
    h = train["hist"]  # (F, R, 33)
    angles = (np.arange(8) + 0.5) / 8 * 2 * np.pi - np.pi
    out = {}
    for k, g in enumerate(regions):
        per_dir = h[:, k, 1:].reshape(-1, 4, 8).sum((0, 1))
        total = per_dir.sum()
        vec = (per_dir * np.exp(1j * angles)).sum() / max(total, 1e-9)
        out[g.name] = {"resultant": round(float(abs(vec)), 3), "moving": round(float(total / len(h)), 4)}
    return out


def stride_check(frames: list[np.ndarray], config, gap: int = 3) -> dict:
    """Why optical flow per second and not frame differences: over the same frames, each signal
    measured between neighbours and between frames ``gap`` apart (``--stride 3``, or a camera
    dropping frames). The velocity should not change; the difference grows."""
    out = {}
    for g in (1, gap):
        motion, diffs, speeds = Motion(config), [], []
        for i in range(0, len(frames) - g, g):
            a, b = (cv2.cvtColor(frames[k], cv2.COLOR_BGR2GRAY) for k in (i, i + g))
            diffs.append(float(cv2.absdiff(a, b).mean()))
            motion.image("c", frames[i], i / 10)
            image = motion.image("c", frames[i + g], (i + g) / 10)
            v = np.hypot(*np.moveaxis(velocity_of(image[::4, ::4], motion.config), -1, 0))
            speeds.append(float(v[v >= STILL_SPEED].mean()) if (v >= STILL_SPEED).any() else 0.0)
            motion.reset()
        out[g] = (np.mean(diffs), np.mean(speeds))
    return {
        "frame_difference_ratio": round(out[gap][0] / out[1][0], 3),
        "flow_speed_ratio": round(out[gap][1] / out[1][1], 3),
        "gap": gap,
    }


# -- the study -----------------------------------------------------------------------------------
def run(opts: MotionOptions, log: Callable[[str], None] = print) -> dict:
    t0 = time.time()
    rec = Recognizer.open(opts.bundle, backend="ort-cpu", unknown=False)
    if rec.tokenizer.kind != "motion":
        raise ValueError(f"{opts.bundle}: a {rec.tokenizer.kind} bundle; this study needs a motion bundle")
    rules = rec.bundle.alert_rules
    if rules is None:
        raise ValueError(f"{opts.bundle}: no alert thresholds in its manifest; export it with --alert-frames")
    scene = None
    if opts.scene_bundle is not None:
        scene = Recognizer.open(opts.scene_bundle, backend="ort-cpu", unknown=False)
        if scene.bundle.alert_rules is None or scene.bundle.alert_rules.grid != rules.grid:
            raise ValueError(f"{opts.scene_bundle}: needs alert thresholds for the {rules.grid} grid")
    frames = read_frames(opts.video, 3)
    fps = cv2.VideoCapture(str(opts.video)).get(cv2.CAP_PROP_FPS) or 10.0
    until = DESIGN_UNTIL if opts.design else None
    idx = {k: np.arange(len(frames))[s] for k, s in split_frames(rules, len(frames), until).items()}
    if opts.quick:
        idx["report"], idx["train"] = idx["report"][:110], idx["train"][::3]
    h, w = frames[0].shape[:2]
    regions = grid_regions(w, h, *(rules.grid or (6, 8)))
    names = [g.name for g in regions]
    train_frames = [frames[i] for i in idx["train"]]
    background = median_background(train_frames)
    traffic = np.mean([walker_blobs(f, background)[1] > 0 for f in train_frames[::3]], axis=0)
    tracks = track_walkers(frames, background)
    log(f"{len(tracks)} walker tracks ({sum(len(t.frames) for t in tracks)} frames)")
    scorer = Scores(rec, scene, regions, fps)
    train = scorer.run(train_frames, idx["train"], "training frames")
    spread = direction_spread(train, regions)
    busy = {n: s for n, s in spread.items() if s["moving"] >= 0.005}
    one_way = [g for g in regions if g.name in busy and busy[g.name]["resultant"] >= NARROW]
    log(
        f"wrong way: {len(one_way)} of {len(busy)} busy tiles have one dominant direction "
        f"(resultant length: median {np.median([s['resultant'] for s in busy.values()]):.2f}, "
        f"max {max(s['resultant'] for s in busy.values()):.2f}; needed {NARROW})"
    )
    check = stride_check(frames[idx["train"][0] : idx["train"][0] + 90], rec.tokenizer.config.motion)
    log(
        f"frames 3 apart instead of 1: frame difference x{check['frame_difference_ratio']:.2f}, "
        f"flow speed per second x{check['flow_speed_ratio']:.2f}"
    )
    calib = scorer.run([frames[i] for i in idx["calib"]], idx["calib"], "calibration frames")
    mu, sd = train["frame difference"][1:].mean(0), train["frame difference"][1:].std(0) + 1e-6
    thresholds = {"pixlm motion": dict(rules.thresholds)}
    for m in BASELINES:
        cal = _baseline(m, calib, train, mu, sd)[1:]
        margin = float(rules.calibration.get("margin", 1.0))  # the bundle's rule, margin included
        thresholds[m] = fit_thresholds({n: cal[:, k] for k, n in enumerate(names)}, 1.0, 0.5, margin)
    srules = scene.bundle.alert_rules if scene else None
    seeds = 1 if opts.quick else opts.seeds
    counts = (
        {"running": 2, "intrusion": 2, "loitering": 1, CONTROL: 1}
        if opts.quick
        else {"running": 4, "intrusion": 4, "loitering": 2, "wrong-way": 2, CONTROL: 2}
    )
    t_rep = (idx["report"] - idx["report"][0]) / fps
    duration = float(len(idx["report"]) * (idx["report"][1] - idx["report"][0]) / fps)
    curve = {m: np.zeros((len(FACTORS), 2)) for m in ("pixlm motion", *BASELINES)}
    pooled = {
        m: {"pos": {k: [] for k in STAGED}, "neg": [], "pos_m": {k: [] for k in STAGED}, "neg_m": []}
        for m in METHODS
    }
    alerted = {m: {k: [] for k in STAGED} for m in METHODS}
    false = {m: 0 for m in METHODS}
    example = None
    for seed in range(seeds):
        staged = stage(seed, tracks, idx["report"], fps, traffic, counts, one_way)
        shown = [show(frames[i], j, staged) for j, i in enumerate(idx["report"])]
        s = scorer.run(shown, idx["report"], f"seed {seed}")
        per_frame = {"pixlm motion": s["pixlm motion"]}
        for m in BASELINES:
            per_frame[m] = _baseline(m, s, train, mu, sd)
        events = {
            m: alert_events(per_frame[m], t_rep, names, _rules(rules, thresholds[m]))
            for m in ("pixlm motion", *BASELINES)
        }
        if scene is not None:
            sc = persistent_scores(s["scene_maps"], t_rep, 0.0, "peak")
            per_frame["pixlm appearance"] = sc
            th_m = np.array([rules.thresholds[n] for n in names])
            th_a = np.array([srules.thresholds[n] for n in names])
            per_frame["pixlm both"] = np.maximum(s["pixlm motion"] / th_m, sc / th_a)
            ps = persistent_scores(
                s["scene_maps"],
                t_rep,
                srules.after_s,
                srules.score,
                s["scene_codes"],
                scorer.still,
                srules.still_levels,
            )
            events["pixlm appearance"] = alert_events(ps, t_rep, names, srules)
            events["pixlm both"] = sorted(events["pixlm motion"] + events["pixlm appearance"])
        for m in curve:
            for k, f in enumerate(FACTORS):
                ev = alert_events(per_frame[m], t_rep, names, _rules(rules, thresholds[m]).scaled(f))
                found, nfalse = match_alerts([(t, regions[r], ph) for t, r, ph in ev], staged)
                hits = sum(x is not None for x, a in zip(found, staged, strict=True) if a.kind != CONTROL)
                curve[m][k] += [hits, nfalse]
        for m, pf in per_frame.items():
            _region_seconds(pooled[m], pf, s["moving"], t_rep, staged, regions)
            said = [(t, regions[r], phase) for t, r, phase in events[m]]
            found, nfalse = match_alerts(said, staged)
            for a, f in zip(staged, found, strict=True):
                alerted[m][a.kind].append(f)
            false[m] += nfalse
        if example is None:
            example = _example(staged, shown, s, regions, rec)
        kinds = ", ".join(f"{k} {sum(a.kind == k for a in staged)}" for k in KINDS)
        log(f"seed {seed}: {len(staged)} staged ({kinds})")
    minutes = seeds * duration / 60
    results = {
        "settings": {
            "video": Path(opts.video).name,
            "bundle": str(opts.bundle),
            "scene_bundle": str(opts.scene_bundle) if scene else None,
            "frames": {k: [int(v[0]), int(v[-1]) + 1, int(v[1] - v[0])] for k, v in idx.items()},
            "report_seconds": round(duration, 1),
            "seeds": seeds,
            "per_seed": counts,
            "tracks": len(tracks),
            "quick": opts.quick,
        },
        "direction_spread": {"one_way_tiles": [g.name for g in one_way], "busy_tiles": busy},
        "stride_check": check,
        "methods": {},
    }
    for m in METHODS:
        if m not in pooled or not pooled[m]["neg"]:
            continue
        p = pooled[m]
        row = {"auroc": {}, "auroc_moving": {}, "alerted_within_3s": {}, "anomalies": {}}
        for k in STAGED:
            if not p["pos"][k]:
                continue
            row["auroc"][k] = round(auroc(np.array(p["neg"]), np.array(p["pos"][k])), 4)
            if p["pos_m"][k]:
                row["auroc_moving"][k] = round(auroc(np.array(p["neg_m"]), np.array(p["pos_m"][k])), 4)
            got = alerted[m][k]
            row["alerted_within_3s"][k] = round(float(np.mean([g is not None for g in got])), 4)
            row["anomalies"][k] = len(got)
        row["false_alerts"] = false[m]
        row["false_per_minute"] = round(false[m] / minutes, 2)
        row["region_seconds"] = {"normal": len(p["neg"]), "normal_moving": len(p["neg_m"])}
        if m in curve:
            n = sum(len(v) for k, v in alerted[m].items() if k != CONTROL)
            row["curve"] = {
                "factor": FACTORS.tolist(),
                "alerted_within_3s": (curve[m][:, 0] / max(n, 1)).round(4).tolist(),
                "false_per_minute": (curve[m][:, 1] / minutes).round(2).tolist(),
            }
        results["methods"][m] = row
    _compare(results["methods"])
    results["goal"] = _goal(results["methods"])
    if opts.design:
        base = float(rules.calibration.get("margin", 1.0))  # the design bundle's own margin
        results["choice"] = _choose(results["methods"]["pixlm motion"]["curve"], base)
        log(f"design: margin {results['choice']['margin']} ({results['choice']})")
    results["settings"]["wall_seconds"] = round(time.time() - t0, 1)
    name = "motion-design" if opts.design else "motion-quick" if opts.quick else "motion"
    write_json(opts.out / f"{name}.json", results)
    if example is not None:
        write_png(opts.out / f"{name}.jpg", example)
    return results


def _baseline(m: str, s: dict, train: dict, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """A baseline's (F, R) scores; 0 on a sequence's first frame, which has no motion yet."""
    if m == "frame difference":
        out = (s["frame difference"] - mu) / sd
    else:
        out = hist_distance(train["hist"][1:], s["hist"])
    out[0] = 0.0
    return out


def _rules(rules: AlertRules, thresholds: dict) -> AlertRules:
    from dataclasses import replace

    return replace(rules, thresholds=dict(thresholds))


def _region_seconds(p: dict, scores: np.ndarray, moving: np.ndarray, t_rep, staged, regions) -> None:
    """Pool one seed's region-seconds: positives by kind (a region covering >= 1/4 of the box in
    that second), negatives (no anomaly touched the region in that second or ``GRACE_S`` before)."""
    sec = t_rep.astype(int)
    for second in np.unique(sec):
        js = np.nonzero(sec == second)[0]
        js = js[js > 0]  # the first frame has no motion
        if len(js) == 0:
            continue
        for k, g in enumerate(regions):
            score = float(scores[js, k].max())
            mov = bool(moving[js, k].max() >= MOVING_SHARE)
            kinds, touched = set(), False
            for a in staged:
                for j in js:
                    if j in a.paste:
                        c = _cover(g, a.paste[j][0])
                        touched |= c > 0
                        if c >= 0.25:
                            kinds.add(a.kind)
                if a.start - 0.5 <= second <= a.end + GRACE_S and _cover(g, a.union()) > 0:
                    touched = True
            for kind in kinds:
                p["pos"][kind].append(score)
                if mov:
                    p["pos_m"][kind].append(score)
            if not touched or kinds == {CONTROL}:  # a staged ordinary walker is normal, pasted or not
                p["neg"].append(score)
                if mov:
                    p["neg_m"].append(score)


def match_alerts(
    events: list[tuple[float, Region, str]], staged: list[Staged]
) -> tuple[list[float | None], int]:
    """Each anomaly's time to its first alert (start or update) on a region covering >= 1/4 of
    its box within ``WITHIN_S`` of its start (None: not alerted), and the alert starts on regions
    no anomaly touched then (false). ``events``: (seconds from the first report frame, region, phase)."""
    found: list[float | None] = [None] * len(staged)
    false = 0
    for t, region, phase in events:
        if phase == "end":
            continue
        on = False
        for n, a in enumerate(staged):
            if not (a.start <= t <= a.end + GRACE_S):
                continue
            near = [j for j, tj in a.at.items() if abs(tj - t) <= 0.5]
            if t <= a.start + WITHIN_S and any(_cover(region, a.paste[j][0]) >= 0.25 for j in near):
                found[n] = t - a.start if found[n] is None else found[n]
            on |= a.kind != CONTROL and _cover(region, a.union()) > 0  # on a staged walker: false
        false += phase == "start" and not on
    return found, false


def runner_clip(
    frames: list[np.ndarray], background: np.ndarray, report: np.ndarray, fps: float, seed: int = 0
) -> tuple[Staged, list[np.ndarray]]:
    """One walker running in the ``report`` frames (the first seed's staging that fits), and the
    frames with it: the demo's clip."""
    tracks = track_walkers(frames, background)
    nowhere = np.zeros(frames[0].shape[:2], np.float32)
    for s in range(seed, seed + 50):
        staged = stage(s, tracks, report, fps, nowhere, {"running": 1}, [])
        if staged:
            return staged[0], [show(frames[i], j, staged) for j, i in enumerate(report)]
    raise ValueError("no walker was tracked long enough to stage a runner in these frames")


def _choose(c: dict, base: float) -> dict:
    """The design's margin: the least threshold factor at <= 1 false alert a minute (the highest
    factor when none gets there)."""
    ok = [k for k, fa in enumerate(c["false_per_minute"]) if fa <= 1.0]
    k = ok[0] if ok else len(c["factor"]) - 1
    return {
        "margin": round(c["factor"][k] * base, 3),
        "alerted_within_3s": c["alerted_within_3s"][k],
        "false_per_minute": c["false_per_minute"][k],
        "rule": "the least factor at <= 1 false alert a minute",
    }


def _compare(methods: dict) -> None:
    """Each baseline's best share alerted within 3 s at no more false alerts a minute than pixlm
    motion's, from its curve (the margins differ in meaning between scores)."""
    px = methods["pixlm motion"]
    rate = px["false_per_minute"]
    for m in BASELINES:
        c = methods[m]["curve"]
        ok = [a for a, fa in zip(c["alerted_within_3s"], c["false_per_minute"], strict=True) if fa <= rate]
        methods[m]["alerted_at_pixlm_false_rate"] = max(ok) if ok else 0.0
    hits = [x for k, v in px["alerted_within_3s"].items() if k != CONTROL for x in [v] * px["anomalies"][k]]
    px["alerted_at_pixlm_false_rate"] = round(float(np.mean(hits)), 4) if hits else 0.0


def _goal(methods: dict) -> dict:
    """Per kind: pixlm motion's AUROC on region-seconds with motion >= 0.95 and >= the better
    baseline's + 0.05."""
    px = methods.get("pixlm motion", {}).get("auroc_moving", {})
    out = {}
    for k, a in px.items():
        if k == CONTROL:
            continue
        best = max(methods[b]["auroc_moving"].get(k, 0.0) for b in BASELINES if b in methods)
        out[k] = {"auroc": a, "best_baseline": best, "met": bool(a >= 0.95 and a >= best + 0.05)}
    return out


def _example(staged, shown, s, regions, rec) -> np.ndarray | None:
    """The middle frame of the first running anomaly beside its motion-surprise map (JPEG)."""
    run = [a for a in staged if a.kind == "running"]
    if not run:
        return None
    a = run[0]
    js = sorted(a.paste)
    j = js[len(js) // 2]
    frame = shown[j].copy()
    h, w = frame.shape[:2]
    heat = np.zeros((h, w), np.float32)
    for k, g in enumerate(regions):
        heat[g.y : g.y + g.h, g.x : g.x + g.w] = cv2.resize(
            s["maps"][j, k], (g.w, g.h), interpolation=cv2.INTER_NEAREST
        )
    top = max(float(np.percentile(heat, 99.5)), 1e-6)
    colour = cv2.applyColorMap(np.clip(heat / top * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)
    x, y, bw, bh = a.paste[j][0]
    for im in (frame, colour):
        cv2.rectangle(im, (x - 3, y - 3), (x + bw + 3, y + bh + 3), (0, 255, 0), 2)
    cv2.putText(
        frame,
        "running (3-4x)",
        (x, max(12, y - 8)),
        cv2.FONT_HERSHEY_SIMPLEX,
        0.5,
        (0, 255, 0),
        1,
        cv2.LINE_AA,
    )
    cv2.putText(
        colour, "motion surprise", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA
    )
    both = np.concatenate([frame, colour], axis=1)
    return cv2.resize(both, (both.shape[1] // 2, both.shape[0] // 2), interpolation=cv2.INTER_AREA)


def format_table(results: dict) -> str:
    s = results["settings"]
    kinds = [k for k in KINDS if k in results["methods"]["pixlm motion"]["auroc"]]
    lines = [
        f"{s['seeds']} seeds over {s['report_seconds']} s of held-out footage; anomalies per kind: "
        + ", ".join(f"{k} {results['methods']['pixlm motion']['anomalies'][k]}" for k in kinds),
        "| method | "
        + " | ".join(f"AUROC {k} (moving)" for k in kinds)
        + " | "
        + " | ".join(f"alerted {k}" for k in kinds)
        + " | false alerts/min | alerted at pixlm's false rate | staged walkers alerted |",
        "|---|" + "---:|" * (2 * len(kinds) + 3),
    ]
    for m, v in results["methods"].items():
        au = " | ".join(
            f"{v['auroc'].get(k, float('nan')):.3f} ({v['auroc_moving'].get(k, float('nan')):.3f})"
            for k in kinds
        )
        al = " | ".join(f"{100 * v['alerted_within_3s'].get(k, 0):.0f}%" for k in kinds)
        fair = v.get("alerted_at_pixlm_false_rate")
        fair = "-" if fair is None else f"{100 * fair:.0f}%"
        control = f"{100 * v['alerted_within_3s'].get(CONTROL, 0):.0f}%"
        lines.append(f"| {m} | {au} | {al} | {v['false_per_minute']:.1f} | {fair} | {control} |")
    ww = results["direction_spread"]
    if not ww["one_way_tiles"]:
        lines.append(
            f"wrong way: not staged; no busy tile has one dominant direction (resultant length >= {NARROW}; "
            f"highest {max(b['resultant'] for b in ww['busy_tiles'].values()):.2f})"
        )
    lines.append(
        "goal (AUROC >= 0.95 with motion and >= best baseline + 0.05): "
        + ", ".join(f"{k} {'met' if g['met'] else 'not met'}" for k, g in results["goal"].items())
    )
    return "\n".join(lines)

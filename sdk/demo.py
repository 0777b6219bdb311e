"""`pixlm demo`: the shipped models' story in pictures and numbers, everything under one folder.

::

    Fashion-MNIST test items --Recognizer (fp32 bundle)--> contact-sheet.png, accuracy, share known
         \\--slid along a belt--> conveyor-input.mp4 --pixlm run --roi--> conveyor.mp4 / .jsonl
    vtest.avi, last 40% (the scene model learned the first 50% without labels; 50-60% calibrated)
         --tinted bags pasted at known places and times--> street-with-objects.mp4
         --pixlm run --bundle SCENE --grid 6x8 (the bundle's alert rules)--> surveillance.mp4 / .jsonl
         --> alerts vs the pasted objects: found within 3 s, false; anomaly-score.png, snapshots/
         --a walker's footage at 3-4x speed on its own path--> street-with-runner.mp4
         --pixlm run --bundle MOTION --grid 6x8--> behaviour.jsonl: the runner found within 3 s?
    vtest.avi --pixlm run (Fashion-MNIST bundle, 2x2 grid)--> share "unknown" --> open-set.png
    test items, top rows kept --Recognizer.complete (KV cache)--> completion.png
    --> summary.txt, summary.json

The clips go through the same `pixlm run` a user types (a subprocess), so the demo shows what the
command line does; the demo made the clips, so it knows the truth to score them against. Each part
returns its numbers with the files it wrote (``files``) and, for a stream, its speed (``speed``).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from pixlm import demo_media as media
from pixlm.data import Dataset, load_fashion_mnist, parse_frame_range, split_range
from pixlm.runtime import manifest as mf
from pixlm.runtime.defaults import VTEST

SCENE_EXPORT = "pixlm-export sdk/models/vtest-scene.pt --data {video} --no-int8 --no-dynamic -o {out}"
MOTION_EXPORT = "pixlm-export sdk/models/vtest-motion.pt --data {video} --no-int8 --no-dynamic -o {out}"
BAG = 8  # Fashion-MNIST's label index of the objects left on the street
REPORT_FROM = "0.6:"  # vtest.avi: the scene model trained on [0, 50%), its alerts calibrated on [50, 60%)
FOUND_WITHIN_S = 3.0  # an object is found by an alert on it within this long of its appearing


@dataclass
class DemoOptions:
    """Sizes of each part; :meth:`quick` shrinks them to seconds (what the tests run)."""

    bundle: Path  # the Fashion-MNIST bundle
    scene_bundle: Path  # the scene model's bundle
    motion_bundle: Path | None = None  # the motion model's bundle (None: no behaviour part)
    out: Path = Path("out")
    video: str = VTEST
    sheet: int = 8  # contact sheet of sheet x sheet test items
    test_images: int = 1000  # accuracy and share known on the first N images of the report split
    conveyor_items: int = 24  # 12 frames each
    street_frames: int | None = None  # of the held-out 40% (None: all 318 of vtest.avi)
    stride: int = 2  # surveillance: every Nth frame through the scene model (48 tiles each)
    objects: int = 5  # left in the street clip one after another, 4-8 s each
    open_set_frames: int = 40  # vtest.avi frames (every 5th) through the Fashion-MNIST bundle
    completion_items: int = 6
    completions: int = 4
    snapshots: int = 6  # events shown: the best one on each found object, then false ones
    seed: int = 0

    def quick(self) -> DemoOptions:
        self.sheet, self.test_images, self.conveyor_items, self.street_frames = 4, 200, 6, 80
        self.objects, self.open_set_frames, self.completion_items, self.completions = 2, 8, 2, 2
        self.snapshots = 3
        return self


@contextmanager
def step(label: str, log: Callable[[str], None]) -> Iterator[SimpleNamespace]:
    """Times a part and prints one ✓/✗ line, as ``pixlm-export`` does for its steps; the part
    sets ``.detail`` of what it yields."""
    t, note = time.perf_counter(), SimpleNamespace(detail="")
    try:
        yield note
    except BaseException as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        log(f"✗ {label}  {time.perf_counter() - t:.1f}s  {why}")
        raise
    log(f"✓ {label}  {time.perf_counter() - t:.1f}s  {note.detail}")


def run(opts: DemoOptions, log: Callable[[str], None] = print) -> dict:
    """Every part in turn; returns the summary, also written to OUT/summary.json and .txt."""
    from pixlm.runtime.recognizer import Recognizer

    check_inputs(opts)
    t0 = time.perf_counter()
    split = report_split(opts.bundle)
    test = load_fashion_mnist(split=split)
    rec = Recognizer.open(opts.bundle, backend="ort-cpu", precision="fp32")
    file, first, _ = split_range(split)
    s: dict = {"out": str(opts.out), "report_split": split, "report_first": f"{file} image {first:,}"}
    with step("recognition", log) as st:
        r = s["recognition"] = recognition(rec, test, opts)
        st.detail = (
            f"{r['test_images']} report images ({split}): {r['accuracy']:.1%} right, {r['known']:.1%} known"
        )
    with step("conveyor", log) as st:
        c = s["conveyor"] = conveyor(test, opts, log)
        st.detail = f"an item under the camera in {c['frames_with_item']} frames: {c['accuracy']:.1%} right"
    with step("surveillance", log) as st:
        v = s["surveillance"] = surveillance(test, opts, log)
        st.detail = f"{v['found']}/{v['objects']} left objects found, {v['false_alerts']} false alerts"
    if opts.motion_bundle is not None:
        with step("behaviour", log) as st:
            b = s["behaviour"] = behaviour(opts, log)
            found = "found" if b["seconds_to_alert"] is not None else "not found"
            st.detail = f"a runner {found} within {FOUND_WITHIN_S:g} s, {b['false_alerts']} false alerts"
    with step("open set", log) as st:
        o = s["open_set"] = open_set(test, opts, r, log)
        st.detail = f"{o['unknown']:.1%} of {o['regions']} street regions 'unknown'"
    with step("completion", log) as st:
        k = s["completion"] = completion(rec, test, opts)
        st.detail = f"{k['items']} items x {k['samples']} samples, {k['tokens_per_s']:.0f} tokens/s"
    s["seconds"] = round(time.perf_counter() - t0, 1)
    s["files"] = {"summary": [str(opts.out / "summary.txt"), str(opts.out / "summary.json")]}
    (opts.out / "summary.json").write_text(json.dumps(s, indent=1) + "\n")
    (opts.out / "summary.txt").write_text(format_summary(s) + "\n")
    return s


def report_split(bundle: Path) -> str:
    """The Fashion-MNIST split the demo reports on: the one the bundle's export fitted nothing on."""
    cal = json.loads((Path(bundle) / "manifest.json").read_text()).get(mf.K_CALIBRATION) or {}
    if not cal.get(mf.C_REPORT_SPLIT):
        raise ValueError(f"{bundle}: no calibration record in its manifest; re-export it (`pixlm-export`)")
    return cal[mf.C_REPORT_SPLIT]


def check_inputs(opts: DemoOptions) -> None:
    """User errors first, each one line: a missing video or bundle, an unwritable folder."""
    if not Path(opts.video).is_file():
        raise ValueError(f"{opts.video}: video not found (install Debian's opencv-doc, or pass --video)")
    exports = {opts.scene_bundle: SCENE_EXPORT, opts.motion_bundle: MOTION_EXPORT}
    for b in (opts.bundle, opts.scene_bundle, opts.motion_bundle):
        if b is not None and not (b / "manifest.json").is_file():
            how = exports[b].format(video=opts.video, out=b) if b in exports else "pixlm-export"
            raise ValueError(f"{b}: no bundle there (export it with `{how}`; `make demo` does)")
    _alert_rules(opts)  # a scene bundle exported before alert thresholds: re-export it
    try:
        (opts.out / "snapshots").mkdir(parents=True, exist_ok=True)
        for old in (opts.out / "snapshots").glob("*.jpg"):  # this run's snapshots only
            old.unlink()
    except OSError as e:
        raise ValueError(f"{opts.out}: cannot write there ({e.strerror})") from None


# -- the parts -----------------------------------------------------------------------------------
def recognition(rec, test: Dataset, opts: DemoOptions) -> dict:
    """Accuracy and share known on the first report images; a contact sheet of the first of them."""
    n, t = min(opts.test_images, len(test)), time.perf_counter()
    res = [r for i in range(0, n, 250) for r in rec.predict_batch(list(test.images[i : min(i + 250, n)]))]
    per_s = n / (time.perf_counter() - t)
    said, truth = [r.label for r in res], [test.label_names[y] for y in test.labels[:n]]
    right = [a == b for a, b in zip(said, truth, strict=True)]
    k = opts.sheet**2
    title = f"Fashion-MNIST test items 1-{k}: {sum(right[:k])}/{k} right (red: wrong, orange: 'unknown')"
    sheet = media.contact_sheet(test.images[:k], truth[:k], said[:k], opts.sheet, title)
    bags = [i for i in range(n) if right[i] and test.labels[i] == BAG] or [int(np.argmax(right))]
    return {
        "sheet_items": k,
        "sheet_right": sum(right[:k]),
        "sheet_accuracy": sum(right[:k]) / k,
        "test_images": n,
        "accuracy": float(np.mean(right)),
        "known": float(np.mean([r.known for r in res])),
        "images_per_s": round(per_s, 1),
        "example": {"index": bags[0], "label": said[bags[0]], "score": round(res[bags[0]].score, 3)},
        "files": [str(media.write_image(opts.out / "contact-sheet.png", sheet))],
    }


def conveyor(test: Dataset, opts: DemoOptions, log: Callable[[str], None]) -> dict:
    """Items on a belt under a camera ROI, streamed by `pixlm run`; its labels vs the item there."""
    rng = np.random.default_rng(opts.seed)
    pick = rng.choice(np.arange(opts.test_images, len(test)), opts.conveyor_items, replace=False)
    clip = media.conveyor_clip(opts.out / "conveyor-input.mp4", test.images[pick])
    jsonl, mp4 = opts.out / "conveyor.jsonl", opts.out / "conveyor.mp4"
    roi = ",".join(map(str, clip.roi))
    args = [str(clip.path), "--bundle", str(opts.bundle), "--roi", roi]
    speed = pixlm_run([*args, "--jsonl", str(jsonl), "--save", str(mp4)], log)
    results = [r for r in read_jsonl(jsonl) if r["type"] == "result"]
    if len(results) != len(clip.item_at):
        raise ValueError(f"{jsonl}: {len(results)} results for {len(clip.item_at)} frames")
    names = [test.label_names[y] for y in test.labels[pick]]
    by_item: dict[int, list[str]] = {}  # the labels given while each item stood under the camera
    for r in results:
        by_item.setdefault(clip.item_at[r["frame"]], []).append(r["label"])
    moving = by_item.pop(-1, [])
    under = [(label, names[i]) for i, labels in by_item.items() for label in labels]
    return {
        "items": len(pick),
        "frames": len(results),
        "roi": list(clip.roi),
        "frames_with_item": len(under),
        "accuracy": float(np.mean([a == b for a, b in under])) if under else 0.0,
        "items_right_by_majority": sum(max(set(v), key=v.count) == names[i] for i, v in by_item.items()),
        "unknown_while_moving": float(np.mean([x == "unknown" for x in moving])) if moving else 0.0,
        "speed": speed,
        "files": [str(mp4), str(jsonl), str(clip.path)],
    }


def surveillance(test: Dataset, opts: DemoOptions, log: Callable[[str], None]) -> dict:
    """Bags left in the street of the held-out frames: which alerts find them, which are false.

    ``pixlm run`` gets the clip, the scene bundle and the grid only: the bundle's calibrated
    per-tile thresholds, frame stride and persistence apply on their own. Matching as in ``pixlm
    study alerts``: an object is found by a start or update on a tile covering a quarter of its
    box within ``FOUND_WITHIN_S`` of its appearing; a start on no present object is false."""
    n, fps, size = media.video_info(opts.video)
    first = parse_frame_range(REPORT_FROM, n).start  # trained on [0, 50%), calibrated on [50, 60%)
    count = min(n - first, opts.street_frames or n)
    rng = np.random.default_rng(opts.seed + 1)
    objects = media.plan_objects(opts.objects, count, size, fps, rng)
    clip, snaps = opts.out / "street-with-objects.mp4", opts.out / "snapshots"
    media.street_clip(opts.video, clip, first, count, objects, test.images[test.labels == BAG], rng)
    jsonl, mp4 = opts.out / "surveillance.jsonl", opts.out / "surveillance.mp4"
    args = [str(clip), "--bundle", str(opts.scene_bundle), "--grid", "6x8"]
    args += ["--jsonl", str(jsonl), "--save", str(mp4), "--snapshots", str(snaps)]
    speed = pixlm_run(args, log)
    records = read_jsonl(jsonl)
    rules = _alert_rules(opts)
    frames, boxes, hot, ratio = tile_table([r for r in records if r["type"] == "result"], rules["thresholds"])
    events = sorted((dict(r) for r in records if r["type"] == "anomaly"), key=lambda e: e["frame"])
    grace = int(2 * fps)  # an alert this soon after its object went is still on it
    for e in events:  # the objects present then that the event's tile covers a quarter of
        e["objects"] = [
            o.name
            for o in objects
            if o.start <= e["frame"] < o.end + grace and o.coverage(e["region"]["xywh"]) >= 0.25
        ]
    delays = {o.name: None for o in objects}
    for e in events:
        for o in objects:
            late = (e["frame"] - o.start) / fps
            if e["phase"] != "end" and o.name in e["objects"] and 0 <= late <= FOUND_WITHIN_S:
                delays[o.name] = late if delays[o.name] is None else min(delays[o.name], late)
    found = sum(d is not None for d in delays.values())
    starts = [e for e in events if e["phase"] == "start"]
    false = sum(not e["objects"] for e in starts)
    held = np.array(
        [[any(o.present(f) and o.coverage(b) >= 0.25 for o in objects) for b in boxes] for f in frames]
    )

    t = np.array(frames) / fps
    on_object = np.where(held.any(1), np.where(held, ratio, 0).max(1), np.nan)
    series = [("tiles under a pasted object", on_object, media.BLUE)]
    series.append(("busiest other tile", np.where(held, 0, ratio).max(1), media.GREY))
    plot = media.timeline(
        t,
        series,
        1.0,
        [(o.start / fps, o.end / fps) for o in objects],
        [(e["frame"] / fps, bool(e["objects"])) for e in starts],
        f"Scene model on held-out street video, {len(boxes)} tiles: alert score / the tile's threshold; "
        f"{found}/{len(objects)} objects found within {FOUND_WITHIN_S:g} s, {false} false alerts",
        raster=(hot, held),
        t_end=count / fps,
    )
    plot_path = media.write_image(opts.out / "anomaly-score.png", plot)
    top = _top_events([e for e in events if e["phase"] != "end"], opts.snapshots)
    shots = [str(snaps / Path(e[k]).name) for e in top for k in ("snapshot", "crop") if e.get(k)]
    seconds = count / fps
    return {
        "frames": len(frames),
        "tiles": len(boxes),
        "seconds_of_video": round(seconds, 1),
        "report_frames": [first, first + count],
        "alert_after_s": rules["after_s"],
        "objects": len(objects),
        "found": found,
        "seconds_to_alert": [None if d is None else round(d, 2) for d in delays.values()],
        "alerts": len(starts),
        "false_alerts": false,
        "false_per_minute": round(60 * false / max(seconds, 1e-9), 2),
        "events": len(events),
        "truth": [asdict(o) for o in objects],
        "snapshots": shots,
        "speed": speed,
        "files": [str(mp4), str(plot_path), str(jsonl), f"{snaps}/ ({len(top)} events)", str(clip)],
    }


def behaviour(opts: DemoOptions, log: Callable[[str], None]) -> dict:
    """A walker running (its own footage at 3-4x speed, for 2-4 s) in the held-out street frames,
    staged as ``pixlm study motion`` stages it; ``pixlm run`` gets the clip, the motion bundle and
    the grid only. Found: an alert on a tile covering a quarter of the runner within
    ``FOUND_WITHIN_S``; a start on a tile the runner never touched is false."""
    from pixlm.data import read_frames
    from pixlm.runtime.regions import Region
    from pixlm.studies.alerts import median_background
    from pixlm.studies.motion import _cover, match_alerts, runner_clip

    frames = read_frames(opts.video, 3)
    n, fps = len(frames), media.video_info(opts.video)[1]
    first = parse_frame_range(REPORT_FROM, n).start
    count = min(n - first, opts.street_frames or n)
    background = median_background(frames[: n // 2 : 2])  # the motion model's training frames
    report = np.arange(first, first + count)
    runner, shown = runner_clip(frames, background, report, fps, opts.seed)
    clip = opts.out / "street-with-runner.mp4"
    media.write_video(clip, shown, fps)
    jsonl = opts.out / "behaviour.jsonl"
    args = [str(clip), "--bundle", str(opts.motion_bundle), "--grid", "6x8", "--jsonl", str(jsonl)]
    speed = pixlm_run(args, log)
    records = read_jsonl(jsonl)
    events = [r for r in records if r["type"] == "anomaly"]
    said = [(e["frame"] / fps, Region(e["region"]["name"], *e["region"]["xywh"]), e["phase"]) for e in events]
    (delay,), false = match_alerts(said, [runner])
    # how close it came: alert score / the tile's threshold, on the runner's tiles and elsewhere
    thresholds = json.loads((opts.motion_bundle / "manifest.json").read_text())[mf.K_ALERTS]["thresholds"]
    on, off = 0.0, 0.0
    for r in (r for r in records if r["type"] == "result"):
        region, t = Region(r["region"]["name"], *r["region"]["xywh"]), r["frame"] / fps
        ratio = r.get("alert_score", 0.0) / thresholds[region.name]
        near = [j for j, tj in runner.at.items() if abs(tj - t) <= 0.1]
        if any(_cover(region, runner.paste[j][0]) >= 0.25 for j in near):
            on = max(on, ratio)
        elif not (runner.start <= t <= runner.end + 2 and _cover(region, runner.union()) > 0):
            off = max(off, ratio)
    seconds = count / fps
    return {
        "frames": count,
        "seconds_of_video": round(seconds, 1),
        "report_frames": [first, first + count],
        "runner": {
            "start_s": round(runner.start, 2),
            "seconds": round(runner.end - runner.start, 2),
            "box": list(runner.union()),
        },
        "seconds_to_alert": None if delay is None else round(delay, 2),
        "runner_peak_over_threshold": round(on, 3),
        "elsewhere_peak_over_threshold": round(off, 3),
        "alerts": sum(e["phase"] == "start" for e in events),
        "false_alerts": false,
        "false_per_minute": round(60 * false / max(seconds, 1e-9), 2),
        "speed": speed,
        "files": [str(jsonl), str(clip)],
    }


def _alert_rules(opts: DemoOptions) -> dict:
    """The scene bundle's alert rules (manifest "alerts"): per-tile thresholds, persistence."""
    manifest = json.loads((Path(opts.scene_bundle) / "manifest.json").read_text())
    if mf.K_ALERTS not in manifest:
        raise ValueError(
            f"{opts.scene_bundle}: no alert thresholds; re-export it with pixlm-export (make demo)"
        )
    return manifest[mf.K_ALERTS]


def tile_table(
    results: list[dict], thresholds: dict[str, float]
) -> tuple[list[int], list[list[int]], np.ndarray, np.ndarray]:
    """Result lines -> frame numbers, the tiles' boxes (row-major), and per frame and tile whether
    it is hot (F, T) and its alert score over its threshold (F, T)."""
    frames = sorted({r["frame"] for r in results})
    boxes = sorted({tuple(r["region"]["xywh"]) for r in results}, key=lambda b: (b[1], b[0]))
    row, col = {f: i for i, f in enumerate(frames)}, {b: j for j, b in enumerate(boxes)}
    hot, ratio = np.zeros((len(frames), len(boxes)), bool), np.zeros((len(frames), len(boxes)))
    for r in results:
        i, j = row[r["frame"]], col[tuple(r["region"]["xywh"])]
        hot[i, j] = r["anomaly_event"]
        ratio[i, j] = r.get("alert_score", 0.0) / max(thresholds[r["region"]["name"]], 1e-9)
    return frames, [list(b) for b in boxes], hot, ratio


def open_set(test: Dataset, opts: DemoOptions, recognized: dict, log: Callable[[str], None]) -> dict:
    """The Fashion-MNIST bundle on street regions: the share it calls "unknown"."""
    jsonl = opts.out / "open-set.jsonl"
    args = [opts.video, "--bundle", str(opts.bundle), "--grid", "2x2", "--stride", "5"]
    speed = pixlm_run([*args, "--max-frames", str(opts.open_set_frames), "--jsonl", str(jsonl)], log)
    results = [r for r in read_jsonl(jsonl) if r["type"] == "result"]
    unknown = sum(r["label"] == "unknown" for r in results) / max(len(results), 1)
    shown = next((r for r in results if r["label"] == "unknown"), results[0])
    x, y, w, h = shown["region"]["xywh"]
    tile = media.read_video_frames(opts.video, [shown["frame"]])[shown["frame"]][y : y + h, x : x + w]
    ex, known = recognized["example"], recognized["known"]
    footer = f"Fashion-MNIST model: 'unknown' for {unknown:.0%} of street regions, "
    footer += f"known for {known:.0%} of test items"
    panel = media.open_set_panel(
        tile, f"-> {shown['label']}", test.images[ex["index"]], f"-> {ex['label']} {ex['score']:.2f}", footer
    )
    return {
        "regions": len(results),
        "unknown": unknown,
        "fashion_known": known,
        "speed": speed,
        "files": [str(media.write_image(opts.out / "open-set.png", panel)), str(jsonl)],
    }


def completion(rec, test: Dataset, opts: DemoOptions) -> dict:
    """Keep the top half of the token rows, let the model draw the rest a few times (KV cache)."""
    rows, cols = rec.tokenizer.grid
    keep = rows // 2
    picks = [int(np.flatnonzero(test.labels == c)[0]) for c in (0, 1, 7, 8, 9, 3, 5, 2)]
    grid, t = [], time.perf_counter()
    for i in picks[: opts.completion_items]:
        masked = test.images[i].copy()
        masked[keep * rec.tokenizer.config.patch :] = 60
        seeds = range(opts.seed, opts.seed + opts.completions)
        samples = [rec.complete(test.images[i], keep, temperature=1.0, seed=j) for j in seeds]
        grid.append([test.images[i], masked, *samples])
    tokens_per_s = len(grid) * opts.completions * (rows - keep) * cols / (time.perf_counter() - t)
    headers = ["original", f"top {keep}/{rows} rows", *[f"sample {j + 1}" for j in range(opts.completions)]]
    figure = media.write_image(opts.out / "completion.png", media.completion_grid(grid, headers))
    return {
        "items": len(grid),
        "samples": opts.completions,
        "kept_rows": keep,
        "tokens_per_s": round(tokens_per_s, 1),
        "files": [str(figure)],
    }


# -- `pixlm run` in a subprocess, and what it wrote --------------------------------------------
def pixlm_exe() -> list[str]:
    """The `pixlm` console script beside this interpreter: the command users type."""
    exe = shutil.which("pixlm", path=str(Path(sys.executable).parent)) or shutil.which("pixlm")
    return [exe] if exe else [sys.executable, "-c", "from pixlm.entry import main; main()"]


def pixlm_run(args: list[str], log: Callable[[str], None]) -> dict:
    """`pixlm run ARGS -q --stats-json`: over the whole run, the first source's frames/s and the ms
    per frame by stage (at the metrics line's precision), and the wall time with start-up. A failed
    run raises its `Error:` line."""
    log("  $ pixlm run " + " ".join(args))
    with tempfile.TemporaryDirectory() as tmp:
        stats_json = Path(tmp) / "stats.json"
        t = time.perf_counter()
        p = subprocess.run(
            [*pixlm_exe(), "run", *args, "-q", "--stats-json", str(stats_json)],
            capture_output=True,
            text=True,
        )
        speed: dict = {"wall_s": round(time.perf_counter() - t, 1)}
        if p.returncode != 0:
            lines = [ln for ln in p.stderr.splitlines() if ln.strip()] or [""]
            why = next((ln for ln in reversed(lines) if ln.startswith("Error:")), lines[-1])
            raise ValueError(f"pixlm run exited {p.returncode}: {why.removeprefix('Error: ')}")
        stats = json.loads(stats_json.read_text())
    if stats["frames"]:
        speed["ms_per_frame"] = {k: round(v, 2) for k, v in stats["ms_per_frame"].items()}
        speed["fps"] = round(stats["sources"][0]["fps"], 1)
    return speed


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _secs(delays: list[float | None]) -> str:
    return ", ".join("-" if d is None else f"{d:.1f}" for d in delays) or "-"


def _top_events(events: list[dict], n: int) -> list[dict]:
    """The strongest event on each found object first, then the strongest false ones."""
    best: dict[str, dict] = {}
    for e in events:
        for name in e["objects"]:
            if name not in best or e["anomaly_peak"] > best[name]["anomaly_peak"]:
                best[name] = e
    false = sorted((e for e in events if not e["objects"]), key=lambda e: -e["anomaly_peak"])
    return (list(best.values()) + false)[:n]


# -- the closing summary -------------------------------------------------------------------------
def format_summary(s: dict) -> str:
    """What the demo showed, in numbers, with every file it wrote and the streams' speeds."""
    r, c, v, o, k = (s[p] for p in ("recognition", "conveyor", "surveillance", "open_set", "completion"))
    per_min = v["false_per_minute"]
    lines = [
        f"pixlm demo: {s['seconds']:.0f} s; everything is in {s['out']}/",
        "",
        "1. Recognition: the shipped Fashion-MNIST model (fp32 bundle, ONNX Runtime on the CPU)",
        f"   contact sheet: {r['sheet_right']}/{r['sheet_items']} right ({r['sheet_accuracy']:.1%})",
        f"   {r['test_images']} report images from {s['report_first']} (split {s['report_split']!r}, "
        f"which the bundle's gate was not fitted on): {r['accuracy']:.1%} right, {r['known']:.1%} known",
        f"   conveyor: {c['items']} items in {c['frames']} frames; an item under the camera in "
        f"{c['frames_with_item']} frames,",
        f"     labelled right in {c['accuracy']:.1%} of them; {c['items_right_by_majority']}/{c['items']} "
        f"items right by majority; 'unknown' in {c['unknown_while_moving']:.0%} of the frames between items",
        "2. Surveillance: the scene model, learned from the clip's first 50% without labels; its",
        "   per-tile alert thresholds calibrated on frames 50-60%; reported on the rest",
        f"   {v['frames']} frames ({v['seconds_of_video']:.0f} s of held-out video, frames "
        f"{v['report_frames'][0]}-{v['report_frames'][1] - 1}) x {v['tiles']} tiles; an alert when a "
        f"tile stays surprising for {v['alert_after_s']:g} s",
        f"   left objects found within {FOUND_WITHIN_S:g} s: {v['found']}/{v['objects']} (seconds to alert: "
        f"{_secs(v['seconds_to_alert'])})",
        f"   false alerts: {v['false_alerts']} of {v['alerts']} alert starts ({per_min:.1f} a minute over "
        f"all tiles, in {v['seconds_of_video']:.0f} s); {v['events']} events with updates and ends",
        "3. Open set: the Fashion-MNIST model on street regions",
        f"   'unknown': {o['unknown']:.1%} of {o['regions']} vtest.avi regions (2x2 grid); "
        f"known: {o['fashion_known']:.1%} of Fashion-MNIST report images",
        f"4. Completion: {k['items']} items x {k['samples']} samples from the top {k['kept_rows']} token "
        f"rows, {k['tokens_per_s']:.0f} tokens/s through the KV cache",
    ]
    b = s.get("behaviour")
    if b is not None:
        said = "not alerted" if b["seconds_to_alert"] is None else f"alerted in {b['seconds_to_alert']:.1f} s"
        lines += [
            "5. Behaviour: the motion model, learned from how the clip's first 50% moves, without labels",
            f"   a walker running at 3-4x for {b['runner']['seconds']:.1f} s from "
            f"{b['runner']['start_s']:.1f} s of {b['seconds_of_video']:.0f} s of held-out video: {said};",
            f"   highest alert score / threshold on the runner's tiles "
            f"{b['runner_peak_over_threshold']:.2f}, on the others {b['elsewhere_peak_over_threshold']:.2f}; "
            f"false alerts: {b['false_alerts']} "
            f"({b['false_per_minute']:.1f} a minute over all tiles)",
        ]
    lines += [
        "",
        "pixlm run, ms per frame (tokenize / infer / post), frames/s, wall time with start-up:",
    ]
    for name in ("conveyor", "surveillance", "behaviour", "open_set"):
        if name not in s:
            continue
        sp = s[name]["speed"]
        ms = sp.get("ms_per_frame", {})
        stages = " / ".join(f"{ms[x]:6.2f}" for x in ("tokenize", "infer", "post") if x in ms) or "-"
        lines.append(f"   {name:<13} {stages} ms   {sp.get('fps', 0):6.1f} fps   {sp['wall_s']:5.1f} s")
    lines += ["", "Files:"]
    for name in ("recognition", "conveyor", "surveillance", "behaviour", "open_set", "completion"):
        if name in s:
            lines.append(f"   {name:<13} " + "  ".join(s[name]["files"]))
    lines.append(f"   {'summary':<13} " + "  ".join(s["files"]["summary"]))
    return "\n".join(lines)

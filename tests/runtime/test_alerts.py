"""Alerts: persistence separates a walker from a left object, in scene seconds; the life cycle; the
calibrated rules in a real scene bundle, applied by `pixlm run` with no option; clear errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from conftest import VTEST, pixlm_run, read_jsonl, run_cli
from pixlm.runtime import manifest as mf
from pixlm.runtime.alerts import AlertBook, AlertRules, Persistence
from pixlm.runtime.bundle import Bundle, BundleError
from pixlm.runtime.regions import Region, Zones
from pixlm.runtime.stream import alert_rules


def walker_and_object(fps: float, seconds: float, stride: int = 1):
    """Token maps (8x8) of a region, one per kept frame: a hot token that moves one cell a frame
    at 10 cells/s (a walker), and from 2 s on a hot 2x2 block that stays (a left object)."""
    for i in range(0, int(seconds * fps), stride):
        t = i / fps
        m = np.zeros((8, 8), np.float32)
        m.flat[int(t * 10) % 64] = 9.0
        if t >= 2.0:
            m[5:7, 5:7] = 9.0
        yield t, m


def starts(rules: AlertRules, fps: float, stride: int) -> list[float]:
    book = AlertBook(rules)
    return [
        t for t, m in walker_and_object(fps, 6.0, stride) if book.observe("cam", "r0", t, m).phase == "start"
    ]


def test_a_walker_passes_and_a_left_object_alerts_after_the_persistence_time():
    rules = AlertRules(default=0.5, after_s=1.0, score="peak")
    assert starts(rules, fps=10, stride=1) == [3.0]  # the object, 1 s after it appeared; never the walker
    walker_only = AlertBook(rules)
    hot = [walker_only.observe("cam", "r0", t, m).hot for t, m in walker_and_object(10, 1.9)]
    assert not any(hot)


@pytest.mark.parametrize("stride", [1, 3])
def test_persistence_is_in_scene_seconds_so_stride_and_dropped_frames_do_not_change_it(stride):
    """The same clip at every frame or every 3rd: the alert starts at the same scene time (within
    one kept frame's spacing), not after the same number of frames."""
    t = starts(AlertRules(default=0.5, after_s=1.0), fps=10, stride=stride)
    assert len(t) == 1 and 3.0 <= t[0] <= 3.0 + stride / 10


def test_time_going_back_or_jumping_starts_a_region_afresh():
    p = Persistence(1.0)
    hot = np.ones((2, 2))
    assert p.push(0.0, hot) is None and p.push(1.0, hot) is not None
    assert p.push(0.2, hot) is None  # a loop: the clip's clock restarted
    assert p.push(1.2, hot) is not None
    assert p.push(30.0, hot) is None  # a reconnect after 28 s: no old frame counts


def test_rules_refuse_what_would_break_or_silence_alerts():
    for bad in ({"after_s": -1}, {"end_after_s": 0}, {"hysteresis": 0}, {"score": "max"}):
        with pytest.raises(ValueError):
            AlertRules(default=1.0, **bad)
    assert AlertRules(default=1.0, after_s=0).after_s == 0  # a motion bundle's: one frame is news
    with pytest.raises(ValueError, match="threshold"):
        AlertRules(default=float("nan"))
    good = AlertRules(thresholds={"r0c0": 1.5}, grid=(6, 8)).to_dict()
    assert AlertRules.from_dict(good).thresholds == {"r0c0": 1.5}
    for bad in ({**good, "thresholds": {"r0c0": 1e6}}, {**good, "thresholds": None}, [1, 2], {}):
        with pytest.raises(ValueError):
            AlertRules.from_dict(bad)


def test_zones_mute_regions_mostly_inside_an_exclude_box_or_outside_every_include_box():
    tile = Region("r0c0", 0, 0, 100, 100)
    assert Zones(exclude=((0, 0, 100, 60),)).mutes("cam", tile)
    assert not Zones(exclude=((0, 0, 100, 40),)).mutes("cam", tile)
    assert Zones(include=((200, 0, 50, 50),)).mutes("cam", tile)
    assert not Zones(include=((0, 0, 80, 80),)).mutes("cam", tile)


@pytest.fixture(scope="module")
def left_box_clip(tmp_path_factory):
    """14 s of vtest.avi's report part (from 60%, never trained or calibrated on): a dark box
    left on the lawn from 4 s to 10 s; lossless (FFV1), as the model saw the footage."""
    path = tmp_path_factory.mktemp("clip") / "left-box.avi"
    cap = cv2.VideoCapture(str(VTEST))
    cap.set(cv2.CAP_PROP_POS_FRAMES, 477)
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"FFV1"), 10, (768, 576))
    for i in range(140):
        frame = cap.read()[1]
        if 40 <= i < 100:
            cv2.rectangle(frame, (110, 410), (160, 450), (40, 30, 120), -1)
        w.write(frame)
    w.release()
    return path


def test_a_scene_bundle_alerts_by_its_calibrated_rules_with_no_option(scene_bundle, left_box_clip, tmp_path):
    """`pixlm run CLIP --bundle SCENE` alone: the bundle's grid, stride and per-tile thresholds;
    the left box raises a start within 3 s on a tile under it, and the events carry their phase."""
    rules = Bundle.load(scene_bundle).alert_rules
    assert rules is not None and rules.grid == (6, 8) and len(rules.thresholds) == 48
    assert rules.calibration["frames"] == "0.5:0.6:2" and rules.calibration["train_frames"] == "0:0.5:2"
    out = tmp_path / "out.jsonl"
    p = pixlm_run(str(left_box_clip), "--bundle", str(scene_bundle), "--jsonl", str(out), "-q")
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err
    records = read_jsonl(out)
    results = [r for r in records if r["type"] == "result"]
    assert {r["frame"] % 2 for r in results} == {0} and len({r["region"]["name"] for r in results}) == 48
    assert all("alert_score" in r for r in results)
    alerts = [r for r in records if r["type"] == "anomaly"]
    on_box = [a for a in alerts if a["phase"] == "start" and _covers(a["region"]["xywh"], (110, 410, 51, 41))]
    assert on_box and 40 < on_box[0]["frame"] <= 70  # within 3 s of the box appearing at frame 40
    for a in alerts:
        assert a["phase"] in ("start", "update", "end") and a["alert_id"] and a["duration_s"] >= 0
    ends = [a for a in alerts if a["phase"] == "end" and a["alert_id"] == on_box[0]["alert_id"]]
    assert ends and 100 <= ends[0]["frame"] <= 130  # it ended once the box had gone for end_after_s


def _covers(tile, box) -> bool:
    x, y, w, h = tile
    bx, by, bw, bh = box
    ix = max(0, min(x + w, bx + bw) - max(x, bx))
    iy = max(0, min(y + h, by + bh) - max(y, by))
    return ix * iy >= 0.25 * bw * bh


def test_alert_options_errors_and_fallbacks(scene_bundle, tiny_bundle, tmp_path):
    for value in ("0", "-1s", "0ms", "soon"):
        p = run_cli("pixlm", "run", str(VTEST), "--alert-after", value, check=False)
        assert p.returncode == 2 and "--alert-after" in p.stderr and "Traceback" not in p.stderr, p.stderr
    p = run_cli(
        "pixlm", "run", str(VTEST), "--bundle", str(scene_bundle), "--grid", "2x2", "--max-frames", "2"
    )
    assert "alert thresholds are for a 6x8 grid: no alerts here; run with --grid 6x8" in p.stderr
    old = tmp_path / "old"  # a scene bundle exported before alert thresholds existed
    old.mkdir()
    for f in scene_bundle.iterdir():
        (old / f.name).write_bytes(f.read_bytes())
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest[mf.K_ALERTS], manifest[mf.K_MANIFEST_SHA256]
    (old / "manifest.json").write_text(json.dumps(manifest))
    p = run_cli("pixlm", "run", str(VTEST), "--bundle", str(old), "--max-frames", "2")
    assert "holds no alert thresholds" in p.stderr and "--anomaly-threshold" in p.stderr
    manifest[mf.K_ALERTS] = {"thresholds": {"r0c0": "high"}}
    (old / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="alerts"):
        Bundle.load(old)
    p = run_cli("pixlm", "run", str(VTEST), "--bundle", str(old), "--max-frames", "2", check=False)
    assert p.returncode == 1 and p.stderr.startswith("Error: ") and "Traceback" not in p.stderr


def test_pixlm_run_reads_a_camera_file_and_the_command_line_wins(tiny_bundle, tmp_path):
    out = tmp_path / "events.jsonl"
    camera = tmp_path / "camera.toml"
    camera.write_text(
        f'source = "{VTEST}"\nbundle = "{tiny_bundle}"\ngrid = "2x2"\nmax-frames = 40\n'
        f'[alerts]\nthreshold = 0.0\nafter = "500ms"\nupdate_every = "60s"\n'
        f'[zones]\nexclude = ["0,0,384,288"]\n[outputs]\njsonl = "{out}"\n'
    )
    p = run_cli("pixlm", "run", "--config", str(camera), "--max-frames", "12", "-q")
    assert "12 frames from 1 source(s)" in p.stderr  # the command line's --max-frames won
    starts = [r for r in read_jsonl(out) if r["type"] == "anomaly"]
    # threshold 0, 0.5 s at 10 frames/s: each region starts at frame 5, but r0c0 lies in the exclude box
    assert sorted(r["region"]["name"] for r in starts) == ["r0c1", "r1c0", "r1c1"]
    assert {r["frame"] for r in starts} == {5}
    camera.write_text(camera.read_text().replace("jsonl =", "jsonll ="))
    p = run_cli("pixlm", "run", "--config", str(camera), check=False)
    assert p.returncode == 2 and 'jsonll: unknown key; did you mean "jsonl"?' in p.stderr
    assert "Traceback" not in p.stderr


def test_most_regions_hot_at_once_is_the_cameras_own_alert_with_calibrated_thresholds_only():
    names = [f"r0c{i}" for i in range(4)]
    for thresholds, default, want in (({n: 1.0 for n in names}, None, ["start", "end"]), ({}, 1.0, [])):
        book = AlertBook(AlertRules(thresholds=thresholds, default=default, after_s=1.0, end_after_s=1.0))
        phases = []
        for i in range(40):  # 4 s covered (3 of 4 regions hot), then 6 s as before
            t = i / 4
            hot = [
                book.observe("cam", n, t, np.full((2, 2), 5.0 if t < 4 and k < 3 else 0.0)).hot
                for k, n in enumerate(names)
            ]
            got = book.tamper("cam", t, hot, [False] * 4).phase
            phases += [got] if got else []
        assert phases == want
    book = AlertBook(AlertRules(thresholds={n: 1.0 for n in names}, after_s=1.0))  # covered: blank, not hot
    starts = [t / 4 for t in range(12) if book.tamper("cam", t / 4, [False] * 4, [True] * 4).phase == "start"]
    assert starts == [1.0]  # blank for after_s


def test_a_left_box_alerts_at_the_same_scene_time_at_every_stride(scene_bundle, left_box_clip, tmp_path):
    """--stride 1 (twice the frames the thresholds were fitted at) and the bundle's 2: the box's alert
    starts at the same second of the clip, within one kept frame, not after the same number of frames."""
    started = {}
    for stride in ("1", "2"):
        out = tmp_path / f"s{stride}.jsonl"
        run_cli("pixlm", "run", str(left_box_clip), "--bundle", str(scene_bundle), "--stride", stride,
                "--jsonl", str(out), "-q")  # fmt: skip
        box = [a for a in read_jsonl(out) if a["type"] == "anomaly" and a["phase"] == "start"]
        box = [a for a in box if _covers(a["region"]["xywh"], (110, 410, 51, 41))]
        started[stride] = box[0]["frame"] / 10
    after = Bundle.load(scene_bundle).alert_rules.after_s  # the box appears at 4.0 s and must persist
    assert abs(started["1"] - started["2"]) <= 0.2 and 4.0 + after <= started["1"] <= 4.0 + after + 1.0


def test_a_threshold_override_keeps_the_bundles_score_unless_told_otherwise():
    """rec.stream(anomaly_threshold=T) on a scene bundle compares what the bundle's thresholds do
    (its peak score), not the mean: the Python API and `pixlm run` agree."""
    calibrated = AlertRules(thresholds={"r0c0": 1.0}, score="peak", after_s=2.0)
    assert alert_rules(calibrated, 3.0, None).score == "peak"
    assert (
        alert_rules(calibrated, 3.0, None).after_s == 2.0
        and alert_rules(calibrated, 3.0, None).default == 3.0
    )
    assert alert_rules(calibrated, 3.0, "mean").score == "mean"
    assert alert_rules(None, 3.0, None).score == "mean" and alert_rules(None, None, None) is None

"""Motion tokens: velocity per second of the scene's clock, state per source that a reconnect or a
new pass resets, a motion bundle streamed by `pixlm run` (alone, or beside an appearance bundle on
the same frames), and a bundle of one kind refusing input of the other."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import VTEST, read_jsonl, run_cli
from pixlm.runtime.motion import Motion, MotionConfig, velocity_of
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.stream import Streamer
from pixlm.runtime.tokenizer import Tokenizer, TokenizerConfig


def texture(shift: float, size: tuple[int, int] = (240, 320)) -> np.ndarray:
    """A smooth random texture moved ``shift`` pixels to the right (BGR)."""
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[0] // 8, size[1] // 8 + 16)).astype(np.float32)
    import cv2

    big = cv2.resize(base, (base.shape[1] * 8, size[0]), interpolation=cv2.INTER_CUBIC)
    m = np.float32([[1, 0, shift], [0, 1, 0]])
    moved = cv2.warpAffine(big, m, (big.shape[1], size[0]), borderMode=cv2.BORDER_REFLECT)
    grey = np.clip(moved[:, 64 : 64 + size[1]], 0, 255).astype(np.uint8)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def speed(motion: Motion, frames: list[tuple[float, np.ndarray]]) -> float:
    """Median horizontal velocity (frame heights per second) of the last motion image."""
    image = None
    for t, f in frames:
        image = motion.image("cam", f, t)
    assert image is not None
    return float(np.median(velocity_of(image, motion.config)[40:-40, 40:-40, 0]))


def test_velocity_is_per_second_of_scene_time_not_per_frame():
    """The same walker, seen every frame (2 px / 0.1 s) or every third (6 px / 0.3 s): one speed."""
    every = speed(Motion(MotionConfig()), [(0.0, texture(0)), (0.1, texture(2))])
    third = speed(Motion(MotionConfig()), [(0.0, texture(0)), (0.3, texture(6))])
    assert every == pytest.approx(20 / 240, rel=0.2)  # rightwards: 20 px/s over 240 rows (heights/s)
    assert third == pytest.approx(every, rel=0.15)


def test_a_burst_of_frames_is_not_read_as_a_sprint():
    """A camera's frames carry arrival times: two arriving 1 ms apart are not 2 px per ms."""
    steady = [(0.0, texture(0)), (0.1, texture(2)), (0.2, texture(4))]
    walking = speed(Motion(MotionConfig()), steady)
    burst = speed(Motion(MotionConfig()), [*steady, (0.201, texture(6))])
    assert burst < 2.5 * walking  # at most half the usual gap counts: 2x; unfloored it saturates


def test_a_source_starts_afresh_on_its_first_frame_a_gap_and_time_going_back():
    m = Motion(MotionConfig(max_gap_s=2.0))
    assert m.image("a", texture(0), 0.0) is None  # nothing to compare with yet
    assert m.image("a", texture(1), 0.1) is not None
    assert m.image("b", texture(1), 0.1) is None  # sources keep their own frames
    assert m.image("a", texture(2), 5.0) is None  # a 4.9 s gap: a reconnect, not a fast walker
    assert m.image("a", texture(3), 5.1) is not None
    assert m.image("a", texture(3), 0.2) is None  # time went back: a new pass of a file
    m.reset("a")
    assert m.image("a", texture(3), 0.3) is None


class FakeSource:
    def __init__(self) -> None:
        self.name, self.reconnects, self.live = "cam", 0, True


def test_the_stream_restarts_a_sources_motion_after_a_reconnect():
    """A camera back within 2 s (no gap long enough to tell) still starts its motion afresh: the
    frame before the outage and the first after it may show different scenes."""
    palette = np.random.default_rng(0).integers(0, 256, (16, 12)).tolist()
    tok = Tokenizer(TokenizerConfig(28, 28, 3, 2, palette=palette, motion=MotionConfig().to_dict()))
    rec = type("Rec", (), {"tokenizer": tok, "engine": None, "stats": {}})()
    s = Streamer(rec, ["cam"])
    src = FakeSource()
    frame = lambda i, t: type("F", (), {"image": texture(i), "index": i, "timestamp": t, "fps": None})()  # noqa: E731
    from pixlm.runtime.regions import Region

    regions = [Region("all", 0, 0, 320, 240)]
    assert s._tokens_of(frame(0, 100.0), src, regions) == [None]
    assert s._tokens_of(frame(1, 100.1), src, regions)[0] is not None
    src.reconnects = 1
    assert s._tokens_of(frame(2, 100.3), src, regions) == [None]  # reset, though only 0.2 s passed
    assert s._tokens_of(frame(3, 100.4), src, regions)[0] is not None


def test_motion_bundle_carries_its_kind_and_refuses_single_images(motion_bundle):
    manifest = json.loads((motion_bundle / "manifest.json").read_text())
    assert manifest["tokenizer"]["motion"]["width"] == MotionConfig().width
    assert manifest["alerts"]["grid"] == [6, 8]
    rec = Recognizer.open(motion_bundle, backend="ort-cpu")
    assert rec.tokenizer.kind == "motion"
    with pytest.raises(ValueError, match="motion bundle reads how frames change"):
        rec.predict(np.zeros((96, 96, 3), np.uint8))


def test_stride_1_and_3_see_the_same_speeds(motion_bundle):
    """vtest.avi through the motion bundle at stride 1 and 3: on the frames both saw, the motion
    surprise agrees (velocity per frame would make every walker look 3x as fast at stride 3)."""
    rec = Recognizer.open(motion_bundle, backend="ort-cpu")
    scores = {}
    for stride in (1, 3):
        got = {}
        frames = rec.stream([str(VTEST)], grid=(6, 8), stride=stride, max_frames=90 // stride, alerts=None)
        for fr in frames:
            got[fr.index] = np.array([r.result.anomaly_peak for r in fr.regions])
        scores[stride] = got
    both = sorted(set(scores[1]) & set(scores[3]))
    assert len(both) >= 25
    a = np.stack([scores[1][i] for i in both])
    b = np.stack([scores[3][i] for i in both])
    # measured: mean +3%, 95th percentile +2%; with velocity per frame: +9% and +12%
    assert abs(b.mean() - a.mean()) < 0.06 * a.mean()
    assert abs(np.quantile(b, 0.95) - np.quantile(a, 0.95)) < 0.06 * np.quantile(a, 0.95)


def test_run_streams_a_motion_bundle_beside_an_appearance_bundle(motion_bundle, scene_bundle, tmp_path):
    """One process, one decode, both models: every result and event says which model said it."""
    out = tmp_path / "both.jsonl"
    run_cli(
        "pixlm", "run", str(VTEST), "--bundle", str(scene_bundle), "--bundle", str(motion_bundle),
        "--max-frames", "12", "--jsonl", str(out), "-q",
    )  # fmt: skip
    records = read_jsonl(out)
    results = [r for r in records if r["type"] == "result"]
    models = {r["model"] for r in results}
    assert models == {scene_bundle.name, motion_bundle.name}
    first = min(r["frame"] for r in results)
    said = {r["model"] for r in results if r["frame"] == first}
    assert said == {scene_bundle.name}  # the motion model has nothing to say on the first frame
    per_frame = [r for r in results if r["frame"] != first]
    assert sum(r["model"] == motion_bundle.name for r in per_frame) == sum(
        r["model"] == scene_bundle.name for r in per_frame
    )


def test_alert_ids_stay_unique_across_the_models_of_a_stream():
    from pixlm.runtime.alerts import AlertBook, AlertRules

    rules = AlertRules(default=0.5, after_s=0)
    hot = np.full((4, 4), 9.0, np.float32)
    ids = {
        AlertBook(rules, name=name).observe("cam", "r0c0", 0.0, hot).alert.id
        for name in ("vtest-scene", "vtest-motion")
    }
    assert len(ids) == 2 and all(i.startswith("vtest-") for i in ids)


def test_run_a_motion_bundle_alone_with_nothing_but_the_grid(motion_bundle, tmp_path):
    out = tmp_path / "motion.jsonl"
    p = run_cli("pixlm", "run", str(VTEST), "--bundle", str(motion_bundle), "--grid", "6x8",
                "--max-frames", "10", "--jsonl", str(out), "-q")  # fmt: skip
    results = [r for r in read_jsonl(out) if r["type"] == "result"]
    assert {r["frame"] for r in results} == set(range(2, 22, 2))  # the bundle's stride; frame 0 primes
    assert all("model" not in r for r in results)
    assert "10 frames" in p.stdout + p.stderr


def test_a_camera_file_names_both_bundles(motion_bundle, scene_bundle, tmp_path):
    out = tmp_path / "both.jsonl"
    config = tmp_path / "camera.toml"
    config.write_text(
        f'sources = ["{VTEST}"]\nbundle = ["{scene_bundle}", "{motion_bundle}"]\nmax-frames = 3\n'
        f'[outputs]\njsonl = "{out}"\nquiet = true\n'
    )
    run_cli("pixlm", "run", "--config", str(config))
    assert {r.get("model") for r in read_jsonl(out) if r["type"] == "result"} == {
        scene_bundle.name,
        motion_bundle.name,
    }


def test_train_refuses_to_mix_pixel_and_motion_tokens(tmp_path):
    p = run_cli(
        "pixlm", "train", "--data", str(VTEST), "--frames", "0:20", "--tile", "2x2", "--motion",
        "--label-weight", "0", "--init", "sdk/models/vtest-scene.pt", "-o", str(tmp_path / "m.pt"),
        check=False,
    )  # fmt: skip
    assert p.returncode == 1
    assert "is a pixels model, this run learns motion tokens: drop --motion" in p.stderr
    assert "Traceback" not in p.stderr


def test_an_image_or_a_single_frame_through_a_motion_bundle_says_why(motion_bundle, tmp_path):
    import cv2

    image = tmp_path / "one.png"
    ok, frame = cv2.VideoCapture(str(VTEST)).read()
    cv2.imwrite(str(image), frame)
    p = run_cli("pixlm", "run", str(image), "--bundle", str(motion_bundle), "-q", check=False)
    assert p.returncode == 1 and "Error: " in p.stderr and "Traceback" not in p.stderr
    assert "a motion bundle needs a clock" in p.stderr  # an image has no time between frames
    one = tmp_path / "one.avi"  # a clip of one frame has a clock, but no second frame
    w = cv2.VideoWriter(str(one), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, frame.shape[1::-1])
    w.write(frame)
    w.release()
    p = run_cli("pixlm", "run", str(one), "--bundle", str(motion_bundle), "-q", check=False)
    assert p.returncode == 1 and "a source needs two at least" in p.stderr


def test_training_cuts_the_same_motion_tokens_as_the_stream(motion_bundle):
    """`pixlm train --motion --frames 0:12:2 --tile 6x8` and `pixlm run --stride 2 --grid 6x8`
    read the same tokens from the same frames."""
    from pixlm.data import load_frames, read_frames
    from pixlm.runtime.regions import grid_regions

    rec = Recognizer.open(motion_bundle, backend="ort-cpu")
    tok = rec.tokenizer
    trained = load_frames(VTEST, tok, 3, frames="0:12:2", tile=(6, 8))
    trained_tokens = tok.encode_prepared(trained.images)
    s = Streamer(rec, [str(VTEST)])
    src = FakeSource()
    frames = read_frames(VTEST, 3)[:12]
    regions = grid_regions(frames[0].shape[1], frames[0].shape[0], 6, 8)
    streamed = []
    for i in range(0, 12, 2):
        f = type("F", (), {"image": frames[i], "index": i, "timestamp": 0.0, "fps": 10.0})()
        got = s._tokens_of(f, src, regions)[0]
        if got is not None:
            streamed.append(got)
    assert len(streamed) == 5 and np.array_equal(np.concatenate(streamed), trained_tokens)


def test_a_looped_clip_starts_its_motion_afresh_each_pass(motion_bundle, tmp_path):
    import cv2

    clip = tmp_path / "short.avi"
    cap = cv2.VideoCapture(str(VTEST))
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(8):
        w.write(cap.read()[1])
    w.release()
    rec = Recognizer.open(motion_bundle, backend="ort-cpu")
    seen = [fr.index for fr in rec.stream([str(clip)], loop=2, alerts=None, grid=(6, 8), stride=2)]
    assert seen == [2, 4, 6, 2, 4, 6]  # frame 0 of each pass primes the motion, it has none


def test_the_overlay_draws_a_region_two_models_scored_once_and_red_when_either_alerts():
    from pixlm.runtime.outputs.video import draw_overlay
    from pixlm.runtime.regions import Region
    from pixlm.runtime.scoring import Result
    from pixlm.runtime.stream import FrameResult, RegionResult

    region = Region("r0c0", 0, 0, 96, 96)
    heat = np.arange(196, dtype=np.float32).reshape(14, 14)
    result = Result("", -1, 0.0, [], 1.0, nll_map=heat)
    frame = np.full((96, 96, 3), 128, np.uint8)

    def overlay(*rrs):
        return draw_overlay(FrameResult("cam", 0, 0.0, frame, list(rrs), 0.0), 0.0)

    one = overlay(RegionResult(region, result, False))
    two = overlay(
        RegionResult(region, result, False, model="scene"), RegionResult(region, result, True, model="motion")
    )
    assert tuple(two[60, 0]) == (0, 0, 255) and tuple(one[60, 0]) == (0, 255, 0)  # the box: red if either
    assert np.array_equal(one[60:90, 10:90], two[60:90, 10:90])  # one heat map, not two blended

"""File outputs when the disk fills or the folder goes away, unique snapshot names, and retention.

The policy under test (docs/runtime.md, "What happens when an output fails"): a file output that cannot write
(JSON Lines, snapshots, the overlay video) leaves no half-written or temporary file, is said once on
the console, and counted; the stream goes on; and `pixlm run` ends with one `Error:` line naming the
output and its count, exit status 1. The full disk is a real 64 KB tmpfs.
"""

from __future__ import annotations

import contextlib
import errno
import json
import re
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VTEST, pixlm_run, read_jsonl
from pixlm.runtime.outputs.jsonl import JsonlSink
from pixlm.runtime.outputs.snapshots import SnapshotWriter
from pixlm.runtime.scoring import Result
from pixlm.runtime.sources import source_names, source_slug
from pixlm.runtime.stream import FrameResult, Region, RegionResult


@contextmanager
def tmpfs(folder: Path, size: str = "64k"):
    """A real filesystem of ``size`` mounted on ``folder`` (needs root); unmounted on the way out."""
    folder.mkdir(parents=True, exist_ok=True)
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True
    )
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill ({p.stderr.decode().strip()}): needs root")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KB filesystem: a run's outputs fill it within a few frames."""
    with tmpfs(tmp_path / "disk") as d:
        yield d


def run_to_end(*args: str, timeout: float = 180) -> tuple[int, str]:
    p = pixlm_run(*args)
    _, err = p.communicate(timeout=timeout)
    return p.returncode, err


def assert_one_failure_report(err: str, output: str, path: Path) -> None:
    """No traceback, one warning when it fails, one Error: line at the end naming the output."""
    assert "Traceback" not in err, err
    warnings = [line for line in err.splitlines() if "the stream goes on" in line]
    assert len(warnings) == 1 and f"{output}: {path}" in warnings[0], err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"{output} ({path}" in errors[0] and err.rstrip().endswith(errors[0]), err


def lost(err: str) -> int:
    """How many writes (a frame, an event) the output failed, from the Error: line."""
    m = re.search(r"\((\d+) failed calls\)", err.splitlines()[-1])
    return int(m.group(1)) if m else 1


def event_counts(err: str) -> dict[str, int]:
    return {k: int(v) for k, v in re.findall(r"(anomaly|label|status) (\d+)", err.split("events: ")[1])}


# -- a full disk -----------------------------------------------------------------------------------


def test_overlay_video_on_a_full_disk_is_reported_and_nothing_unplayable_stays(
    tiny_bundle, tmp_path, full_disk
):
    mp4, out = full_disk / "out.mp4", tmp_path / "out.jsonl"
    rc, err = run_to_end(
        str(VTEST), "--bundle", str(tiny_bundle), "--max-frames", "30", "--save", str(mp4),
        "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert rc == 1, err
    assert_one_failure_report(err, "video", mp4)
    assert "overlay video in" not in err  # the summary does not claim a file that is not there
    assert "the video does not play (no space left on device): deleted, 30 frame(s) lost" in err
    assert list(full_disk.iterdir()) == []  # neither a truncated out.mp4 nor an out.partial.mp4
    assert len([r for r in read_jsonl(out) if r["type"] == "result"]) == 30  # the stream went on


def test_overlay_video_that_fits_is_playable(tiny_bundle, tmp_path):
    with tmpfs(tmp_path / "disk", "8m") as disk:
        rc, err = run_to_end(
            str(VTEST), "--bundle", str(tiny_bundle), "--max-frames", "10", "--save", str(disk / "o.mp4")
        )
        assert rc == 0 and "the stream goes on" not in err, err
        cap = cv2.VideoCapture(str(disk / "o.mp4"))
        assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 10


def test_jsonl_on_a_full_disk_keeps_whole_lines_and_counts_what_it_lost(tiny_bundle, full_disk):
    out = full_disk / "out.jsonl"
    rc, err = run_to_end(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "100",
        "--anomaly-threshold", "0.3", "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert rc == 1, err
    assert_one_failure_report(err, "jsonl", out)
    records = read_jsonl(out)  # every line whole, the last one included
    assert "100 frames from 1 source(s)" in err  # the stream went on to the end
    frames = {r["frame"] for r in records if r["type"] == "result"}
    results = [r for r in records if r["type"] == "result"]
    assert 0 < len(results) == 4 * len(frames) < 400  # a frame's lines are all there or none
    events = len(records) - len(results)
    # every write not in the file is counted: frames, and events but the one that says jsonl failed
    assert lost(err) == (100 - len(frames)) + (sum(event_counts(err).values()) - 1 - events)


def test_jsonl_writes_each_record_whole_or_not_at_all_and_resumes_when_space_returns(tmp_path):
    with tmpfs(tmp_path / "disk") as disk:
        (disk / "ballast").write_bytes(b"\0" * 16_000)
        sink = JsonlSink(disk / "out.jsonl")
        record = {"type": "status", "source": "cam", "status": "ok", "timestamp": 1.0, "message": "x" * 300}
        failed = 0
        for i in range(200):
            try:
                sink.event({**record, "n": i})
            except OSError as e:
                assert e.errno == errno.ENOSPC and e.filename == str(disk / "out.jsonl")
                failed += 1
        lines = (disk / "out.jsonl").read_text().splitlines(keepends=True)
        assert 50 < len(lines) < 200 and all(line.endswith("\n") for line in lines)
        assert [json.loads(line)["n"] for line in lines] == list(range(len(lines)))
        assert failed == 200 - len(lines)
        (disk / "ballast").unlink()  # space comes back: the next records are written, whole
        sink.event({**record, "n": 999})
        sink.close()
        last = (disk / "out.jsonl").read_text().splitlines()[-1]
        assert json.loads(last)["n"] == 999


def test_snapshots_on_a_full_disk_are_counted_and_the_stream_goes_on(tiny_bundle, tmp_path, full_disk):
    snaps, out = full_disk / "snaps", tmp_path / "out.jsonl"
    rc, err = run_to_end(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "20",
        "--anomaly-threshold", "0", "--alert-update-every", "60s",
        "--snapshots", str(snaps), "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert rc == 1, err
    assert_one_failure_report(err, "snapshots", snaps)
    records = read_jsonl(out)
    assert len([r for r in records if r["type"] == "result"]) == 80
    anomalies = [r for r in records if r["type"] == "anomaly"]
    assert len(anomalies) == 4
    named = [a[k] for a in anomalies for k in ("snapshot", "crop") if a[k]]
    assert sorted(f.name for f in snaps.iterdir()) == sorted(named)  # no .tmp, nothing unnamed
    complete = [a for a in anomalies if a["snapshot"] and a["crop"]]
    assert lost(err) == 4 - len(complete) > 0


def test_snapshot_folder_deleted_mid_run_is_counted_and_the_stream_goes_on(tiny_bundle, tmp_path):
    folder = alternating_frames(tmp_path / "frames")
    snaps, out = tmp_path / "snaps", tmp_path / "out.jsonl"
    p = pixlm_run(  # threshold 0, updates at every frame: an anomaly event per frame
        str(folder), "--bundle", str(tiny_bundle), "--loop", "0", "--realtime", "--max-frames", "200",
        "--anomaly-threshold", "0", "--alert-after", "1ms", "--alert-update-every", "1ms",
        "--snapshots", str(snaps), "--jsonl", str(out), "-q",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(snaps.glob("*.jpg"))) < 2:
        time.sleep(0.05)
    shutil.rmtree(snaps)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    assert_one_failure_report(err, "snapshots", snaps)
    records = read_jsonl(out)
    assert len([r for r in records if r["type"] == "result"]) == 200
    anomalies = [r for r in records if r["type"] == "anomaly"]
    missing = [a for a in anomalies if not (a["snapshot"] and a["crop"])]
    assert len(anomalies) - len(missing) >= 1 and len(missing) >= 20
    assert lost(err) == len(missing)
    assert not snaps.exists()  # not silently re-created elsewhere


# -- unique snapshot names and source names ---------------------------------------------------------


def alternating_frames(folder: Path) -> Path:
    """A black frame, then a coarse checkerboard: the tiny model scores them about 0.03 and 0.35."""
    folder.mkdir()
    cv2.imwrite(str(folder / "0.png"), np.zeros((96, 128, 3), np.uint8))
    cells = np.random.default_rng(0).integers(0, 2, (8, 8)).astype(np.uint8) * 255
    checker = cv2.resize(np.dstack([cells] * 3), (128, 96), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(folder / "1.png"), checker)
    return folder


def test_snapshots_of_each_loop_pass_keep_their_own_files(tiny_bundle, tmp_path):
    folder = alternating_frames(tmp_path / "frames")
    snaps, out = tmp_path / "snaps", tmp_path / "out.jsonl"
    rc, err = run_to_end(
        str(folder), "--bundle", str(tiny_bundle), "--loop", "3", "--anomaly-threshold", "0",
        "--alert-after", "1e-6", "--alert-update-every", "60s",
        "--snapshots", str(snaps), "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert rc == 0, err
    anomalies = [r for r in read_jsonl(out) if r["type"] == "anomaly"]
    assert [a["frame"] for a in anomalies] == [1, 1, 1]  # frame numbers restart each pass
    names = [a[k] for a in anomalies for k in ("snapshot", "crop")]
    assert len(set(names)) == 6 and sorted(f.name for f in snaps.iterdir()) == sorted(names)


def test_sources_with_the_same_file_name_keep_their_own_snapshots(tiny_bundle, tmp_path):
    frame = cv2.VideoCapture(str(VTEST)).read()[1]
    (tmp_path / "c").mkdir(), (tmp_path / "d").mkdir()
    for uri, picture in ((tmp_path / "c" / "x.avi", frame), (tmp_path / "d" / "x.avi", frame[::-1])):
        w = cv2.VideoWriter(str(uri), cv2.VideoWriter_fourcc(*"MJPG"), 10, (768, 576))
        for _ in range(3):  # upside down in d: a different picture; 3 frames: one alert
            w.write(np.ascontiguousarray(picture))
        w.release()
    snaps, out = tmp_path / "snaps", tmp_path / "out.jsonl"
    rc, err = run_to_end(
        str(tmp_path / "c" / "x.avi"), str(tmp_path / "d" / "x.avi"), "--bundle", str(tiny_bundle),
        "--anomaly-threshold", "0", "--alert-after", "1ms",
        "--snapshots", str(snaps), "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert rc == 0, err
    anomalies = {a["source"]: a for a in read_jsonl(out) if a["type"] == "anomaly"}
    assert len(anomalies) == 2
    assert len({source_slug(s) for s in anomalies}) == 2  # two MQTT topics, two snapshot prefixes
    for uri, picture in ((tmp_path / "c" / "x.avi", frame), (tmp_path / "d" / "x.avi", frame[::-1])):
        (name,) = [s for s in anomalies if s.startswith(str(uri))]
        saved = cv2.imread(str(snaps / anomalies[name]["crop"])).astype(int)
        assert np.abs(saved - picture).mean() < 8  # the event's picture is this source's


def test_source_names_have_distinct_short_names():
    names = source_names(["c/x.mp4", "d/x.mp4", "c/x.mp4", "rtsp://u:pw@cam/x.mp4", "x.mp4"])
    assert names == ["c/x.mp4", "d/x.mp4~2", "c/x.mp4#2", "rtsp://u:***@cam/x.mp4", "x.mp4~3"]
    slugs = [source_slug(n) for n in names]
    assert len(set(slugs)) == len(slugs) and slugs[:2] == ["x.mp4", "x.mp4~2"]


# -- retention ---------------------------------------------------------------------------------------


def fake_event(i: int) -> tuple[FrameResult, dict]:
    image = np.random.default_rng(i).integers(0, 256, (120, 160, 3)).astype(np.uint8)  # ~30 KB as JPEG
    region = Region("full", 0, 0, 160, 120)
    fr = FrameResult(
        "cam", i, 100.0 + i, image, [RegionResult(region, Result("", 0, 1.0, [], 1.0), True)], 1.0
    )
    return fr, {"type": "anomaly", "region": {"name": "full", "xywh": [0, 0, 160, 120]}}


def test_snapshots_stay_within_their_size_bound_oldest_deleted_first(tmp_path):
    snaps = tmp_path / "snaps"
    first = SnapshotWriter(snaps, max_bytes=400_000)
    events = []
    for i in range(10):
        fr, e = fake_event(i)
        first.take(fr, e)
        events.append(e)
    (snaps / ".cam-e000099-f000001-full.jpg.tmp").write_bytes(b"half")  # as a killed run leaves it
    second = SnapshotWriter(snaps, max_bytes=400_000)  # a later run: the bound covers the earlier files
    for i in range(10, 20):
        fr, e = fake_event(i)
        second.take(fr, e)
        events.append(e)
    files = {f.name for f in snaps.iterdir()}
    assert sum(f.stat().st_size for f in snaps.iterdir()) <= 400_000
    kept = [e for e in events if e["snapshot"] in files]
    assert kept == events[-len(kept) :] and 3 <= len(kept) < 20  # the newest, contiguous
    assert all(e["crop"] in files for e in kept) and len(files) == 2 * len(kept)  # no .tmp left
    assert len({e["snapshot"] for e in events}) == 20  # the second run did not reuse a name


def test_snapshots_max_mb_bounds_the_folder_in_a_run(tiny_bundle, tmp_path):
    folder = alternating_frames(tmp_path / "frames")
    snaps, out = tmp_path / "snaps", tmp_path / "out.jsonl"
    rc, err = run_to_end(
        str(folder), "--bundle", str(tiny_bundle), "--loop", "40", "--anomaly-threshold", "0",
        "--alert-after", "1e-6", "--alert-update-every", "60s",
        "--snapshots", str(snaps), "--snapshots-max-mb", "0.01", "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert rc == 0, err
    anomalies = [r for r in read_jsonl(out) if r["type"] == "anomaly"]
    assert len(anomalies) == 40
    files = sorted(f.name for f in snaps.iterdir())
    assert sum(f.stat().st_size for f in snaps.iterdir()) <= 10_000 or len(files) == 2
    assert anomalies[-1]["snapshot"] in files and 2 <= len(files) < 80


def test_jsonl_rotates_at_its_size_bound_and_keeps_three_old_files(tiny_bundle, tmp_path):
    out = tmp_path / "out.jsonl"
    rc, err = run_to_end(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "100",
        "--jsonl", str(out), "--jsonl-max-mb", "0.02", "-q",
    )  # fmt: skip
    assert rc == 0, err
    files = sorted(tmp_path.glob("out.jsonl*"))
    assert [f.name for f in files] == ["out.jsonl", "out.jsonl.1", "out.jsonl.2", "out.jsonl.3"]
    assert all(f.stat().st_size <= 20_000 for f in files)
    chunks = [read_jsonl(tmp_path / n) for n in ("out.jsonl.3", "out.jsonl.2", "out.jsonl.1", "out.jsonl")]
    frames = [r["frame"] for chunk in chunks for r in chunk if r["type"] == "result"]
    assert all(len(c) > 0 for c in chunks) and frames == sorted(frames) and frames[-1] == 99
    assert frames[0] > 0  # the oldest records went with the file beyond the third


def test_stats_json_on_a_full_disk_is_a_failed_output_after_the_closing_line(tiny_bundle, full_disk):
    with contextlib.suppress(OSError), open(full_disk / "filler", "wb") as f:  # fill it to the last byte
        for _ in range(1_000):
            f.write(b"\0" * 1024)
            f.flush()
    out = full_disk / "stats.json"
    rc, err = run_to_end(
        str(VTEST), "--bundle", str(tiny_bundle), "--max-frames", "5", "-q", "--stats-json", str(out)
    )
    assert rc == 1 and "Traceback" not in err, err
    assert "5 frames from 1 source(s)" in err  # the closing line is said first
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"--stats-json {out}" in errors[0] and err.rstrip().endswith(errors[0]), err
    assert not out.exists() and sorted(p.name for p in full_disk.iterdir()) == [
        "filler"
    ]  # no partial file left

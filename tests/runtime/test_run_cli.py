"""`pixlm run` end to end: real video, JSON Lines, overlay mp4, signals, a real RTSP camera.

The CLI runs in a subprocess whose ``import torch`` is blocked, as on a camera box.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from cameras import RTSP_SERVER, SYSTEM_PYTHON, free_port, has_rtsp_server

from conftest import NO_TORCH, VTEST, pixlm_run, read_jsonl


def frames_in(video: Path) -> int:
    cap = cv2.VideoCapture(str(video))
    n = 0
    while cap.read()[0]:
        n += 1
    return n


def test_video_grid_jsonl_and_overlay(tiny_bundle, tmp_path):
    out, mp4 = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    p = pixlm_run(
        str(VTEST),
        "--bundle",
        str(tiny_bundle),
        "--grid",
        "2x2",
        "--jsonl",
        str(out),
        "--save",
        str(mp4),
        "--max-frames",
        "40",
        "--anomaly-threshold",
        "0.3",
        "--metrics-every",
        "0.5",
        "--stats-json",
        str(tmp_path / "stats.json"),
    )
    stdout, stderr = p.communicate(timeout=180)
    assert p.returncode == 0, stderr
    records = read_jsonl(out)
    results = [r for r in records if r["type"] == "result"]
    assert len(results) == 160 and sorted({r["frame"] for r in results}) == list(range(40))
    assert {r["region"]["name"] for r in results} == {"r0c0", "r0c1", "r1c0", "r1c1"}
    r = results[0]
    assert r["source"].endswith("vtest.avi")
    for r in results:  # the tiny model's open-set gate calls street regions unknown, or labels them
        assert r["label"] == (r["top_k"][0][0] if r["known"] else "unknown")
    assert set(r["timings_ms"]) == {"tokenize", "infer", "post"} and isinstance(r["anomaly_event"], bool)
    assert any(x["type"] == "status" and x["status"] == "ok" for x in records)
    assert frames_in(mp4) == 40 and not list(tmp_path.glob("*.partial.*"))
    assert "[metrics]" in stderr and "prefix reuse" not in stderr  # off by default
    assert stdout.count("vtest.avi#") == 40
    # --stats-json: the run's statistics, the numbers the metrics lines and the summary read
    stats = json.loads((tmp_path / "stats.json").read_text())
    assert stats["frames"] == 40 and "40 frames from 1 source(s)" in stderr
    assert sum(int(size) * n for size, n in stats["engine_calls"].items()) == 160
    (source,) = stats["sources"]
    assert source["name"] == str(VTEST) and source["frames"] == 40 and source["fps"] > 0
    assert source["reader"]["read"] >= 40 and source["dropped"] == source["skipped"] == 0
    assert set(stats["ms_per_frame"]) == {"capture_wait", "tokenize", "infer", "post"}
    assert stats["prefix_reuse"]["frames"] == 160 and stats["prefix_reuse"]["tokens_saved"] == 0
    assert sum(stats["events"]["anomaly"].values()) == sum(r["type"] == "anomaly" for r in records)
    assert not list(tmp_path.glob(".*.partial"))


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_closes_every_sink(tiny_bundle, tmp_path, sig):
    out, mp4 = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    p = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--realtime", "--jsonl", str(out), "--save", str(mp4), "-q"
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and sum(r["type"] == "result" for r in read_jsonl(out)) < 10:
        time.sleep(0.2)
    p.send_signal(sig)
    _, stderr = p.communicate(timeout=30)
    assert p.returncode == 128 + sig, stderr
    assert "all outputs closed" in stderr
    results = [r for r in read_jsonl(out) if r["type"] == "result"]  # every line parses
    assert 10 <= len(results) < 795
    assert frames_in(mp4) == len(results)  # one region per frame: the video holds every frame


@pytest.mark.slow
@pytest.mark.skipif(not has_rtsp_server(), reason="needs python3-gi + gir1.2-gst-rtsp-server-1.0")
def test_rtsp_camera_restart_mid_run(tiny_bundle, tmp_path, procs):
    port = free_port()
    server_cmd = [SYSTEM_PYTHON, str(RTSP_SERVER), str(port)]
    server = procs(server_cmd, ready="READY")
    out = tmp_path / "out.jsonl"
    p = pixlm_run(
        f"rtsp://127.0.0.1:{port}/test",
        "--bundle",
        str(tiny_bundle),
        "--jsonl",
        str(out),
        "--timeout",
        "2",
        "-q",
    )
    try:

        def wait(cond, seconds):
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                records = read_jsonl(out)
                if cond(records):
                    return records
                time.sleep(0.2)
            raise AssertionError(f"timed out; last records: {read_jsonl(out)[-5:]}")

        wait(lambda rs: sum(r["type"] == "result" for r in rs) >= 5, 40)
        server.kill()
        server.wait(timeout=10)
        t_kill = time.time()
        wait(lambda rs: any(r.get("status") == "reconnecting" for r in rs), 30)
        procs(server_cmd, ready="READY")
        t_back = time.time()
        records = wait(lambda rs: sum(r["type"] == "result" and r["timestamp"] > t_back for r in rs) >= 5, 40)
    finally:
        p.send_signal(signal.SIGINT)
        _, stderr = p.communicate(timeout=30)
    results = [r for r in read_jsonl(out) if r["type"] == "result"]
    before = [r for r in results if r["timestamp"] < t_kill]
    after = [r for r in results if r["timestamp"] > t_back]
    assert len(before) >= 5 and len(after) >= 5
    frames = [r["frame"] for r in results]
    assert frames == sorted(frames), "frame indices count on across the reconnect"
    statuses = [r["status"] for r in records if r["type"] == "status"]
    assert "timeout" in statuses and "reconnecting" in statuses and statuses[-1] == "ok"
    assert p.returncode == 130, stderr


@pytest.mark.parametrize(
    "args, words",
    [
        (["ftp://127.0.0.1/x"], "unknown URI scheme"),
        (["/nonexistent/clip.mp4"], "no such file"),
        ([str(VTEST), "--roi", "700,500,100,100", "--max-frames", "1"], "outside the 768x576 frame"),
        ([str(VTEST), "--grid", "2by2"], "2x2"),
        ([str(VTEST), "--show"], "--show needs OpenCV with a GUI"),
        ([str(VTEST), "--save", "/nonexistent-dir/out.mp4"], "not writable"),
        # options out of range are refused before anything starts
        ([str(VTEST), "--max-frames", "0"], "Invalid value for '--max-frames'"),
        ([str(VTEST), "--max-frames", "-1"], "Invalid value for '--max-frames'"),
        ([str(VTEST), "--timeout", "0"], "Invalid value for '--timeout'"),
        ([str(VTEST), "--threads", "-1"], "Invalid value for '--threads'"),
        ([str(VTEST), "--max-wait-ms", "-5"], "Invalid value for '--max-wait-ms'"),
        ([str(VTEST), "--anomaly-threshold", "nan"], "Invalid value for '--anomaly-threshold'"),
        ([str(VTEST), "--batch", "0"], "Invalid value for '--batch'"),
        ([str(VTEST), "--stride", "0"], "Invalid value for '--stride'"),
        ([str(VTEST), "--grid", "0x2"], "Invalid value for '--grid'"),
        # outputs: MQTT, webhook, live view, snapshots, event kinds
        ([str(VTEST), "--mqtt", "http://broker/x"], "expected mqtt://host[:port]/prefix"),
        ([str(VTEST), "--mqtt", "mqtt://broker/a/#"], "may not hold MQTT wildcards"),
        ([str(VTEST), "--webhook", "ftp://x/y"], "expected an http:// or https:// URL"),
        ([str(VTEST), "--serve", "localhost:http"], "expected HOST:PORT"),
        ([str(VTEST), "--serve", "203.0.113.9:8080", "--serve-token", "t"], "cannot listen"),
        ([str(VTEST), "--snapshots", "/proc/no/such"], "cannot create the snapshot folder"),
        ([str(VTEST), "--events", "anomaly,bogus"], "choose from anomaly, label, status"),
        ([str(VTEST), "--stats-json", "/nonexistent-dir/stats.json"], "no such folder"),
        ([str(VTEST), "--prefix-reuse", "--precision", "int8-dynamic"], "would not be exact: drop one"),
    ],
)
def test_bad_input_is_one_clear_line(tiny_bundle, args, words):
    p = pixlm_run(*args, "--bundle", str(tiny_bundle))
    _, stderr = p.communicate(timeout=60)
    assert p.returncode != 0 and words in stderr and "Traceback" not in stderr, stderr


def test_missing_bundle_is_one_clear_line(tmp_path):
    p = pixlm_run(str(VTEST), "--bundle", str(tmp_path / "none"))
    _, stderr = p.communicate(timeout=60)
    assert p.returncode == 1 and "no such bundle folder" in stderr and "Traceback" not in stderr


def test_bench_prints_its_tables(tiny_bundle, tmp_path):
    p = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "bench", "--bundle", str(tiny_bundle), "--frames", "1200"]
        + ["--threads", "1", "--repeats", "1", "--reuse-frames", "40"]
        + ["--static-clip", str(tmp_path / "static.avi")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stderr
    for words in ("engine only", "end to end", "where prefix reuse pays", "growth from 10% of the run"):
        assert words in p.stdout
    # reuse is exact with the fp32 file: the printed difference is a number, and tiny
    diff = re.search(r"reuse vs full recompute \(score, bits\) \| ([0-9.e+-]+) \|", p.stdout)
    assert diff and float(diff.group(1)) <= 1e-4, p.stdout
    gate = re.search(r"open-set gate \('unknown'\): (\d+) µs per region[^|]*\| ([\d,]+) \|", p.stdout)
    assert gate and int(gate.group(1)) > 0, p.stdout  # its cost, measured
    # reuse on vs off: both clips, at the batch and at one frame per call, each with its ratio
    ratios = re.findall(
        r"^\| (vtest.avi|static) \| (16|4 \(one frame\)) \| .* \| \*\*([0-9.]+)x\*\* \|", p.stdout, re.M
    )
    assert len(ratios) == 4, p.stdout
    # memory: the run's peak above the libraries' floor, measured in the same run
    floor = re.search(r"floor: .* \| ([0-9.]+) \|", p.stdout)
    above = re.search(r"\*\*peak minus the floor\*\* \| \*\*([0-9.]+)\*\*", p.stdout)
    assert floor and above and 30 < float(floor.group(1)) and 0 < float(above.group(1)) < 500, p.stdout


def test_no_source_delivering_is_an_error_with_clean_output(tiny_bundle):
    """A camera that never answers: exit 1 with one Error line, each status printed once, and no
    FFmpeg or OpenCV warnings."""
    p = pixlm_run(
        "rtsp://127.0.0.1:1/nothing",
        "--bundle",
        str(tiny_bundle),
        "--reconnect-attempts",
        "1",
        "--timeout",
        "1",
        "-q",
    )
    _, stderr = p.communicate(timeout=120)
    assert p.returncode == 1, stderr
    lines = stderr.splitlines()
    assert lines[-1] == "Error: no source delivered a frame (0 frames; see the status lines above)"
    assert sum("gave up after 1 reconnect attempts" in line for line in lines) == 1, stderr
    assert not any(line.startswith(("[tcp", "[ WARN", "source ")) for line in lines), stderr


def test_frames_of_changing_sizes(tiny_bundle, tmp_path):
    """A folder of images of two sizes: the grid is recomputed per size (right xywh in the JSON
    Lines, the overlay video still written); ROIs that a later size cannot serve skip those frames,
    counted, without ending the run."""
    cap = cv2.VideoCapture(str(VTEST))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        frame = cap.read()[1]
        if i % 2:
            frame = cv2.resize(frame, (384, 288))
        cv2.imwrite(str(folder / f"{i:03d}.png"), frame)
    out, mp4 = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    p = pixlm_run(
        str(folder),
        "--bundle",
        str(tiny_bundle),
        "--grid",
        "2x2",
        "--jsonl",
        str(out),
        "--save",
        str(mp4),
        "-q",
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    results = [r for r in read_jsonl(out) if r["type"] == "result"]
    for r in results:
        if r["region"]["name"] == "r1c1":
            assert r["region"]["xywh"] == ([192, 144, 192, 144] if r["frame"] % 2 else [384, 288, 384, 288])
    assert len(results) == 24 and frames_in(mp4) == 6

    p = pixlm_run(
        str(folder),
        "--bundle",
        str(tiny_bundle),
        "--roi",
        "400,300,300,200",
        "--jsonl",
        str(out),
        "--metrics-every",
        "0.1",
        "-q",
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert sorted(r["frame"] for r in read_jsonl(out) if r["type"] == "result") == [0, 2, 4]
    assert "skipped 3" in err


def test_overlay_video_keeps_the_source_frame_rate(tiny_bundle, tmp_path):
    """A 25 fps clip's overlay is written at 25 fps (it was once written at 10 fps and played 2.5x slow)."""
    clip, mp4 = tmp_path / "clip.avi", tmp_path / "out.mp4"
    cap = cv2.VideoCapture(str(VTEST))
    writer = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (384, 288))
    for _ in range(20):
        writer.write(cv2.resize(cap.read()[1], (384, 288)))
    writer.release()
    p = pixlm_run(str(clip), "--bundle", str(tiny_bundle), "--save", str(mp4), "-q")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    out = cv2.VideoCapture(str(mp4))
    assert out.get(cv2.CAP_PROP_FPS) == pytest.approx(25.0, abs=0.01) and frames_in(mp4) == 20


@pytest.mark.parametrize("delay", [0.15, 0.3, 0.4, 0.6, 0.8])
def test_early_ctrl_c_is_a_clean_130(tiny_bundle, tmp_path, delay):
    """Ctrl-C while the CLI is still importing or opening the bundle is exit 130 without a traceback
    (it once gave a traceback and exit 1); the real `pixlm` console script, as a user runs it."""
    p = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "pixlm"),
            "run",
            str(VTEST),
            "--bundle",
            str(tiny_bundle),
            "--jsonl",
            str(tmp_path / "o.jsonl"),
            "-q",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(delay)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "Traceback" not in err, err


def test_the_same_source_twice_stays_distinguishable(tiny_bundle, tmp_path):
    """Two copies of one clip: distinct names in the JSON Lines, one overlay file each, and the
    summary names the files that exist."""
    out, mp4 = tmp_path / "out.jsonl", tmp_path / "out.mp4"
    p = pixlm_run(
        str(VTEST),
        str(VTEST),
        "--bundle",
        str(tiny_bundle),
        "--max-frames",
        "10",
        "--jsonl",
        str(out),
        "--save",
        str(mp4),
        "-q",
    )
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    names = {r["source"] for r in read_jsonl(out) if r["type"] == "result"}
    assert names == {str(VTEST), f"{VTEST}#2"}
    files = sorted(tmp_path.glob("out-*.mp4"))
    assert [f.name for f in files] == ["out-0.mp4", "out-1.mp4"] and not mp4.exists()
    assert (
        f"overlay video in {files[0]}, {files[1]}" in err or f"overlay video in {files[1]}, {files[0]}" in err
    )


def test_loop_replays_files(tiny_bundle, tmp_path):
    """`--loop 3` plays a folder of 2 images three times: 6 frames, numbers restarting each pass."""
    cap = cv2.VideoCapture(str(VTEST))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(2):
        cv2.imwrite(str(folder / f"{i}.png"), cap.read()[1])
    out = tmp_path / "out.jsonl"
    p = pixlm_run(str(folder), "--bundle", str(tiny_bundle), "--loop", "3", "--jsonl", str(out), "-q")
    _, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert [r["frame"] for r in read_jsonl(out) if r["type"] == "result"] == [0, 1] * 3
    assert "6 frames from 1 source(s)" in err

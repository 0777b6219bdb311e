"""Smoke tests: every program in samples/ runs to the end on a real bundle, with torch blocked (a
camera box has none), and does what its docstring says."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import cv2
import pytest
from cameras import free_port

from conftest import VTEST

SAMPLES = Path(__file__).resolve().parents[2] / "samples"
RUN_BLOCKED = (
    "import runpy, sys\n"
    "class B:\n"
    "    def find_spec(self, n, p=None, t=None):\n"
    "        if n.split('.')[0] == 'torch': raise ImportError('torch blocked')\n"
    "sys.meta_path.insert(0, B())\n"
    "sys.argv = sys.argv[1:]\n"
    "runpy.run_path(sys.argv[0], run_name='__main__')\n"
)


def sample(name: str, *args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-c", RUN_BLOCKED, str(SAMPLES / name), *args]
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]
    return p


def test_samples_are_short():
    for path in SAMPLES.glob("*.py"):
        assert len(path.read_text().splitlines()) <= 60, path.name


def test_camera_classify(tiny_bundle, tmp_path):
    clip = tmp_path / "clip.avi"
    cap, w = cv2.VideoCapture(str(VTEST)), None
    for _ in range(5):
        image = cap.read()[1]
        w = w or cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10, image.shape[1::-1])
        w.write(image)
    w.release()
    p = sample("camera_classify.py", str(clip), "out.mp4", str(tiny_bundle), cwd=tmp_path)
    assert len([line for line in p.stdout.splitlines() if line.startswith("#")]) == 5
    assert cv2.VideoCapture(str(tmp_path / "out.mp4")).read()[0]


def test_anomaly_watch_writes_events_and_snapshots(tiny_bundle, tmp_path):
    """Threshold 0 on a bundle without alert rules: every region alerts once it has been
    surprising for a second (frame 10 of the 10-frames/s clip)."""
    p = sample("anomaly_watch.py", str(tiny_bundle), str(VTEST), "0.0", "12", cwd=tmp_path)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    anomalies = [e for e in events if e["type"] == "anomaly"]
    assert len(anomalies) == 1 and "1 anomaly events" in p.stdout  # the whole frame: one region
    assert anomalies[0]["phase"] == "start" and anomalies[0]["frame"] == 10
    assert all((tmp_path / "snapshots" / e["snapshot"]).exists() for e in anomalies)
    assert "start " in p.stdout


def test_complete_image(tiny_bundle, tmp_path):
    sample("complete_image.py", "3", "4", "c.png", str(tiny_bundle), cwd=tmp_path)
    image = cv2.imread(str(tmp_path / "c.png"))
    assert image.shape[0] == 4 * 28 and image.shape[1] == 6 * 4 * 28


@pytest.mark.slow
def test_live_view_serves_while_it_streams(tiny_bundle, tmp_path):
    port = free_port()
    cmd = [sys.executable, "-c", RUN_BLOCKED, str(SAMPLES / "live_view.py"), str(tiny_bundle), str(VTEST)]
    p = subprocess.Popen(
        [*cmd, f"127.0.0.1:{port}", "-", "20"], cwd=tmp_path, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline, body = time.monotonic() + 60, b""
        while time.monotonic() < deadline and b"pixlm_frames_total{" not in body:
            time.sleep(0.5)
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
            except OSError:
                pass
        assert b"pixlm_frames_total{" in body
        out, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    assert p.returncode == 0 and "events:" in out

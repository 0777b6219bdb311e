"""Soak: `pixlm run` on 3 live RTSP cameras and 2 looping files for 30 minutes, cameras killed.

    make soak                                   # 30 minutes, writes docs/figures/soak.{json,png}
    .venv/bin/python benchmarks/soak.py --minutes 5 --out /tmp/soak

Real parts only: three GStreamer RTSP servers (tests/rtsp_server.py, 10 fps) and vtest.avi twice,
paced at its frame rate and looped, through the real CLI with ``--grid 3x3``. Every
``--kill-every`` minutes one camera (in turn) is killed and restarted 20 s later. Every 5 s the
process's RSS, threads and open file descriptors are read from /proc. At the end the run gets
SIGINT, and the JSON Lines are checked.

Goals, each a pass/fail line:

* RSS growth <= 20 MB from the end of the warm-up (first 3 minutes) to the end;
* no thread or descriptor leak: the counts at the end, with every camera up, are those after the
  warm-up (+-2 for the reader threads' reconnect timing);
* live p50 latency <= 2 engine intervals (an interval: the time between two batches' results);
* JSON Lines results = frames processed x 9 regions, every frame with all 9.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from cameras import RTSP_SERVER, SYSTEM_PYTHON, free_port, start_process  # noqa: E402

from pixlm.runtime.defaults import VTEST  # noqa: E402

PIXLM = str(Path(sys.executable).parent / "pixlm")
REGIONS = 9  # --grid 3x3


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {
        "rss_mb": int(fields["VmRSS"].split()[0]) / 1024,
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def check_jsonl(path: Path, frames_reported: int) -> dict:
    """Results per frame, latency of the live sources, and engine intervals, from the JSON Lines."""
    per_frame: dict[tuple, int] = {}
    live_latency, batch_ends = [], set()
    with path.open(encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["type"] != "result":
                continue
            key = (r["source"], r["frame"], r["timestamp"])
            per_frame[key] = per_frame.get(key, 0) + 1
            # every result of one engine batch is stamped at the same instant: capture + latency
            batch_ends.add(round(r["timestamp"] + r["latency_ms"] / 1e3, 3))
            if r["source"].startswith("rtsp://"):
                live_latency.append(r["latency_ms"])
    ends = np.sort(np.array(sorted(batch_ends)))
    return {
        "frames_in_jsonl": len(per_frame),
        "frames_reported": frames_reported,
        "results": sum(per_frame.values()),
        "frames_missing_regions": sum(1 for n in per_frame.values() if n != REGIONS),
        "live_latency_p50_ms": float(np.median(live_latency)) if live_latency else None,
        "engine_interval_ms": float(1e3 * np.median(np.diff(ends))) if len(ends) > 1 else None,
    }


def plot(samples: list[dict], kills: list[float], warmup_s: float, out: Path) -> None:
    """RSS growth since the warm-up against the goal, threads and descriptors over time; camera
    kills marked in red along the bottom (OpenCV drawing, no matplotlib)."""
    from pixlm.studies.common import line_plot, write_png

    t = np.array([s["t"] for s in samples]) / 60
    span = (0.0, max(float(t[-1]), 1.0))
    base = next(s["rss_mb"] for s in samples if s["t"] >= warmup_s)
    keep = t >= warmup_s / 60
    growth = np.array([s["rss_mb"] for s in samples])[keep] - base
    top = max(30.0, float(growth.max()) + 5)
    pictures = [
        line_plot(
            [("RSS growth", t[keep], growth), ("goal", np.array(span), np.array([20.0, 20.0]))],
            "memory since warm-up",
            "minutes",
            "MB",
            span,
            (min(-2.0, float(growth.min())), top),
        ),
        line_plot(
            [(k, t, np.array([s[k] for s in samples])) for k in ("threads", "fds")],
            "threads and descriptors",
            "minutes",
            "count",
            span,
            (0, max(max(s["threads"], s["fds"]) for s in samples) * 1.2),
        ),
    ]
    image = np.concatenate(pictures, axis=1)
    for k in kills:  # a red tick per camera kill, along the bottom of both plots
        for i in range(2):
            x = int(i * 360 + 44 + k / 60 / span[1] * (360 - 54))
            image[-36:-30, x - 1 : x + 1] = (0, 0, 255)
    write_png(out, image)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--kill-every", type=float, default=4.0, help="minutes between camera kills")
    ap.add_argument("--warmup", type=float, default=3.0, help="minutes before the baseline sample")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--work", type=Path, default=ROOT / "build" / "soak")
    a = ap.parse_args()
    a.work.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    ports = [free_port() for _ in range(3)]
    cameras: list[subprocess.Popen] = []

    def camera(i: int) -> subprocess.Popen:
        cmd = [SYSTEM_PYTHON, str(RTSP_SERVER), str(ports[i])]
        return start_process(cmd, a.work / f"camera{i}.log", ready="READY")

    jsonl = a.work / "soak.jsonl"
    jsonl.unlink(missing_ok=True)
    run = None
    try:
        cameras = [camera(i) for i in range(3)]
        urls = [f"rtsp://127.0.0.1:{p}/test" for p in ports]
        cmd = [PIXLM, "run", *urls, VTEST, VTEST, "--grid", "3x3", "--batch", str(5 * REGIONS)]
        cmd += ["--realtime", "--loop", "0", "--timeout", "3", "--reconnect-attempts", "1000"]
        cmd += ["--jsonl", str(jsonl), "--metrics-every", "30", "-q"]
        log = open(a.work / "run.log", "w")  # noqa: SIM115 - closed below
        run = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        t0 = time.monotonic()
        samples, kills, down = [], [], None  # down: (camera index, when to restart)
        next_kill, victim = a.kill_every * 60, 0
        while (now := time.monotonic() - t0) < a.minutes * 60:
            if run.poll() is not None:
                raise SystemExit(f"pixlm run ended early with {run.returncode}; see {a.work / 'run.log'}")
            if down is None and now >= next_kill:
                cameras[victim].kill()
                cameras[victim].wait()
                kills.append(now)
                down, victim, next_kill = (victim, now + 20), (victim + 1) % 3, next_kill + a.kill_every * 60
            if down is not None and now >= down[1]:
                cameras[down[0]] = camera(down[0])
                down = None
            samples.append({"t": round(now, 1), "all_cameras_up": down is None, **proc_sample(run.pid)})
            print(f"\r{now / 60:5.1f} min  {samples[-1]}", end="", flush=True)
            time.sleep(5)
        run.send_signal(signal.SIGINT)
        rc = run.wait(timeout=60)
        log.close()
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        for c in cameras:
            c.kill()
    print()
    summary = (a.work / "run.log").read_text().strip().splitlines()
    frames = next(int(line.split()[0]) for line in reversed(summary) if " frames from " in line)
    warm = [s for s in samples if s["t"] >= a.warmup * 60 and s["all_cameras_up"]]
    base, end = warm[0], warm[-1]
    after_warm = [s for s in samples if s["t"] >= a.warmup * 60]
    res = {
        "minutes": a.minutes,
        "camera_kills": len(kills),
        "exit_status": rc,
        "rss_mb": {"warm": base["rss_mb"], "end": end["rss_mb"], "max": max(s["rss_mb"] for s in after_warm)},
        "threads": {"warm": base["threads"], "end": end["threads"]},
        "fds": {"warm": base["fds"], "end": end["fds"]},
        **check_jsonl(jsonl, frames),
    }
    growth = end["rss_mb"] - base["rss_mb"]
    goals = {
        "rss growth <= 20 MB": growth <= 20,
        "no thread leak": abs(end["threads"] - base["threads"]) <= 2,
        "no descriptor leak": abs(end["fds"] - base["fds"]) <= 2,
        "live p50 <= 2 engine intervals": res["live_latency_p50_ms"] <= 2 * res["engine_interval_ms"],
        "results = frames x regions": res["results"] == frames * REGIONS
        and res["frames_in_jsonl"] == frames
        and res["frames_missing_regions"] == 0,
        "clean exit (130)": rc == 130,
    }
    res["rss_growth_mb"] = round(growth, 1)
    res["goals"] = goals
    (a.out / "soak.json").write_text(json.dumps({"samples": samples, "kills": kills, **res}, indent=1))
    plot(samples, kills, a.warmup * 60, a.out / "soak.png")
    print(json.dumps(res, indent=1))
    return 0 if all(goals.values()) else 1


if __name__ == "__main__":
    sys.exit(main())

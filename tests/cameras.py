"""Real network cameras on 127.0.0.1 for the tests: GStreamer's RTSP server and ffmpeg's MJPEG.

``procs`` (a fixture in tests/runtime/conftest.py) starts them and kills them at teardown.
"""

from __future__ import annotations

import select
import socket
import subprocess
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's python, which has python3-gi and GstRtspServer
RTSP_SERVER = Path(__file__).resolve().parent / "rtsp_server.py"


def has_rtsp_server() -> bool:
    probe = "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import GstRtspServer"
    try:
        return subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_process(cmd: list[str], log_path: Path, ready: str | None = None) -> subprocess.Popen:
    """Start ``cmd``; with ``ready``, wait (at most 15 s) for a stdout line containing it."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed with the process by stop_processes()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE if ready else log, stderr=log, stdin=subprocess.DEVNULL)
    p.log = log  # type: ignore[attr-defined]
    if ready:
        deadline = time.monotonic() + 15
        line = b""
        while ready.encode() not in line and time.monotonic() < deadline:
            if select.select([p.stdout], [], [], 0.5)[0]:
                line = p.stdout.readline()
                if not line:
                    break
        assert ready.encode() in line, f"{cmd[-1]} never printed {ready!r}: {line!r}"
    return p


def stop_processes(started: list[subprocess.Popen]) -> None:
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        if p.stdout:
            p.stdout.close()
        p.log.close()  # type: ignore[attr-defined]

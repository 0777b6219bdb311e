"""Frame sources with real parts: a real clip, real PNGs, a real GStreamer RTSP server and a real
ffmpeg MJPEG camera on 127.0.0.1, killed and restarted mid-run."""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest
from cameras import RTSP_SERVER, SYSTEM_PYTHON, free_port, has_rtsp_server

from conftest import VTEST
from pixlm.runtime.sources import Frame, Source, SourceError, SourceEvent, open_source

CLIP = str(VTEST)  # Debian opencv-doc: 768x576, 795 frames


def wait_for(cond: Callable[[], bool], timeout: float, src: Source | None = None) -> bool:
    """Poll ``cond`` for at most ``timeout`` s, draining ``src`` meanwhile (as a real consumer would)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        if src is not None:
            src.read(timeout=0.1)
        else:
            time.sleep(0.05)
    return cond()


def collect(src: Source, n: int, timeout: float, after: float = 0.0) -> list[Frame]:
    """Up to ``n`` frames captured after wall time ``after``, within ``timeout`` s."""
    frames: list[Frame] = []
    deadline = time.monotonic() + timeout
    while len(frames) < n and time.monotonic() < deadline:
        frame = src.read(timeout=0.2)
        if frame is not None and frame.timestamp > after:
            frames.append(frame)
    return frames


def assert_real(frame: Frame, shape: tuple[int, int, int] = (576, 768, 3)) -> None:
    assert frame.image.dtype == np.uint8 and frame.image.shape == shape
    assert frame.image.std() > 5, "a flat (black?) frame: sources must never invent frames"


def statuses_since(events: list[SourceEvent], t: float) -> list[str]:
    return [e.status for e in events if e.time >= t]


# -- live sources: kill and restart the camera mid-run -------------------------------------------


def check_reconnect(
    src: Source, events: list[SourceEvent], stop: Callable[[], None], restart: Callable[[], None]
):
    """The shared script: frames, camera gone, timeout/reconnecting, camera back, frames again."""
    before = collect(src, 5, timeout=20)  # the first RTSP frame takes ~3 s
    assert len(before) == 5, f"no frames from {src.name}: {events}"
    assert src.status == "ok"

    t_stop = time.time()
    stop()
    assert wait_for(lambda: "reconnecting" in statuses_since(events, t_stop), 15, src), events
    assert "timeout" in statuses_since(events, t_stop)
    # While the camera is down nothing is delivered: no invented frames (a few buffered ones may
    # still drain just after the kill).
    assert collect(src, 1, timeout=1.0, after=t_stop + 1.5) == []

    t_restart = time.time()
    restart()
    after = collect(src, 5, timeout=25, after=t_restart)
    assert len(after) == 5, f"no frames after the restart: {events}"

    for frame in before + after:
        assert frame.source == src.name
        assert_real(frame)
    indices = [f.index for f in before + after]
    assert indices == sorted(set(indices)), "indices count on across reconnects"
    assert statuses_since(events, t_restart)[-1] == "ok"
    assert events[-1].message == "reconnected"
    stats = src.stats()
    assert stats.reconnects >= 1 and stats.delivered >= 10 and stats.corrupt == 0
    drained = src.events()  # the same events, also kept for polling
    assert [e.status for e in drained] == [e.status for e in events]


@pytest.mark.slow
@pytest.mark.skipif(not has_rtsp_server(), reason="needs python3-gi + gir1.2-gst-rtsp-server-1.0")
def test_rtsp_reconnects_after_server_restart(procs):
    port = free_port()
    server_cmd = [SYSTEM_PYTHON, str(RTSP_SERVER), str(port)]
    server = [procs(server_cmd, ready="READY")]
    events: list[SourceEvent] = []

    def stop() -> None:
        server[0].kill()
        server[0].wait(timeout=10)

    def restart() -> None:
        server[0] = procs(server_cmd, ready="READY")

    url = f"rtsp://127.0.0.1:{port}/test"
    with open_source(url, timeout_s=2.0, backoff=0.2, reconnect_attempts=20, on_event=events.append) as src:
        check_reconnect(src, events, stop, restart)


@pytest.mark.slow
@pytest.mark.skipif(not has_rtsp_server(), reason="needs python3-gi + gir1.2-gst-rtsp-server-1.0")
def test_a_frozen_rtsp_server_times_out_once_without_flapping(procs):
    """SIGSTOP the server: FFmpeg's read timeout makes the decoder hand out buffered frames, one per
    timeout, which used to flip the status back to "ok resumed" twice. Status must go timeout ->
    reconnecting only, nothing stale is delivered, and the thawed server brings "ok" back."""
    port = free_port()
    server = procs([SYSTEM_PYTHON, str(RTSP_SERVER), str(port)], ready="READY")
    events: list[SourceEvent] = []
    url = f"rtsp://127.0.0.1:{port}/test"
    with open_source(url, timeout_s=2.0, backoff=0.2, reconnect_attempts=50, on_event=events.append) as src:
        assert len(collect(src, 5, timeout=20)) == 5, events
        t_freeze = time.time()
        server.send_signal(signal.SIGSTOP)
        frozen = collect(src, 100, timeout=12, after=t_freeze + 1.0)
        during = statuses_since(events, t_freeze)
        server.send_signal(signal.SIGCONT)
        assert wait_for(lambda: src.status == "ok", 25, src), events
    assert frozen == [], f"{len(frozen)} stale frames delivered from a frozen server"
    assert during[0] == "timeout" and set(during[1:]) == {"reconnecting"}, during


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
@pytest.mark.parametrize("outage", ["kill", "stall"])
def test_http_mjpeg_reconnects_after_camera_restart(procs, outage):
    """``kill`` closes the connection; ``stall`` (SIGSTOP) leaves it open and silent, which only the
    watchdog's read timeout can detect."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/x"
    camera_cmd = ["ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1", "-i", CLIP]
    camera_cmd += ["-an", "-c:v", "mjpeg", "-q:v", "5", "-f", "mpjpeg", "-listen", "1", url]
    camera = [procs(camera_cmd)]
    events: list[SourceEvent] = []

    def stop() -> None:
        if outage == "stall":
            camera[0].send_signal(signal.SIGSTOP)
        else:
            camera[0].kill()
            camera[0].wait(timeout=10)

    def restart() -> None:
        camera[0].kill()  # ffmpeg -listen 1 serves a single client: a new camera process
        camera[0].wait(timeout=10)
        camera[0] = procs(camera_cmd)

    # ffmpeg prints no ready line and accepts one client only, so no probe: the source's own
    # reconnect loop waits for the camera to come up, as it would for a camera that boots late.
    with open_source(url, timeout_s=1.5, backoff=0.2, reconnect_attempts=20, on_event=events.append) as src:
        check_reconnect(src, events, stop, restart)


def test_a_dead_source_stops_nothing_else(tmp_path):
    """A camera that never answers ends in ``error`` while a file source beside it delivers all."""
    paths = write_pngs(tmp_path, 6)
    events: list[SourceEvent] = []

    def broken_callback(event: SourceEvent) -> None:
        events.append(event)
        raise RuntimeError("a broken callback must not kill the reader")

    dead = open_source(
        f"rtsp://127.0.0.1:{free_port()}/none",
        timeout_s=1.0,
        backoff=0.05,
        reconnect_attempts=2,
        on_event=broken_callback,
    )
    with dead, open_source(str(paths[0].parent)) as good:
        frames = list(good)
        assert [f.index for f in frames] == list(range(6))
        assert wait_for(lambda: dead.status == "error", 10)
        assert dead.read(timeout=0.1) is None
    assert [e.status for e in events] == ["reconnecting", "reconnecting", "error"]
    assert all(e.source == dead.name for e in events)


def test_close_is_prompt_for_live_and_blocked_file_sources(tmp_path):
    live = open_source(f"rtsp://127.0.0.1:{free_port()}/none", backoff=10.0)
    wait_for(lambda: live.status == "reconnecting", 5)
    write_pngs(tmp_path, 20)
    files = open_source(str(tmp_path))  # nobody reads: the reader blocks on the full queue
    time.sleep(0.3)
    t = time.monotonic()
    live.close()
    files.close()
    assert time.monotonic() - t < 1.0
    assert live.status == "closed" and files.eos
    assert live.read(timeout=0.1) is None and files.read(timeout=0.1) is None


# -- files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("stride", [1, 7])
def test_video_file_delivers_every_frame(stride):
    frame_count = int(cv2.VideoCapture(CLIP).get(cv2.CAP_PROP_FRAME_COUNT))
    assert frame_count == 795
    events: list[SourceEvent] = []
    with open_source(CLIP, stride=stride, on_event=events.append) as src:
        assert not src.live
        frames = list(src)
        assert src.eos and src.status == "eos"
        assert src.read(timeout=0.1) is None
    assert [f.index for f in frames] == list(range(0, frame_count, stride))
    assert len(frames) == -(-frame_count // stride)
    assert_real(frames[0])
    assert frames[0].source == CLIP
    stats = src.stats()
    assert (stats.read, stats.delivered, stats.dropped, stats.corrupt) == (frame_count, len(frames), 0, 0)
    assert stats.skipped == frame_count - len(frames)
    assert [e.status for e in events] == ["ok", "eos"]


def test_video_file_realtime_paces_at_the_file_fps(tmp_path):
    clip = tmp_path / "short.avi"  # 12 frames at 10 fps: 1.1 s of video
    cap = cv2.VideoCapture(CLIP)
    out = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (768, 576))
    for _ in range(12):
        out.write(cap.read()[1])
    out.release()
    t = time.monotonic()
    with open_source(str(clip), realtime=True) as src:
        frames = list(src)
    elapsed = time.monotonic() - t
    assert len(frames) == 12
    assert 1.0 < elapsed < 3.0, elapsed
    assert 1.0 < frames[-1].timestamp - frames[0].timestamp < 1.3


def write_pngs(folder: Path, n: int) -> list[Path]:
    """Real images with different content; names that sort wrong as plain strings."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        path = folder / f"frame{i}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_folder_delivers_images_in_natural_order_and_skips_corrupt_ones(tmp_path):
    paths = write_pngs(tmp_path, 12)
    (tmp_path / "frame5.png").write_bytes(b"not a png")  # a corrupt frame mid-sequence
    (tmp_path / "notes.txt").write_text("ignored: not an image")
    with open_source(str(tmp_path)) as src:
        frames = list(src)
    assert [f.index for f in frames] == [i for i in range(12) if i != 5]
    np.testing.assert_array_equal(frames[10].image, cv2.imread(str(paths[11])))
    assert src.stats().corrupt == 1 and src.eos


def test_glob_with_stride_and_realtime(tmp_path):
    write_pngs(tmp_path, 10)
    t = time.monotonic()
    with open_source(str(tmp_path / "frame*.png"), stride=3, realtime=True, fps=20.0) as src:
        frames = list(src)
    assert [f.index for f in frames] == [0, 3, 6, 9]
    assert time.monotonic() - t > 0.4  # frame 9 is due 9/20 s after frame 0
    assert frames[0].image.shape == (48, 64, 3) and src.stats().skipped == 6


def test_image_file_is_one_frame_then_eos(tmp_path):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.tile(np.arange(64, dtype=np.uint8), (32, 1)))
    with open_source(f"file://{grey}") as src:
        frame = src.read(timeout=5)
        assert frame is not None and frame.index == 0
        assert frame.image.shape == (32, 64, 3)  # grey is read as BGR
        assert src.read(timeout=0.5) is None and src.eos


# -- bad input: one clear error naming the source, at open time -----------------------------------


@pytest.mark.parametrize(
    "uri, words",
    [
        ("foo://camera/1", "unknown URI scheme 'foo'"),
        ("/no/such/clip.mp4", "no such file"),
        ("/no/such/folder/*.png", "matches no image"),
        ("/dev/video97", "no such camera device"),
        ("97", "no such camera device /dev/video97"),
    ],
)
def test_bad_uri_raises_source_error_naming_it(uri, words):
    with pytest.raises(SourceError, match=words) as err:
        open_source(uri)
    assert uri in str(err.value)
    assert isinstance(err.value, ValueError)


def test_unreadable_files_raise_source_error(tmp_path):
    for name in ("broken.mp4", "broken.png", "broken.avi"):
        (tmp_path / name).write_bytes(os.urandom(2048))
        with pytest.raises(SourceError, match="cannot read") as err:
            open_source(str(tmp_path / name))
        assert name in str(err.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="no image files"):
        open_source(str(tmp_path / "empty"))
    with pytest.raises(SourceError, match="stride"):
        open_source(str(write_pngs(tmp_path, 1)[0]), stride=0)


@pytest.mark.skipif("GStreamer:                   YES" in cv2.getBuildInformation(), reason="has GStreamer")
def test_csi_without_gstreamer_is_a_clear_error():
    with pytest.raises(SourceError, match="csi://0: this OpenCV build has no GStreamer"):
        open_source("csi://0")


def test_password_is_redacted_from_the_source_name():
    with open_source(f"rtsp://admin:secret@127.0.0.1:{free_port()}/x", reconnect_attempts=0) as src:
        assert src.name.startswith("rtsp://admin:***@127.0.0.1:") and "secret" not in src.name


def test_bad_images_in_a_folder_are_skipped_and_named(tmp_path):
    """A corrupt first image no longer rejects the folder; every unreadable image is named in a
    'skipped' event, which `pixlm run` writes to the JSON Lines."""
    write_pngs(tmp_path, 6)
    (tmp_path / "frame0.png").write_bytes(b"not a png")  # the first one
    (tmp_path / "frame3.png").write_bytes(b"")  # and one in the middle
    events = []
    with open_source(str(tmp_path), on_event=events.append) as src:
        frames = list(src)
    assert [f.index for f in frames] == [1, 2, 4, 5] and src.stats().corrupt == 2
    skipped = [e for e in events if e.status == "skipped"]
    assert [e.message for e in skipped] == [
        f"cannot read image {tmp_path / 'frame0.png'}",
        f"cannot read image {tmp_path / 'frame3.png'}",
    ]
    assert src.status == "eos"  # a notice, not a state: the source ended normally

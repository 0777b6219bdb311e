"""Frame sources by URI: cameras, RTSP/HTTP streams, video files, images, folders and globs.

The jetson-inference ``videoSource`` convention: the URI alone says what kind of source it is, and
that decision is made in one place, :func:`open_source`. Every source runs one reader thread and
hands frames to the caller through :meth:`Source.read`, which returns a :class:`Frame` or ``None``.

Two delivery policies, because the two kinds of input want opposite things:

* live (camera, ``csi://``, ``rtsp://``, ``http(s)://``): a one-slot mailbox that keeps only the
  newest frame, so latency never builds up when the consumer is slower than the camera; overwritten
  frames are counted as ``dropped``. A watchdog reopens a source that stays silent for
  ``timeout_s`` with exponential backoff and a bounded number of attempts.
* files (video, image, folder, glob): a bounded queue that delivers every frame and blocks the
  reader when full (back-pressure, no drops), optionally paced at the file's frame rate.

Status changes (``ok``, ``timeout``, ``reconnecting``, ``eos``, ``error``) become
:class:`SourceEvent` objects, delivered to an optional callback and kept for :meth:`Source.events`.
Transient problems never raise from ``read``; a source that fails only reports ``error``, so one
dead camera never stops the others. Frames are never invented: no black frames on a timeout.
"""

from __future__ import annotations

import glob
import logging
import os
import queue
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import cv2
import numpy as np

from pixlm.runtime.stats import RateMeter, SourceStats  # SourceStats: what Source.stats() returns

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"}
MAX_BACKOFF_S = 30.0  # the longest wait between two reconnect attempts
FILE_QUEUE_SIZE = 2  # frames a file source decodes ahead (the lanes hold a batch more; 8 held 10 MB of vtest)
# A live read that blocks this fraction of the timeout or longer and then returns a frame gave a
# decoder's buffered frame from a stalled stream (see LiveSource._pump).
STALE_READ = 0.8
STATUSES = ("opening", "ok", "timeout", "reconnecting", "eos", "error", "closed")


def put_unless_stopped(q: queue.Queue, item: object, stop: threading.Event) -> None:
    """Back-pressure between threads: wait for room in ``q``, but give up once ``stop`` is set
    (the reader has gone away), so a producer never blocks a shutdown."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


class SourceError(ValueError):
    """A source that cannot be opened: unknown URI scheme, missing or unreadable file, no backend."""


@dataclass(frozen=True)
class Frame:
    """One captured frame. ``image`` is BGR uint8 (H, W, 3)."""

    image: np.ndarray
    index: int  # frame number in the source (before stride), counted across reconnects
    timestamp: float  # wall-clock capture time, time.time()
    source: str  # the source's name (its URI, password redacted)
    fps: float | None = None  # the source's own frame rate (a video file's), when it has one


@dataclass(frozen=True)
class SourceEvent:
    """A status change of one source, e.g. ``timeout`` when a camera stops sending."""

    source: str
    status: str  # one of STATUSES
    time: float  # wall clock, time.time()
    message: str


EventCallback = Callable[[SourceEvent], None]


class Source:
    """A running frame source. Created by :func:`open_source`; use as a context manager or close()."""

    live: bool = False

    def __init__(self, name: str, *, stride: int, on_event: EventCallback | None) -> None:
        if stride < 1:
            raise SourceError(f"{name}: stride must be >= 1, got {stride}")
        self.name = name
        self.stride = stride
        self._on_event = on_event
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._events: deque[SourceEvent] = deque(maxlen=256)
        self._status = "opening"
        self._counts = dict(read=0, delivered=0, dropped=0, skipped=0, corrupt=0, reconnects=0)
        self._arrivals = RateMeter()  # frames read: the fps in stats()
        self._thread = threading.Thread(target=self._guarded_run, name=f"source:{name}", daemon=True)

    # -- public API -------------------------------------------------------------------------------

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        """The next frame, or ``None`` if nothing new arrives within ``timeout`` seconds (or at eos)."""
        raise NotImplementedError

    @property
    def status(self) -> str:
        """The current status: one of ``STATUSES``."""
        return self._status

    @property
    def reconnects(self) -> int:
        """How many times a live source came back after losing its stream (state from before is stale)."""
        return self._counts["reconnects"]

    @property
    def eos(self) -> bool:
        """True once a file source will deliver no more frames (its last one was read, or it was
        closed); never true for a live source."""
        return False

    def events(self) -> list[SourceEvent]:
        """Drain the status events recorded since the last call (the newest 256 at most)."""
        with self._lock:
            out = list(self._events)
            self._events.clear()
        return out

    def stats(self) -> SourceStats:
        """A snapshot of the counters and the arrival rate over the last 30 frames."""
        with self._lock:
            return SourceStats(**self._counts, fps=self._arrivals.fps())

    def close(self, timeout: float = 2.0) -> None:
        """Stop the reader thread. Waits up to ``timeout`` s; a thread stuck in a blocking driver call
        is a daemon and exits (releasing its capture) as soon as that call returns."""
        self._stop.set()
        self._wake()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self._status not in ("eos", "error"):
            self._status = "closed"

    def fail(self, message: str) -> None:
        """Stop the source and end it in ``error`` for a reason found outside its reader (its frames
        cannot hold the regions asked for), reported like any status change."""
        self.close()
        self._set_status("error", message)

    def __iter__(self) -> Iterator[Frame]:
        """Frames until the source ends (eos, error or close)."""
        while True:
            frame = self.read(timeout=0.5)
            if frame is not None:
                yield frame
            elif self.eos or self._status in ("error", "closed"):
                return

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} status={self.status}>"

    # -- for subclasses ---------------------------------------------------------------------------

    def _run(self) -> None:
        raise NotImplementedError

    def _wake(self) -> None:
        """Wake a consumer blocked in read() (on close)."""

    def _guarded_run(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a reader thread never dies silently, and never raises elsewhere
            log.exception("source %s failed", self.name)
            self._set_status("error", f"reader failed: {type(exc).__name__}: {exc}")
        finally:
            self._wake()

    def _set_status(self, status: str, message: str, *, repeat: bool = False, notice: bool = False) -> None:
        """Change the status and report it; ``notice``: report an event (e.g. ``skipped``) without
        changing the status."""
        with self._lock:
            if status == self._status and not repeat and not notice:
                return
            if not notice:
                self._status = status
            event = SourceEvent(self.name, status, time.time(), message)
            self._events.append(event)
        level = logging.INFO if status in ("ok", "eos") else logging.WARNING
        log.log(level, "source %s: %s (%s)", self.name, status, message)
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a broken callback must not kill the reader
                log.exception("source %s: event callback failed", self.name)

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _arrived(self, now: float) -> None:
        with self._lock:
            self._counts["read"] += 1
            self._arrivals.tick(now)


def _return_freed_memory() -> None:
    """Hand memory freed by a released capture (FFmpeg's demuxer and decoder, several MB) back to
    the system. glibc keeps freed blocks in the reader thread's malloc arena, so without this the
    process grew by a step at every camera reconnect (``make soak``) and at every pass of a looped
    file. A no-op off glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _as_bgr(image: np.ndarray | None) -> np.ndarray | None:
    """BGR uint8 (H, W, 3), or None for an empty/corrupt frame."""
    if image is None or image.size == 0:
        return None
    if image.dtype == np.uint16:  # 16-bit PNG/TIFF
        image = (image >> 8).astype(np.uint8)
    elif image.dtype != np.uint8:
        return None
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


# ---------------------------------------------------------------------------------------------------
# Live sources: newest frame only, watchdog and reconnect
# ---------------------------------------------------------------------------------------------------


class LiveSource(Source):
    """Camera or network stream. ``open_capture`` (re)opens the stream; it runs in the reader thread."""

    live = True

    def __init__(
        self,
        name: str,
        open_capture: Callable[[], cv2.VideoCapture],
        *,
        stride: int = 1,
        timeout_s: float = 5.0,
        reconnect_attempts: int = 10,
        backoff: float = 1.0,
        on_event: EventCallback | None = None,
    ) -> None:
        super().__init__(name, stride=stride, on_event=on_event)
        self._open_capture = open_capture
        self.timeout_s = timeout_s
        self.reconnect_attempts = reconnect_attempts
        self.backoff = backoff
        self._cond = threading.Condition()
        self._slot: Frame | None = None  # the 1-frame mailbox
        self._last_frame = time.monotonic()
        self._thread.start()

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        with self._cond:
            if self._slot is None and not self._stop.is_set():
                self._cond.wait(timeout)
            frame, self._slot = self._slot, None
        if frame is None:
            self._check_silence()
            return None
        self._count("delivered")
        return frame

    @property
    def status(self) -> str:
        self._check_silence()
        return self._status

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _check_silence(self) -> None:
        """Report ``timeout`` as soon as anyone looks, even while the reader is stuck in a blocking
        driver call; the reader itself reopens the stream once that call returns."""
        if self._status == "ok" and time.monotonic() - self._last_frame > self.timeout_s:
            self._set_status("timeout", f"no frame for {self.timeout_s:g} s")

    def _run(self) -> None:
        attempt = 0  # failed (re)opens in the current outage
        while not self._stop.is_set():
            cap, streamed = None, False
            try:
                cap = self._open_capture()
                if cap is not None and cap.isOpened():
                    streamed, reason = self._pump(cap)
                    if streamed and not self._stop.is_set():
                        self._set_status("timeout", reason)  # a no-op if the silence check was first
            except cv2.error as exc:  # a driver error is just another failed attempt
                log.debug("source %s: %s", self.name, exc)
            finally:
                if cap is not None:
                    cap.release()
                    _return_freed_memory()
            if self._stop.is_set():
                return
            attempt = 1 if streamed else attempt + 1  # frames flowed: a new outage starts
            if attempt > self.reconnect_attempts:
                self._set_status("error", f"gave up after {self.reconnect_attempts} reconnect attempts")
                return
            delay = min(self.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S)
            msg = f"attempt {attempt}/{self.reconnect_attempts} in {delay:.2g} s"
            self._set_status("reconnecting", msg, repeat=True)
            self._stop.wait(delay)

    def _pump(self, cap: cv2.VideoCapture) -> tuple[bool, str]:
        """Read frames into the mailbox until the stream fails, goes silent or the source is closed.
        Returns whether any frame arrived, and why it stopped."""
        got_frame = False
        silent_since = time.monotonic()
        while not self._stop.is_set():
            asked = time.monotonic()
            ok, image = cap.read()  # bounded by the capture's read timeout where the backend has one
            now = time.monotonic()
            image = _as_bgr(image) if ok else None
            if self._stop.is_set():
                break
            if not ok:  # FFmpeg has already waited its read timeout: the connection is gone
                return got_frame, "stream ended"
            if image is None:
                self._count("corrupt")
                if now - silent_since > self.timeout_s:
                    return got_frame, f"only corrupt frames for {self.timeout_s:g} s"
                continue
            if got_frame and now - asked >= STALE_READ * self.timeout_s:
                # A frozen server: FFmpeg's read timeout fired and the decoder handed out a frame it
                # had buffered. Old news, not a sign of life: no "resumed", and not delivered. (So
                # timeout_s must exceed the camera's frame interval by a margin; 5 s does.)
                self._count("dropped")
                continue
            silent_since = self._last_frame = now
            if not got_frame:
                got_frame = True
                reconnect = self._counts["read"] > 0  # frames flowed before: this is a reconnect
                if reconnect:
                    self._count("reconnects")
                self._set_status("ok", "reconnected" if reconnect else "streaming")
            elif self._status != "ok":  # the silence check fired, then the same stream recovered
                self._set_status("ok", "resumed")
            with self._lock:
                index = self._counts["read"]
            self._arrived(now)
            if index % self.stride:
                self._count("skipped")
                continue
            frame = Frame(image, index, time.time(), self.name)
            with self._cond:
                if self._slot is not None:
                    self._count("dropped")
                self._slot = frame
                self._cond.notify_all()
        return got_frame, "closed"


# ---------------------------------------------------------------------------------------------------
# File sources: every frame, back-pressure, optional real-time pacing
# ---------------------------------------------------------------------------------------------------

_EOS = object()  # queue marker: the reader is done
# What a frame reader yields per source frame: an image, None (corrupt), or _SKIPPED (not decoded,
# left out by the stride) so the counters and indices stay exact without decoding skipped frames.
_SKIPPED = np.empty(0, np.uint8)
FrameReader = Callable[[int], Iterator[tuple[int, np.ndarray | None]]]  # stride -> (index, image)


class FileSource(Source):
    """Video file or image sequence: every frame, in order, through a bounded queue."""

    def __init__(
        self,
        name: str,
        frames: FrameReader,
        *,
        stride: int = 1,
        fps: float | None = None,
        native_fps: float | None = None,
        on_event: EventCallback | None = None,
    ) -> None:
        super().__init__(name, stride=stride, on_event=on_event)
        self._frames = frames
        self._fps = fps  # pace at this rate when set
        self.native_fps = native_fps  # the file's own rate (what an overlay video is written at)
        self._queue: queue.Queue = queue.Queue(maxsize=FILE_QUEUE_SIZE)
        self._done = False  # the consumer has taken the end marker
        self._thread.start()

    def read(self, timeout: float | None = 1.0) -> Frame | None:
        if self._done or self._stop.is_set():
            return None
        try:
            item = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _EOS:
            self._done = True
            return None
        self._count("delivered")
        return item

    @property
    def eos(self) -> bool:
        return self._done or self._stop.is_set() or (self._status in ("eos", "error") and self._queue.empty())

    def _wake(self) -> None:
        try:
            self._queue.put_nowait(_EOS)
        except queue.Full:
            pass

    def _put(self, item: object) -> None:
        put_unless_stopped(self._queue, item, self._stop)

    def _run(self) -> None:
        self._set_status("ok", "reading")
        start: tuple[float, int] | None = None  # (monotonic time, index) of the first delivered frame
        for index, image in self._frames(self.stride):
            if self._stop.is_set():
                return
            if image is _SKIPPED:
                self._arrived(time.monotonic())
                self._count("skipped")
                continue
            bad = image.path if isinstance(image, _Unreadable) else None
            image = None if bad else _as_bgr(image)
            if image is None:
                self._count("corrupt")
                if bad:  # a folder's image: name it, and go on with the next
                    self._set_status("skipped", f"cannot read image {bad}", notice=True)
                continue
            self._arrived(time.monotonic())
            if self._fps:  # real time: frame i is due (i - i0) / fps after the first one
                start = start or (time.monotonic(), index)
                self._stop.wait(start[0] + (index - start[1]) / self._fps - time.monotonic())
            self._put(Frame(image, index, time.time(), self.name, self.native_fps))
        if not self._stop.is_set():
            self._set_status("eos", f"end of input after {self.stats().read} frames")
            self._put(_EOS)


def _video_reader(cap: cv2.VideoCapture, first: np.ndarray) -> FrameReader:
    """Frames of an opened video; ``first`` was read at open time to prove that the file decodes."""

    def frames(stride: int) -> Iterator[tuple[int, np.ndarray | None]]:
        try:
            yield 0, first
            index = 1
            while True:
                if index % stride:  # grab() demuxes and decodes but skips the BGR conversion
                    ok, image = cap.grab(), _SKIPPED
                else:
                    ok, image = cap.read()
                if not ok:
                    # The end, or broken frames: look a few frames further before calling it eos.
                    lost = 0
                    while not ok and lost < 3:
                        lost += 1
                        ok, image = cap.read()
                    if not ok:
                        return
                    for _ in range(lost):
                        yield index, None  # counted as corrupt
                        index += 1
                    image = _SKIPPED if index % stride else image
                yield index, image
                index += 1
        finally:
            cap.release()
            _return_freed_memory()  # a file replayed (--loop) grew by a step at each pass

    return frames


@dataclass(frozen=True)
class _Unreadable:
    """What the image reader yields for a file OpenCV cannot decode: its path, to be named."""

    path: str


def _image_reader(paths: list[str]) -> FrameReader:
    def frames(stride: int) -> Iterator[tuple[int, np.ndarray | _Unreadable | None]]:
        for index, path in enumerate(paths):
            if index % stride:
                yield index, _SKIPPED
                continue
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            yield index, image if _as_bgr(image) is not None else _Unreadable(path)

    return frames


# ---------------------------------------------------------------------------------------------------
# URI dispatch: the one place that decides what a URI is
# ---------------------------------------------------------------------------------------------------


def open_source(
    uri: str | int,
    *,
    stride: int = 1,
    realtime: bool = False,
    fps: float | None = None,
    timeout_s: float = 5.0,
    reconnect_attempts: int = 10,
    backoff: float = 1.0,
    on_event: EventCallback | None = None,
    name: str | None = None,
) -> Source:
    """Open a frame source by URI and start its reader thread.

    ========================  =====================================================================
    ``0``, ``/dev/video0``    V4L2 camera (also ``v4l2:///dev/video0``)
    ``csi://0``               Jetson CSI camera through GStreamer (``?width=&height=&framerate=``)
    ``rtsp://``, ``rtsps://`` network camera, FFmpeg over TCP
    ``http://``, ``https://`` MJPEG camera, FFmpeg
    ``clip.mp4``              video file, every frame (also ``file://clip.mp4``)
    ``img.png``               one image
    ``frames/``               every image in a folder, natural order
    ``frames/*.png``          every image matching a glob, natural order
    ========================  =====================================================================

    ``stride`` keeps every Nth frame. ``realtime`` paces files at ``fps`` (default: the video's own
    frame rate, 30 for images). Live sources silent for ``timeout_s`` are reopened up to
    ``reconnect_attempts`` times per outage, waiting ``backoff`` s doubled each attempt (at most
    ``MAX_BACKOFF_S``). ``on_event`` receives each :class:`SourceEvent`, on the reader thread (or, for
    a ``timeout`` noticed while the reader is blocked, on the thread calling ``read``/``status``).

    Raises :class:`SourceError` naming the source for an unknown scheme, a missing or unreadable
    file, or a missing backend. A live source that is down at start is not an error: it reconnects.
    """
    text = str(uri).strip()
    label = name or source_names([text])[0]
    live = dict(
        stride=stride,
        timeout_s=timeout_s,
        reconnect_attempts=reconnect_attempts,
        backoff=backoff,
        on_event=on_event,
    )
    scheme = urlsplit(text).scheme.lower() if "://" in text else ""

    if text.isdigit() or text.startswith("/dev/video") or scheme == "v4l2":
        device = f"/dev/video{text}" if text.isdigit() else text.removeprefix("v4l2://")
        if not os.path.exists(device):
            raise SourceError(f"{label}: no such camera device {device}")
        return LiveSource(label, lambda: cv2.VideoCapture(device, cv2.CAP_V4L2), **live)
    if scheme == "csi":
        pipeline = _csi_pipeline(text, label)
        return LiveSource(label, lambda: cv2.VideoCapture(pipeline, cv2.CAP_GSTREAMER), **live)
    if scheme in ("rtsp", "rtsps", "http", "https"):
        if scheme.startswith("rtsp"):
            # TCP interleaving: no smeared frames from UDP loss, works through NAT. A user setting wins.
            os.environ.setdefault("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")
        ms = int(timeout_s * 1000)
        # Bound FFmpeg's open and read so a dead server cannot hang the reader thread forever.
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, max(ms, 3000), cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
        return LiveSource(label, lambda: cv2.VideoCapture(text, cv2.CAP_FFMPEG, params), **live)
    if scheme not in ("", "file"):
        raise SourceError(f"{label}: unknown URI scheme {scheme!r} (expected csi, rtsp, http(s), file)")

    path = text.removeprefix("file://")
    files = dict(stride=stride, on_event=on_event)
    if any(c in path for c in "*?["):
        paths = _natural_sorted(p for p in glob.glob(path) if Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise SourceError(f"{label}: the glob matches no image files")
        return _open_images(label, paths, fps=(fps or 30.0) if realtime else None, **files)
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{label}: no such file or folder")
    if p.is_dir():
        paths = _natural_sorted(str(q) for q in p.iterdir() if q.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise SourceError(f"{label}: the folder holds no image files")
        return _open_images(label, paths, fps=(fps or 30.0) if realtime else None, **files)
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        return _open_images(label, [path], fps=None, **files)
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    ok, first = cap.read() if cap.isOpened() else (False, None)
    if not ok or _as_bgr(first) is None:
        cap.release()
        raise SourceError(f"{label}: cannot read a frame (not a video or image file OpenCV can decode)")
    rate = fps or cap.get(cv2.CAP_PROP_FPS) or 30.0
    native = cap.get(cv2.CAP_PROP_FPS) or None
    return FileSource(
        label, _video_reader(cap, first), fps=rate if realtime else None, native_fps=native, **files
    )


def _open_images(label: str, paths: list[str], **kwargs) -> FileSource:
    """One image must decode now; in a folder or glob, unreadable images are skipped and named as
    the reader meets them (a folder with none readable ends as a source that delivered nothing)."""
    if len(paths) == 1 and cv2.imread(paths[0], cv2.IMREAD_COLOR) is None:
        raise SourceError(f"{label}: cannot read image {paths[0]}")
    return FileSource(label, _image_reader(paths), **kwargs)


def _csi_pipeline(uri: str, label: str) -> str:
    """The Jetson Argus pipeline for ``csi://N?width=W&height=H&framerate=F``."""
    if not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()):
        raise SourceError(
            f"{label}: this OpenCV build has no GStreamer support, which CSI cameras need "
            "(use the OpenCV that ships with JetPack)"
        )
    parts = urlsplit(uri)
    q = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    sensor = parts.netloc or "0"
    if not sensor.isdigit():
        raise SourceError(f"{label}: expected csi://SENSOR_ID, e.g. csi://0")
    w, h, f = q.get("width", "1280"), q.get("height", "720"), q.get("framerate", "30")
    if not (w.isdigit() and h.isdigit() and f.isdigit()):
        raise SourceError(f"{label}: width, height and framerate must be integers")
    return (
        f"nvarguscamerasrc sensor-id={sensor} ! "
        f"video/x-raw(memory:NVMM),width={w},height={h},framerate={f}/1 ! nvvidconv ! "
        "video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1"
    )


# ---------------------------------------------------------------------------------------------------
# Source names: the one place a URI becomes a name (results, events, --roi keys, the live view) and
# a name becomes a short name (snapshot files, MQTT topics)
# ---------------------------------------------------------------------------------------------------


def source_names(uris: list[str | int]) -> list[str]:
    """The name of each source in results and events, unique in the run: its URI, password
    redacted; a URI given twice gets ``#2``, ``#3`` ...; a source whose short name (``source_slug``:
    snapshot files, MQTT topics) would repeat an earlier one's gets ``~2``, ``~3`` ... (``c/x.mp4``,
    ``d/x.mp4`` -> ``c/x.mp4``, ``d/x.mp4~2``: short names ``x.mp4``, ``x.mp4~2``). A single URI's
    name: ``source_names([uri])[0]``."""
    seen: dict[str, int] = {}
    slugs: set[str] = set()
    names = []
    for uri in uris:
        base = _redact(str(uri))
        seen[base] = seen.get(base, 0) + 1
        name = unique = base if seen[base] == 1 else f"{base}#{seen[base]}"
        n = 1
        while source_slug(unique) in slugs:
            n += 1
            unique = f"{name}~{n}"
        slugs.add(source_slug(unique))
        names.append(unique)
    return names


def source_slug(name: str) -> str:
    """A source name made safe in file names and MQTT topics: ``rtsp://cam:8554/x`` ->
    ``rtsp-cam-8554-x``; a file path keeps its base name (``/data/clip.mp4`` -> ``clip.mp4``).
    Unique among a run's ``source_names``."""
    if "://" not in name and "/" in name:
        name = name.rstrip("/").rsplit("/", 1)[-1] or name
    return re.sub(r"[^A-Za-z0-9._~]+", "-", name).strip("-.") or "source"


def _redact(uri: str) -> str:
    """The URI with any password replaced, so names are safe to log."""
    parts = urlsplit(uri) if "://" in uri else None
    if parts is None or parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _natural_sorted(paths: Iterable[str]) -> list[str]:
    """frame2.png before frame10.png."""
    return sorted(paths, key=lambda s: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)])

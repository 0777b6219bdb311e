"""Motion as tokens: how each part of a frame moved since the source's previous frame, per second.

A motion model reads the same kind of token sequence as an appearance model; only the image the
tokens are cut from differs. :class:`Motion` turns a stream of frames into *motion images*, and the
model's ordinary :class:`~pixlm.runtime.tokenizer.Tokenizer` (3 channels, a palette fitted on motion
images) cuts them into regions and tokens, in training and on the camera box alike::

    frame t (BGR) -> grey, shrunk to ``width`` columns
    grey of the source's previous frame, at time t0
        -> dense optical flow (OpenCV DIS, ultrafast preset) between the two, in pixels
        -> velocity = flow / (t - t0) / shrunk height: frame heights per second
    motion image (uint8, 3 channels, the frame's size):
        0: grey x ``grey_weight`` (where: the walkway, the lawn)
        1: horizontal velocity, 2: vertical velocity, each 128 + 127 * sign * sqrt(|v| / full_scale)

Velocity is per second of the scene's clock (``pixlm.runtime.alerts.scene_time``), not per frame:
a source read with ``--stride 3``, or a camera that drops frames, shows the same speeds. The square
root keeps a walker's slow speeds apart while a runner's still fit. The grey channel is weighted
down so that the palette's k-means spends its codes on motion, not on the texture of still ground.

Why optical flow and not frame differences: a difference between two frames grows with the time
between them and says nothing of direction, so a dropped frame looks like faster motion and a
walker against the flow looks like one with it. DIS at 320 columns costs about 1.4 ms a frame
(docs/performance.md, "Motion tokens").

State is per source: the previous shrunk grey frame and its time. The first frame of a source, of
a new pass (time going back), after a gap longer than ``max_gap_s`` (a reconnect), or at another
frame size, has no motion to measure: :meth:`Motion.image` returns None for it, and the stream
skips it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class MotionConfig:
    """How frames become motion images; stored with the tokenizer in checkpoints and manifests."""

    width: int = 320  # columns the flow is computed at (the frame is shrunk to this first)
    full_scale: float = 0.5  # a speed of this many frame heights per second is the channel's extreme
    grey_weight: float = 0.5  # the grey channel's contrast, so k-means spends its codes on motion
    max_gap_s: float = 2.0  # a longer gap between two frames of a source starts it afresh

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> MotionConfig:
        return cls(**d)


class Motion:
    """Motion images of many sources' frames, keeping each source's previous frame."""

    def __init__(self, config: MotionConfig | dict) -> None:
        self.config = config if isinstance(config, MotionConfig) else MotionConfig.from_dict(config)
        if self.config.width < 16 or self.config.full_scale <= 0:
            raise ValueError(f"motion config out of range: {self.config}")
        self._flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
        self._last: dict[str, tuple[float, np.ndarray]] = {}  # source -> (time, shrunk grey)
        self._gap: dict[str, float] = {}  # source -> its usual time between frames (running mean)

    def reset(self, source: str | None = None) -> None:
        """Forget a source's previous frame (all sources when None): its next frame starts afresh."""
        if source is None:
            self._last.clear()
            self._gap.clear()
        else:
            self._last.pop(source, None)
            self._gap.pop(source, None)

    def image(self, source: str, frame: np.ndarray, t: float) -> np.ndarray | None:
        """The motion image of ``frame`` at scene time ``t`` (seconds), or None when the source has
        no usable previous frame (see the module's docstring)."""
        small = self._shrink(frame)
        last = self._last.get(source)
        self._last[source] = (t, small)
        if last is None or last[1].shape != small.shape:
            return None
        dt = t - last[0]
        if dt <= 0 or dt > self.config.max_gap_s:
            return None
        # A camera's frames carry their arrival time: two that arrive in a burst are not 1 ms of
        # motion apart. No gap counts as less than half the source's usual one.
        usual = self._gap.get(source, dt)
        self._gap[source] = 0.9 * usual + 0.1 * dt
        dt = max(dt, 0.5 * usual)
        flow = self._flow.calc(last[1], small, None)  # (h, w, 2) pixels from the previous frame
        image = encode(small, flow / (dt * small.shape[0]), self.config)
        h, w = frame.shape[:2]
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)

    def _shrink(self, frame: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
        h, w = grey.shape[:2]
        width = min(self.config.width, w)
        height = max(8, round(h * width / w))
        return cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA)


def encode(grey: np.ndarray, velocity: np.ndarray, config: MotionConfig) -> np.ndarray:
    """Grey (h, w) uint8 and velocity (h, w, 2) in frame heights per second -> (h, w, 3) uint8."""
    v = np.clip(np.abs(velocity) / config.full_scale, 0.0, 1.0)
    channels = 128.0 + 127.0 * np.sign(velocity) * np.sqrt(v)
    out = np.empty(grey.shape + (3,), np.uint8)
    out[..., 0] = np.rint(grey * config.grey_weight)
    out[..., 1:] = np.rint(channels)
    return out


def velocity_of(image: np.ndarray, config: MotionConfig) -> np.ndarray:
    """The inverse of :func:`encode`'s velocity channels: (h, w, 3) uint8 -> (h, w, 2) frame
    heights per second (for figures and baselines)."""
    c = (image[..., 1:].astype(np.float32) - 128.0) / 127.0
    return np.sign(c) * c * c * config.full_scale


def stream_images(tokenizer: object, frames: list[np.ndarray], times: list[float]) -> dict[int, np.ndarray]:
    """What a stream cuts regions from, for consecutive frames of one source: by position in
    ``frames``, the frame itself for a pixel model (grey for a grey one), its motion image for a
    motion model (which has none for the first frame)."""
    config = tokenizer.config
    if not config.motion:
        return {i: tokenizer.match_channels(f) for i, f in enumerate(frames)}
    motion = Motion(config.motion)
    out = {}
    for i, (f, t) in enumerate(zip(frames, times, strict=True)):
        image = motion.image("clip", f, t)
        if image is not None:
            out[i] = image
    return out

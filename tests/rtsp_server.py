"""A real RTSP camera on 127.0.0.1 for the source tests: GStreamer's RTSP server looping a clip.

Run it with Debian's ``/usr/bin/python3`` (it needs ``python3-gi`` and ``gir1.2-gst-rtsp-server-1.0``,
which the venv does not have)::

    /usr/bin/python3 tests/rtsp_server.py PORT [--clip PATH] [--path /test]

It prints ``READY rtsp://127.0.0.1:PORT/test`` once the port is bound, then serves until killed.

Why appsrc and not ``filesrc ! decodebin ! x264enc`` directly: a file pipeline ends with EOS, and
the RTSP server then tears the stream down. Here a separate decode pipeline reads the clip and is
seeked back to the start at EOS, and its frames are pushed into the served pipeline with continuous
timestamps, so a client sees one endless live camera.
"""

from __future__ import annotations

import argparse
import sys
import time

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

DEFAULT_CLIP = "/usr/share/doc/opencv-doc/examples/data/vtest.avi"


class LoopingClip:
    """Decodes a clip to I420 frames forever, rewinding at the end of the file."""

    def __init__(self, clip: str) -> None:
        self.pipeline = Gst.parse_launch(
            f'filesrc location="{clip}" ! decodebin ! videoconvert ! video/x-raw,format=I420 '
            "! appsink name=sink sync=false max-buffers=4"
        )
        self.sink = self.pipeline.get_by_name("sink")
        self.pipeline.set_state(Gst.State.PLAYING)
        self.caps: Gst.Caps | None = None

    def next_sample(self) -> Gst.Sample | None:
        for _ in range(2):  # at most one rewind per frame
            sample = self.sink.emit("try-pull-sample", 2 * Gst.SECOND)
            if sample is not None:
                return sample
            # EOS (or a stall): rewind to the first frame and try once more.
            self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0)
        return None

    def stop(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """One media (decoder + encoder) per client connection, fed from a looping clip."""

    def __init__(self, clip: str, fps: int) -> None:
        super().__init__()
        self.clip = clip
        self.fps = fps
        self.set_launch(
            "( appsrc name=src is-live=true format=time do-timestamp=false "
            "! videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=10 "
            "! rtph264pay name=pay0 pt=96 config-interval=1 )"
        )
        self.connect("media-configure", self._on_media_configure)

    def _on_media_configure(self, _factory, media) -> None:
        clip = LoopingClip(self.clip)
        appsrc = media.get_element().get_child_by_name("src")
        duration = Gst.SECOND // self.fps
        state = {"n": 0, "t0": 0.0}

        def need_data(src, _length):
            # Pace at the clip's frame rate, like a real camera, whatever the sinks' sync settings.
            if state["n"] == 0:
                state["t0"] = time.monotonic()
            delay = state["t0"] + state["n"] / self.fps - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sample = clip.next_sample()
            if sample is None:
                src.emit("end-of-stream")
                return
            if state["n"] == 0:
                src.set_property("caps", sample.get_caps())
            buf = sample.get_buffer().copy()
            buf.pts = buf.dts = state["n"] * duration
            buf.duration = duration
            state["n"] += 1
            src.emit("push-buffer", buf)

        appsrc.connect("need-data", need_data)
        media.connect("unprepared", lambda _m: clip.stop())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("port", type=int)
    parser.add_argument("--clip", default=DEFAULT_CLIP)
    parser.add_argument("--path", default="/test")
    parser.add_argument("--fps", type=int, default=10)
    args = parser.parse_args(argv)

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.path, LoopingFactory(args.clip, args.fps))
    if server.attach(None) == 0:
        print(f"ERROR cannot bind 127.0.0.1:{args.port}", flush=True)
        return 1
    print(f"READY rtsp://127.0.0.1:{args.port}{args.path}", flush=True)
    GLib.MainLoop().run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``--serve HOST:PORT``: a live view in the browser and ``/metrics``, standard library only.

::

    GET /                   the page: each source's overlay, the latest events, the metrics line
    GET /stream/N.mjpg      source N's overlay as MJPEG (multipart/x-mixed-replace), at most 10 fps
    GET /frame/N.jpg        source N's latest overlay, one JPEG
    GET /api/state?after=K  JSON: sources, events with sequence number > K, the metrics line
    GET /metrics            Prometheus text format (metrics.py)

Binds 127.0.0.1 unless given another host. With ``token``, every request needs ``?token=T`` or
``Authorization: Bearer T`` (else 401); the page passes it on to what it loads. The page is one
HTML string with a little JavaScript that polls ``/api/state`` once a second: no build step.
Overlays are drawn and encoded only when someone watches, once per frame for all viewers.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
import threading
import time
from collections import deque
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import cv2

from pixlm.runtime.outputs.metrics import FleetMetrics
from pixlm.runtime.outputs.video import draw_overlay
from pixlm.runtime.stream import FrameResult

log = logging.getLogger(__name__)
MJPEG_FPS = 10.0
BOUNDARY = "pixlmframe"


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1) -> (host, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--serve {text}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


class LiveServer:
    """A sink: keeps each source's latest frame and the recent events, and serves them."""

    def __init__(self, address: str, sources: list[str], token: str | None = None, keep_events: int = 200):
        host, port = parse_address(address)
        self.sources, self.token = list(sources), token
        self.metrics = FleetMetrics()
        self.streamer = None  # set by attach(): adds source and engine counters to /metrics
        self.metrics_line = ""
        self._cond = threading.Condition()
        self._latest: dict[str, tuple[int, FrameResult]] = {}
        self._arrivals: dict[str, deque[float]] = {}  # for the FPS drawn on the overlay
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._events: deque[tuple[int, dict]] = deque(maxlen=keep_events)
        self._seq = 0
        self._closed = False
        try:
            self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        except OSError as e:
            raise ValueError(f"--serve {address}: cannot listen ({e.strerror})") from None
        self.httpd.daemon_threads = True
        self.address = f"http://{host}:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="pixlm-serve", daemon=True)
        self._thread.start()

    def attach(self, streamer) -> None:
        self.streamer = streamer

    # -- the sink interface ------------------------------------------------------------------------
    def write(self, fr: FrameResult) -> None:
        self.metrics.observe(fr)
        with self._cond:
            self._seq += 1
            self._latest[fr.source] = (self._seq, fr)
            self._arrivals.setdefault(fr.source, deque(maxlen=30)).append(time.monotonic())
            self._cond.notify_all()

    def event(self, record: dict) -> None:
        self.metrics.event(record)
        with self._cond:
            self._seq += 1
            self._events.append((self._seq, record))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # -- what the handler serves -------------------------------------------------------------------
    def jpeg(self, source: str, after: int = 0, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The latest overlay of ``source`` newer than ``after`` (waits up to ``timeout``)."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._latest.get(source, (0,))[0] > after, timeout)
            if source not in self._latest or self._closed:
                return None
            seq, fr = self._latest[source]
            cached = self._jpeg.get(source)
            if cached and cached[0] == seq:
                return cached
            t = self._arrivals[source]
            fps = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        ok, data = cv2.imencode(".jpg", draw_overlay(fr, fps), [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return None
        with self._cond:
            self._jpeg[source] = (seq, data.tobytes())
        return seq, data.tobytes()

    def state(self, after: int) -> dict:
        with self._cond:
            events = [dict(r, seq=s) for s, r in self._events if s > after]
            last = self._seq
            frames = {src: fr.index for src, (_, fr) in self._latest.items()}
        status = {}
        if self.streamer is not None:
            status = {s.name: s.status for s in list(self.streamer.sources)}
        return {
            "sources": [
                {"index": i, "name": s, "frame": frames.get(s), "status": status.get(s)}
                for i, s in enumerate(self.sources)
            ],
            "events": events,
            "last": last,
            "metrics": self.metrics_line,
        }

    def allowed(self, query: dict, headers) -> bool:
        if not self.token:
            return True
        given = query.get("token", [""])[-1]
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = given or auth[7:]
        return hmac.compare_digest(given.encode(), self.token.encode())


def _handler(server: LiveServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pixlm"

        def log_message(self, fmt: str, *args) -> None:  # quiet: the CLI's stderr is for status
            log.debug("serve: " + fmt, *args)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            if not server.allowed(query, self.headers):
                return self._send(HTTPStatus.UNAUTHORIZED, b"token required\n", "text/plain")
            path = url.path
            try:
                if path == "/":
                    return self._send(HTTPStatus.OK, _page(server).encode(), "text/html; charset=utf-8")
                if path == "/metrics":
                    text = server.metrics.render(server.streamer).encode()
                    return self._send(HTTPStatus.OK, text, "text/plain; version=0.0.4; charset=utf-8")
                if path == "/api/state":
                    after = int(query.get("after", ["0"])[-1] or 0)
                    return self._send(
                        HTTPStatus.OK, json.dumps(server.state(after)).encode(), "application/json"
                    )
                if path.startswith(("/stream/", "/frame/")):
                    index = int(path.rsplit("/", 1)[-1].split(".")[0])
                    source = server.sources[index]
                    if path.endswith(".mjpg"):
                        return self._mjpeg(source)
                    got = server.jpeg(source, timeout=5.0)
                    if got is None:
                        return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain")
                    return self._send(HTTPStatus.OK, got[1], "image/jpeg")
            except (ValueError, IndexError):
                pass
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")

        def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _mjpeg(self, source: str) -> None:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            seq, last = 0, 0.0
            try:
                while not server._closed:
                    got = server.jpeg(source, after=seq, timeout=2.0)
                    if got is None:
                        continue
                    seq, data = got
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(data)}\r\n\r\n"
                    self.wfile.write(head.encode() + data + b"\r\n")
                    self.wfile.flush()
                    wait = last + 1 / MJPEG_FPS - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    last = time.monotonic()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the viewer left

    return Handler


def _page(server: LiveServer) -> str:
    token = f"?token={html.escape(server.token)}" if server.token else ""
    cards = "\n".join(
        f'<figure><img id="stream-{i}" src="/stream/{i}.mjpg{token}" alt="{html.escape(s)}">'
        f'<figcaption>{html.escape(s)} <span id="status-{i}"></span> <span id="size-{i}"></span>'
        "</figcaption></figure>"
        for i, s in enumerate(server.sources)
    )
    return PAGE.replace("{{CARDS}}", cards).replace("{{N}}", str(len(server.sources)))


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>pixlm live</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body{font:14px system-ui,sans-serif;margin:1em;background:#111;color:#eee}
 #streams{display:flex;flex-wrap:wrap;gap:1em} figure{margin:0}
 img{max-width:640px;background:#222;display:block}
 #metrics{font-family:monospace;white-space:pre-wrap;color:#9c9} ol{padding-left:1.5em}
 .anomaly{color:#f66} .status{color:#fc6} .label{color:#8cf}
</style></head><body>
<h1>pixlm live</h1>
<div id="streams">{{CARDS}}</div>
<h2>Metrics</h2><div id="metrics">waiting for the first metrics line</div>
<h2>Latest events <small id="count">0</small></h2><ol id="events" reversed></ol>
<script>
const q = new URLSearchParams(location.search); const token = q.get("token");
const auth = token ? "&token=" + encodeURIComponent(token) : "";
let last = 0, shown = 0;
function describe(e) {
  const where = e.region ? " " + e.region.name : "";
  if (e.type === "anomaly") {
    const snap = e.snapshot ? " [" + e.snapshot + "]" : "";
    return `ANOMALY ${e.source}${where} frame ${e.frame}: ${e.anomaly_peak.toFixed(2)} bits (peak)${snap}`;
  }
  if (e.type === "label") return `label ${e.source}${where}: ${e.previous ?? "-"} -> ${e.label}`;
  return `${e.status} ${e.source}: ${e.message}`;
}
async function poll() {
  try {
    const s = await (await fetch("/api/state?after=" + last + auth)).json();
    last = s.last;
    const list = document.getElementById("events");
    for (const e of s.events) {
      const li = document.createElement("li"); li.className = e.type; li.textContent = describe(e);
      list.prepend(li); shown++;
    }
    while (list.children.length > 100) list.lastChild.remove();
    document.getElementById("count").textContent = shown;
    if (s.metrics) document.getElementById("metrics").textContent = s.metrics;
    for (const src of s.sources) {
      document.getElementById("status-" + src.index).textContent = src.status ? "(" + src.status + ")" : "";
    }
  } catch (err) { document.getElementById("metrics").textContent = "server unreachable: " + err; }
  for (let i = 0; i < {{N}}; i++) {
    const img = document.getElementById("stream-" + i);
    if (img.naturalWidth) {
      img.dataset.loaded = "yes";
      document.getElementById("size-" + i).textContent = img.naturalWidth + "x" + img.naturalHeight;
    }
  }
}
poll(); setInterval(poll, 1000);
</script></body></html>
"""

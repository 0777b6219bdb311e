"""``--serve HOST:PORT``: a live view in the browser and ``/metrics``, standard library only.

::

    GET /                   the page: each source's overlay, the latest events, the metrics line
    GET /stream/N.mjpg      source N's overlay as MJPEG (multipart/x-mixed-replace), at most 10 fps
    GET /frame/N.jpg        source N's latest overlay, one JPEG
    GET /api/state?after=K  JSON: sources, events with sequence number > K, the metrics line
    GET /metrics            Prometheus text format (metrics.py): the run's statistics (stats.py)

Any other path is 404. The page is one HTML string with a little JavaScript that polls
``/api/state`` once a second: no build step. Overlays are drawn and encoded only when someone
watches, once per frame, and every viewer sends that same JPEG (no copy per viewer).

Who may connect, checked in this order::

    accept --> at most MAX_CONNECTIONS at once (more: 503 and closed) --> TLS handshake (with a
    certificate) --> the request within TIMEOUT_S (else closed; keep-alive waits the same) -->
    Host header (without a token: this machine's own names only) --> token --> the route

Binds 127.0.0.1 unless given another host; any other (non-loopback) address needs a token, so a
view is never open to a network by accident. With ``token``, every request needs ``?token=T`` or
``Authorization: Bearer T`` (else 401); the page passes it on to what it loads. Without one, the
Host header must name this machine (localhost, 127.0.0.1, [::1] or the bound address, any port, so
an SSH tunnel works): a page on another site whose name was re-pointed at 127.0.0.1 (DNS
rebinding) gets 403. A viewer that cannot take a frame within TIMEOUT_S is dropped.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import re
import socket
import ssl
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, urlsplit

import cv2

from pixlm.runtime.outputs import metrics
from pixlm.runtime.outputs.video import draw_overlay
from pixlm.runtime.stats import RateMeter, RunStats
from pixlm.runtime.stream import FrameResult

log = logging.getLogger(__name__)
MJPEG_FPS = 10.0
BOUNDARY = "pixlmframe"
MAX_CONNECTIONS = 32  # served at once, viewers included: each is a thread
TIMEOUT_S = 10.0  # to send a request (idle keep-alive too), and for a viewer to take a frame
TOKEN_ENV = "PIXLM_SERVE_TOKEN"  # `pixlm run` reads the token from here (argv shows in `ps`)
ROUTE = re.compile(r"/(?:stream/(?P<stream>0|[1-9][0-9]{0,5})\.mjpg|frame/(?P<frame>0|[1-9][0-9]{0,5})\.jpg)")
BUSY = b"too many connections, try again later\n"
BUSY_ANSWER = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nRetry-After: 10\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(BUSY), BUSY)
)


def parse_address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``PORT`` (host 127.0.0.1) -> (host, port)."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Only this machine can reach it: ``localhost`` or a loopback IP (a name is not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, token: str | None) -> None:
    """The rules for who may see the view: an empty token is a mistake (an unset variable), and an
    address beyond this machine needs a token. ``ValueError`` says how to set one."""
    if token is not None and not token.strip():
        raise ValueError(
            f"the live view's token is empty (an unset variable?): set {TOKEN_ENV}, "
            "or give no token for a view on 127.0.0.1 only"
        )
    if not token and not is_loopback(host):
        raise ValueError(
            f"--serve {host} is reachable from other machines: give it a token, "
            f"e.g. export {TOKEN_ENV}=$(openssl rand -hex 16), or bind 127.0.0.1"
        )


def tls_context(cert: str, key: str | None = None) -> ssl.SSLContext:
    """A server-side TLS context from PEM files (``key`` may be inside ``cert``)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise ValueError(f"--serve-cert {cert}: cannot load the certificate and key ({e})") from None
    return context


class LiveServer:
    """A sink: keeps each source's latest frame and the recent events, and serves them.

    ``cert``/``key`` serve HTTPS; ``max_connections`` and ``timeout`` bound what clients can hold.
    ``/metrics`` and the sources' status read :meth:`stats`: the streamer given to ``attach`` and
    the ``Outputs`` this server was added to (``Outputs.add`` calls ``attach_outputs``).
    """

    def __init__(
        self,
        address: str,
        sources: list[str],
        token: str | None = None,
        keep_events: int = 200,
        *,
        cert: str | None = None,
        key: str | None = None,
        max_connections: int = MAX_CONNECTIONS,
        timeout: float = TIMEOUT_S,
    ):
        host, port = parse_address(address)
        check_exposure(host, token)
        self.host = host
        self.sources, self.token = list(sources), token
        self.streamer = None  # set by attach(): its frames, sources and engine counters for /metrics
        self.outputs = None  # set by attach_outputs(): the events and delivery buckets for /metrics
        self.metrics_line = ""
        self._cond = threading.Condition()
        self._latest: dict[str, tuple[int, FrameResult]] = {}
        self._rates: dict[str, RateMeter] = {}  # results arriving here: the FPS drawn on the overlay
        self._jpeg: dict[str, tuple[int, bytes]] = {}  # the one encoded overlay every viewer sends
        self._encoding: dict[str, threading.Lock] = {}
        self._encoder = ThreadPoolExecutor(1, "pixlm-serve-jpeg")
        self._events: deque[tuple[int, dict]] = deque(maxlen=keep_events)
        self._open_alerts: dict[str, dict] = {}  # alert id -> its latest start or update
        self._seq = 0
        self._closed = False
        named = f"[{host}]" if ":" in host else host
        # the Host header names answered without a token: this machine's own
        self._hosts = {"localhost", "127.0.0.1", "[::1]", named.lower()}
        tls = tls_context(cert, key) if cert else None
        try:
            self.httpd = _HTTPServer((host, port), _handler(self, timeout), max_connections, timeout, tls)
        except OSError as e:
            raise ValueError(f"--serve {address}: cannot listen ({e.strerror})") from None
        self.address = f"{'https' if tls else 'http'}://{named}:{self.httpd.server_address[1]}/"
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="pixlm-serve", daemon=True)
        self._thread.start()

    def attach(self, streamer) -> None:
        self.streamer = streamer

    def attach_outputs(self, outputs) -> None:
        self.outputs = outputs

    def stats(self) -> RunStats:
        """The run's statistics now (``RunStats.of`` the attached streamer and outputs)."""
        return RunStats.of(self.streamer, self.outputs)

    def access_note(self) -> str:
        """What the console says after the address: how to get in, and plain HTTP on a network."""
        note = " (token required: ?token=... or an 'Authorization: Bearer' header)" if self.token else ""
        if not is_loopback(self.host) and not self.address.startswith("https"):
            note += "; plain HTTP on the network: anyone on the way can read the token (use --serve-cert)"
        return note

    # -- the sink interface ------------------------------------------------------------------------
    def write(self, fr: FrameResult) -> None:
        with self._cond:
            self._seq += 1
            self._latest[fr.source] = (self._seq, fr)
            self._rates.setdefault(fr.source, RateMeter()).tick()
            self._cond.notify_all()

    def event(self, record: dict) -> None:
        with self._cond:
            self._seq += 1
            self._events.append((self._seq, record))
            if record.get("type") == "anomaly" and record.get("alert_id"):  # the open alerts, by id
                if record.get("phase") == "end":
                    self._open_alerts.pop(record["alert_id"], None)
                else:
                    self._open_alerts[record["alert_id"]] = record

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()
        self._encoder.shutdown(wait=False)

    # -- what the handler serves -------------------------------------------------------------------
    def jpeg(self, source: str, after: int = 0, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The latest overlay of ``source`` newer than ``after`` (waits up to ``timeout``),
        encoded once per frame: every viewer gets the same bytes object."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._latest.get(source, (0,))[0] > after, timeout)
            if source not in self._latest or self._closed:
                return None
            encoding = self._encoding.setdefault(source, threading.Lock())
        with encoding:  # the other viewers wait for this encoding instead of making their own
            with self._cond:
                seq, fr = self._latest[source]
                cached = self._jpeg.get(source)
                if cached and cached[0] == seq:
                    return cached
                fps = self._rates[source].fps()
            # In one thread: encoding in each viewer's own thread grew one malloc arena per viewer
            data = self._encoder.submit(_encode, fr, fps).result()
            if data is None:
                return None
            got = self._jpeg[source] = (seq, data)
            return got

    def state(self, after: int) -> dict:
        with self._cond:
            events = [dict(r, seq=s) for s, r in self._events if s > after]
            open_alerts = list(self._open_alerts.values())
            last = self._seq
            frames = {src: fr.index for src, (_, fr) in self._latest.items()}
        status = {s.name: s.status for s in RunStats.of(self.streamer).sources}
        return {
            "sources": [
                {"index": i, "name": s, "frame": frames.get(s), "status": status.get(s)}
                for i, s in enumerate(self.sources)
            ],
            "events": events,
            "alerts": open_alerts,
            "last": last,
            "metrics": self.metrics_line,
        }

    def refusal(self, query: dict, headers) -> tuple[HTTPStatus, bytes] | None:
        """Why a request may not be answered, or None: a wrong token, or without a token a Host
        header that does not name this machine."""
        if not self.token:
            name = headers.get("Host", "").strip().lower()
            name = name if name.endswith("]") else name.rpartition(":")[0] or name  # without the port
            if name not in self._hosts:
                return HTTPStatus.FORBIDDEN, b"this view answers to localhost only (or set a token)\n"
            return None
        given = query.get("token", [""])[-1]
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = given or auth[7:]
        if not hmac.compare_digest(given.encode(), self.token.encode()):
            return HTTPStatus.UNAUTHORIZED, b"token required\n"
        return None


def _encode(fr: FrameResult, fps: float) -> bytes | None:
    ok, data = cv2.imencode(".jpg", draw_overlay(fr, fps), [cv2.IMWRITE_JPEG_QUALITY, 80])
    return data.tobytes() if ok else None


class _HTTPServer(ThreadingHTTPServer):
    """http.server with bounds: at most ``max_connections`` threads (more are answered 503 and
    closed at once), TLS when given a context, and a reaper that closes any connection that has
    not sent a whole request within ``timeout`` (a socket timeout alone lets a byte every few
    seconds hold a thread forever)."""

    daemon_threads = True
    request_queue_size = 64

    def __init__(self, address, handler, max_connections: int, timeout: float, tls: ssl.SSLContext | None):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.slots = threading.BoundedSemaphore(max_connections)
        self.timeout_s, self.tls = timeout, tls
        self._deadlines: dict[BaseHTTPRequestHandler, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        super().__init__(address, handler)
        threading.Thread(target=self._reap, name="pixlm-serve-reaper", daemon=True).start()

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:  # the handshake runs in the connection's thread, within the timeout
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def process_request(self, request, client_address) -> None:
        if not self.slots.acquire(blocking=False):
            try:
                if self.tls is None:
                    request.setblocking(False)
                    request.send(BUSY_ANSWER)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address) -> None:  # a client that left or misbehaved
        log.debug("serve: connection from %s ended with an error", client_address, exc_info=True)

    def server_close(self) -> None:
        self._stop.set()
        super().server_close()

    # -- the request deadline ----------------------------------------------------------------------
    def arm(self, handler: BaseHTTPRequestHandler) -> None:
        """Start the clock for ``handler``'s next request (kept if already running)."""
        with self._lock:
            self._deadlines.setdefault(handler, time.monotonic() + self.timeout_s)

    def disarm(self, handler: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self._deadlines.pop(handler, None)

    def _reap(self) -> None:
        while not self._stop.wait(0.25):
            now = time.monotonic()
            with self._lock:
                late = [h for h, t in self._deadlines.items() if t < now]
                for h in late:
                    del self._deadlines[h]
            for h in late:
                try:  # wakes the thread blocked reading: it sees the end of the stream and ends
                    socket.socket.shutdown(h.request, socket.SHUT_RDWR)
                except OSError:
                    pass


def _handler(server: LiveServer, timeout: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pixlm"

        def log_message(self, fmt: str, *args) -> None:  # quiet: the CLI's stderr is for status
            log.debug("serve: " + fmt, *args)

        def setup(self) -> None:
            self.timeout = timeout  # every read and write of this connection
            self.server.arm(self)  # the handshake and the first request, together within the timeout
            if isinstance(self.request, ssl.SSLSocket):
                self.request.settimeout(timeout)
                self.request.do_handshake()
            super().setup()

        def handle_one_request(self) -> None:
            self.server.arm(self)
            try:
                super().handle_one_request()
            finally:
                self.server.disarm(self)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.server.disarm(self)  # the request is in: answering it is not bound by the deadline
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            refused = server.refusal(query, self.headers)
            if refused is not None:
                return self._send(refused[0], refused[1], "text/plain")
            path = url.path
            if path == "/":
                return self._send(HTTPStatus.OK, _page(server).encode(), "text/html; charset=utf-8")
            if path == "/metrics":
                text = metrics.render(server.stats()).encode()
                return self._send(HTTPStatus.OK, text, "text/plain; version=0.0.4; charset=utf-8")
            if path == "/api/state":
                try:
                    after = int(query.get("after", ["0"])[-1] or 0)
                except ValueError:
                    return self._send(HTTPStatus.BAD_REQUEST, b"after must be a number\n", "text/plain")
                return self._send(HTTPStatus.OK, json.dumps(server.state(after)).encode(), "application/json")
            route = ROUTE.fullmatch(path)
            index = int(route["stream"] or route["frame"]) if route else -1
            if not 0 <= index < len(server.sources):
                return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            if route["stream"]:
                return self._mjpeg(server.sources[index])
            got = server.jpeg(server.sources[index], timeout=5.0)
            if got is None:
                return self._send(HTTPStatus.SERVICE_UNAVAILABLE, b"no frame yet\n", "text/plain")
            self._send(HTTPStatus.OK, got[1], "image/jpeg")

        def _headers(self, status: HTTPStatus, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Cache-Control", "no-store")
            self.send_header("Referrer-Policy", "no-referrer")  # a token in the URL stays here
            self.send_header("X-Content-Type-Options", "nosniff")

        def _send(self, status: HTTPStatus, body: bytes, ctype: str) -> None:
            self._headers(status, ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _mjpeg(self, source: str) -> None:
            self._headers(HTTPStatus.OK, f"multipart/x-mixed-replace; boundary={BOUNDARY}")
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
                    self.wfile.write(head.encode())
                    self.wfile.write(data)  # the shared JPEG itself, not a copy joined to the head
                    self.wfile.write(b"\r\n")
                    wait = last + 1 / MJPEG_FPS - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    last = time.monotonic()
            except OSError:
                pass  # the viewer left, or did not take a frame within the timeout: dropped

    return Handler


def _page(server: LiveServer) -> str:
    token = f"?token={html.escape(quote(server.token, safe=''))}" if server.token else ""
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
<h2>Open alerts <small id="open-count">0</small></h2><ul id="alerts"></ul>
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
    const phase = e.phase ? e.phase.toUpperCase() + " " : "";
    const held = e.duration_s === undefined ? "" : `, ${e.duration_s.toFixed(1)} s`;
    const open = held && `${held}, peak ${e.peak.toFixed(2)}`;
    return `ALERT ${phase}${e.source}${where} frame ${e.frame}${open}${snap}`;
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
    const open = document.getElementById("alerts"); open.replaceChildren();
    for (const a of s.alerts || []) {
      const li = document.createElement("li"); li.className = "anomaly"; li.textContent = describe(a);
      open.append(li);
    }
    document.getElementById("open-count").textContent = (s.alerts || []).length;
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

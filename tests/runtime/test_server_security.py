"""The live view's defences, with real sockets: who may bind where, the token (from the
environment, never shown), idle and slow clients closed, a bounded number of connection threads,
viewers that share one JPEG, the Host header against DNS rebinding, only the documented routes,
IPv6, and TLS with a real certificate. In-process servers where a knob is needed, a real
``pixlm run --serve`` where the defaults are what matter."""

from __future__ import annotations

import html
import http.client
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from cameras import free_port

from conftest import NO_TORCH, VTEST, pixlm_run
from pixlm.runtime.outputs.server import LiveServer
from pixlm.runtime.stream import FrameResult

TOKEN_ENV = "PIXLM_SERVE_TOKEN"


def frame(index: int, image: np.ndarray, source: str = "cam") -> FrameResult:
    return FrameResult(source, index, time.time(), image, [], 1.0)


def port_of(server: LiveServer) -> int:
    return int(server.address.rstrip("/").rsplit(":", 1)[1])


def get(
    port: int, path: str, host: str = "127.0.0.1", headers: dict | None = None, **kw
) -> tuple[int, bytes]:
    """One GET; the status and, unless it is a stream, the body."""
    conn = http.client.HTTPConnection(host, port, timeout=10, **kw)
    try:
        conn.request("GET", path, headers=headers or {})
        r = conn.getresponse()
        body = b"" if r.getheader("Content-Type", "").startswith("multipart/") else r.read()
        return r.status, body
    finally:
        conn.close()


@pytest.fixture
def live():
    """Starts in-process live servers; closes them after the test."""
    servers: list[LiveServer] = []

    def start(*args, **kw) -> LiveServer:
        servers.append(LiveServer(*args, **kw))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def clean_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != TOKEN_ENV}
    return {**env, **extra}


def wait_until_serving(port: int, proc: subprocess.Popen, headers=None, context=None) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            conn = (
                http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
                if context
                else http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            )
            conn.request("GET", "/api/state", headers=headers or {})
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("the live view never answered")


def stop(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    return err


# -- usage errors: exit 2, one Error: line, before anything starts ---------------------------------


@pytest.mark.parametrize(
    "args, env, words",
    [
        (["--serve", "99999"], {}, "expected HOST:PORT"),
        (["--serve", "abc"], {}, "expected HOST:PORT"),
        (["--serve", "0.0.0.0:{port}"], {}, TOKEN_ENV),  # beyond this machine without a token
        (["--serve", "[::]:{port}"], {}, TOKEN_ENV),
        (["--serve", "127.0.0.1:{port}", "--serve-token", ""], {}, "empty"),  # an unset "$TOKEN"
        (["--serve", "127.0.0.1:{port}"], {TOKEN_ENV: ""}, "empty"),
        (["--serve-token", "s3cret"], {}, "--serve-token needs --serve"),
        (["--serve-cert", str(VTEST)], {}, "--serve-cert needs --serve"),
        (["--serve", "127.0.0.1:{port}", "--serve-key", str(VTEST)], {}, "--serve-key needs --serve-cert"),
    ],
)
def test_serve_usage_errors_exit_2(tiny_bundle, args, env, words):
    args = [a.replace("{port}", str(free_port())) for a in args]
    p = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--max-frames", "2", "-q", *args, env=clean_env(**env)
    )
    _, err = p.communicate(timeout=60)
    assert p.returncode == 2 and words in err and "Traceback" not in err, err
    assert err.count("Error:") == 1, err


def test_help_example_exposes_the_view_only_with_a_token():
    p = subprocess.run([sys.executable, "-c", NO_TORCH, "run", "--help"], capture_output=True, text=True)
    commands = re.sub(r"\\\n\s*", " ", p.stdout)  # join continued example lines
    exposed = [line for line in commands.splitlines() if "--serve 0.0.0.0" in line]
    assert exposed and all(TOKEN_ENV in line for line in exposed), p.stdout
    assert TOKEN_ENV in p.stdout.split("--serve-token", 1)[1], "the option names its variable"


# -- the token: from the environment, required, never printed --------------------------------------


def test_token_from_the_environment_guards_an_exposed_server(tiny_bundle):
    port, token = free_port(), "from-env t0ken"
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--realtime", "--loop", "0", "-q",
        "--serve", f"0.0.0.0:{port}", env=clean_env(**{TOKEN_ENV: token}),
    )  # fmt: skip
    try:
        wait_until_serving(port, run, headers={"Authorization": f"Bearer {token}"})
        assert get(port, "/")[0] == 401
        assert get(port, "/metrics?token=wrong")[0] == 401
        assert get(port, f"/metrics?token={quote(token)}")[0] == 200
        assert token.encode() not in Path(f"/proc/{run.pid}/cmdline").read_bytes()
    finally:
        err = stop(run)
    assert token not in err and "live view: http://0.0.0.0:" in err, err


# -- idle and slow clients, bounded threads --------------------------------------------------------


@pytest.mark.slow
def test_idle_and_slow_clients_are_closed_and_threads_stay_bounded(tiny_bundle):
    """A real ``pixlm run --serve`` with its defaults: 100 connections that never finish a request
    (one trickles a byte every 2 s) add at most 32 threads, the rest are turned away at once, and
    every one is closed within the 10 s a client has to send its request."""
    port = free_port()
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--realtime", "--loop", "0", "-q",
        "--serve", f"127.0.0.1:{port}", env=clean_env(),
    )  # fmt: skip
    socks: list[socket.socket] = []
    try:
        wait_until_serving(port, run)
        time.sleep(1)  # the server's own threads settle
        tasks = lambda: len(os.listdir(f"/proc/{run.pid}/task"))
        before = tasks()
        t0 = time.monotonic()
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(100)]

        def trickle(s: socket.socket) -> None:  # a request, one byte every 2 s
            try:
                for byte in b"GET / HTTP/1.1\r\n":
                    s.send(bytes([byte]))
                    time.sleep(2)
            except OSError:  # closed by the server, as it should be
                pass

        threading.Thread(target=trickle, args=(socks[0],), daemon=True).start()
        time.sleep(1.5)
        grown = tasks() - before
        closed_after = []
        for s in socks:
            s.settimeout(max(0.1, t0 + 15 - time.monotonic()))
            try:
                while s.recv(4096):
                    pass
                closed_after.append(time.monotonic() - t0)
            except TimeoutError:
                closed_after.append(float("inf"))
            except OSError:  # reset: closed too
                closed_after.append(time.monotonic() - t0)
        assert grown <= 33, f"{grown} threads for 100 idle connections"
        assert max(closed_after) < 13, (
            f"{sum(t > 13 for t in closed_after)} connections still open after 13 s"
        )
        assert get(port, "/api/state")[0] == 200  # and the server still answers
    finally:
        for s in socks:
            s.close()
        stop(run)


# A live view in its own process, fed 25 noisy 768x576 frames a second; prints its port.
FED_SERVER = """
import sys, time
import numpy as np
from pixlm.runtime.outputs.server import LiveServer
from pixlm.runtime.stream import FrameResult
server = LiveServer("127.0.0.1:0", ["cam"])
print(server.address.rstrip("/").rsplit(":", 1)[1], flush=True)
noise = np.random.default_rng(0).integers(0, 256, (576, 768, 3), np.uint8)
frames = [np.ascontiguousarray(np.roll(noise, i, 0)) for i in range(5)]
for i in range(100000):
    server.write(FrameResult("cam", i, time.time(), frames[i % 5], [], 1.0))
    time.sleep(0.04)
"""


@pytest.mark.slow
def test_each_viewer_costs_little_memory():
    """24 MJPEG viewers add under 1 MB each to the server's memory: they share one JPEG per frame,
    encoded in one thread (encoded in each viewer's thread, every thread grew its own heap)."""
    server = subprocess.Popen([sys.executable, "-c", FED_SERVER], stdout=subprocess.PIPE, text=True)
    rss = lambda: int(Path(f"/proc/{server.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    viewers: list[socket.socket] = []
    stop = threading.Event()

    def watch(s: socket.socket) -> None:
        try:
            while not stop.is_set() and s.recv(1 << 16):
                pass
        except OSError:  # closed at the end of the test
            pass

    try:
        port = int(server.stdout.readline())
        time.sleep(3)  # the first frames, the server's own threads
        before = rss()
        for _ in range(24):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(f"GET /stream/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            viewers.append(s)
            threading.Thread(target=watch, args=(s,), daemon=True).start()
        time.sleep(8)  # about 80 frames each
        per_viewer = (rss() - before) / len(viewers)
    finally:
        stop.set()
        server.kill()
        server.communicate()
        for s in viewers:
            s.close()
    assert per_viewer < 1.0, f"{per_viewer:.2f} MB per MJPEG viewer"


def test_stalled_viewers_are_dropped(live):
    """Viewers that stop reading are dropped once a frame has waited ``timeout`` seconds to go out:
    their threads end."""
    server = live("127.0.0.1:0", ["cam"], timeout=2.0)
    port = port_of(server)
    image = np.random.default_rng(0).integers(0, 256, (1080, 1920, 3), np.uint8)  # noise: a big JPEG
    server.write(frame(0, image))
    server.jpeg("cam")  # the encoder's thread is up
    threads_before = threading.active_count()
    viewers = []
    try:
        for _ in range(12):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a viewer on a slow link
            s.connect(("127.0.0.1", port))
            s.sendall(f"GET /stream/0.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
            viewers.append(s)
        time.sleep(1.0)
        assert threading.active_count() >= threads_before + 12  # each blocked sending its first frame
        deadline = time.monotonic() + 6
        while threading.active_count() > threads_before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert threading.active_count() <= threads_before, "stalled viewers were never dropped"
    finally:
        for s in viewers:
            s.close()


def test_connections_beyond_the_bound_are_turned_away(live):
    server = live("127.0.0.1:0", ["cam"], max_connections=4, timeout=5.0)
    port = port_of(server)
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    time.sleep(0.3)
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert extra.recv(100).startswith(b"HTTP/1.1 503"), "the fifth connection was not refused at once"
    assert threading.active_count() - before <= 4
    for s in [*idle, extra]:
        s.close()
    time.sleep(0.5)
    assert get(port, "/api/state", headers={"Host": f"127.0.0.1:{port}"})[0] == 200  # slots come back


# -- Host header, routes, the token in the page, IPv6 ---------------------------------------------


def test_host_header_guards_a_loopback_server_without_token(live):
    """DNS rebinding: a page from evil.example whose name now resolves to 127.0.0.1 sends
    ``Host: evil.example:PORT``; without a token only this machine's own names are answered."""
    server = live("127.0.0.1:0", ["cam"])
    port = port_of(server)
    # any port: an SSH tunnel (ssh -L 9000:127.0.0.1:PORT) makes the browser say localhost:9000
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "LOCALHOST:9000", "localhost"):
        assert get(port, "/api/state", headers={"Host": host})[0] == 200, host
    for host in (
        f"evil.example:{port}",
        "evil.example",
        f"localhost.evil.example:{port}",
        f"[::2]:{port}",
        "",
    ):
        assert get(port, "/api/state", headers={"Host": host})[0] == 403, host
        assert get(port, "/metrics", headers={"Host": host})[0] == 403, host
    guarded = live("127.0.0.1:0", ["cam"], token="t")  # with a token, any Host (a proxy's name)
    headers = {"Host": "camera-box.example", "Authorization": "Bearer t"}
    assert get(port_of(guarded), "/api/state", headers=headers)[0] == 200


def test_only_the_documented_routes_answer(live):
    server = live("127.0.0.1:0", ["a", "b"])
    port = port_of(server)
    server.write(frame(0, np.zeros((48, 64, 3), np.uint8), "a"))
    for path in ("/", "/api/state", "/api/state?after=3", "/metrics", "/frame/0.jpg", "/stream/0.mjpg"):
        assert get(port, path)[0] == 200, path
    for path in (
        "/frame/-1.jpg", "/frame/0.mjpg", "/stream/0.jpg", "/frame/2.jpg", "/frame/00.jpg",
        "/frame/0.jpg/x", "/stream/+1.mjpg", "/frame/.jpg", "/index.html", "/api/state/x", "/metricsx",
    ):  # fmt: skip
        assert get(port, path)[0] == 404, path


def test_the_page_links_work_with_any_token(live):
    """A token with ``&``, ``#``, ``+``, a space and ``%``: the page's own links carry it intact."""
    token = "a&b#c+d e%f"
    server = live("127.0.0.1:0", ["cam"], token=token)
    port = port_of(server)
    server.write(frame(0, np.zeros((48, 64, 3), np.uint8)))
    status, page = get(port, f"/?token={quote(token, safe='')}")
    assert status == 200
    src = html.unescape(re.search(r'<img id="stream-0" src="([^"]+)"', page.decode()).group(1))
    path = src.split("#")[0].replace(" ", "%20")  # as a browser resolves it: no fragment, no spaces
    assert get(port, path)[0] == 200, src


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_loopback(live):
    server = live("[::1]:0", ["cam"])
    assert server.address.startswith("http://[::1]:")
    port = port_of(server)
    assert get(port, "/api/state", host="::1", headers={"Host": f"[::1]:{port}"})[0] == 200


# -- TLS ------------------------------------------------------------------------------------------


def self_signed(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


def test_serves_https_with_a_certificate(tiny_bundle, tmp_path):
    cert, key = self_signed(tmp_path)
    port, token = free_port(), "tls-t0ken"
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--realtime", "--loop", "0", "-q",
        "--serve", f"0.0.0.0:{port}", "--serve-cert", str(cert), "--serve-key", str(key),
        env=clean_env(**{TOKEN_ENV: token}),
    )  # fmt: skip
    context = ssl.create_default_context(cafile=str(cert))
    try:
        wait_until_serving(port, run, headers={"Authorization": f"Bearer {token}"}, context=context)
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=context)
        conn.request("GET", "/metrics")
        assert conn.getresponse().status == 401
        with socket.create_connection(("127.0.0.1", port), timeout=5) as plain:  # plain HTTP: closed
            plain.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            assert b"200 OK" not in plain.recv(4096)
    finally:
        err = stop(run)
    assert "live view: https://0.0.0.0:" in err and "Traceback" not in err, err


def test_a_certificate_that_does_not_load_is_one_error_line(tiny_bundle, tmp_path):
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    p = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--max-frames", "2", "-q",
        "--serve", f"127.0.0.1:{free_port()}", "--serve-cert", str(bad), "--serve-key", str(bad),
        env=clean_env(),
    )  # fmt: skip
    _, err = p.communicate(timeout=60)
    assert p.returncode == 1 and "--serve-cert" in err and "Traceback" not in err, err

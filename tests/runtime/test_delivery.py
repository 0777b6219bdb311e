"""Delivery to network peers, with real peers: an HTTP server that redirects, refuses, hangs or
checks signatures, and a real Mosquitto that wants a login or speaks no TLS.

Every event put to a network output ends in exactly one bucket (delivered, refused, dropped at the
queue bound, unsent at exit); a failure that will not fix itself is said at once; a stop is bounded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cameras import free_port

from conftest import VTEST, pixlm_run, read_jsonl
from pixlm.runtime.outputs import Outputs
from pixlm.runtime.outputs.server import LiveServer
from pixlm.runtime.outputs.webhook import WebhookSink
from pixlm.runtime.sources import SourceEvent

needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Debian's mosquitto")


class Peer:
    """A real HTTP server on 127.0.0.1; ``answer(path, body, headers)`` gives (status, extra headers).

    ``got`` lists (method, path, body) of every request, in arrival order."""

    def __init__(self, answer):
        self.got: list[tuple[str, str, bytes]] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                peer.got.append((self.command, self.path, body))
                status, headers = answer(self.path, body, self.headers)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_GET = _any  # noqa: N815 - http.server's names

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def peer():
    started: list[Peer] = []

    def start(answer) -> Peer:
        started.append(Peer(answer))
        return started[-1]

    yield start
    for p in started:
        p.close()


def record(n: int) -> dict:
    return {"type": "label", "source": "cam", "frame": n, "timestamp": 1.0 + n, "label": "Bag"}


# -- redirects -------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_webhook_follows_a_redirect_with_the_same_method_and_body(peer, status):
    """urllib alone turned a POST answered 301/302 into a GET without a body (and counted it
    delivered) and refused a 307/308; the event must arrive, as a POST, at the new address."""
    p = peer(lambda path, body, h: (status, {"Location": "/final"}) if path == "/hook" else (200, {}))
    sink = WebhookSink(p.base + "/hook")
    for n in range(3):
        sink.event(record(n))
    sink.close()
    arrived = [(m, json.loads(b)["frame"] if b else "no body") for m, path, b in p.got if path == "/final"]
    assert arrived == [("POST", 0), ("POST", 1), ("POST", 2)]
    assert (sink.stats.delivered, sink.stats.refused) == (3, 0)


def test_webhook_redirect_loop_is_refused_not_delivered(peer):
    p = peer(lambda path, body, h: (307, {"Location": path}))
    sink = WebhookSink(p.base + "/loop")
    sink.event(record(0))
    sink.close()
    assert len(p.got) == 6  # the first try and 5 hops
    assert (sink.stats.delivered, sink.stats.refused) == (0, 1)


# -- delivery buckets ------------------------------------------------------------------------------


def test_every_event_ends_in_exactly_one_bucket(peer):
    """A receiver that holds the first request while the queue overflows, then refuses one event:
    each event is counted once, in one of delivered, refused, dropped at the bound, unsent at exit."""
    release, first = threading.Event(), threading.Event()

    def answer(path, body, headers):
        n = json.loads(body)["frame"]
        if n == 0:
            first.set()
            release.wait(10)
        return (404, {}) if n == 5 else (200, {})

    p = peer(answer)
    warnings: list[str] = []
    outputs = Outputs(on_warning=warnings.append)
    sink = WebhookSink(p.base + "/hook", queue_size=3)
    outputs.add(sink)
    sink.event(record(0))
    assert first.wait(5)
    for n in range(1, 7):  # 0 is in flight; the bound of 3 drops 0, 1, 2, 3 in turn
        sink.event(record(n))
    release.set()  # 0 arrives after all: delivered, no longer dropped
    outputs.close()
    sink.event(record(7))  # after close: unsent
    st = sink.stats
    assert [json.loads(b)["frame"] for _, _, b in p.got] == [0, 4, 5, 6]
    assert (st.delivered, st.refused, st.dropped, st.unsent) == (3, 1, 3, 1)
    assert st.delivered + st.refused + st.dropped + st.unsent == st.put == 8
    assert warnings == ["[output refused] webhook: a label event: HTTP 404 (each refusal is counted)"]


def test_delivery_buckets_on_the_live_servers_metrics(peer):
    """/metrics of a real live server shows each network output's buckets as it settles events,
    and whether it has failed for good: a 401 fails the webhook (up 0) until an event goes through."""
    answers = {"cam-a": 200, "cam-b": 404, "cam-c": 401}
    p = peer(lambda path, body, h: (answers[json.loads(body)["source"]], {}))
    server = LiveServer("127.0.0.1:0", ["cam-a"])
    outputs = Outputs([server], on_warning=lambda line: None)
    sink = WebhookSink(p.base + "/hook")
    outputs.add(sink)

    def scrape(*sources: str) -> dict[str, float]:
        for source in sources:
            outputs.status(SourceEvent(source, "ok", time.time(), "streaming"))
        deadline = time.monotonic() + 10
        while sink.pending and time.monotonic() < deadline:
            time.sleep(0.02)
        with urllib.request.urlopen(f"{server.address}metrics", timeout=10) as r:
            lines = r.read().decode().splitlines()
        got = {}
        for line in lines:
            if line.startswith("pixlm_delivery_"):
                name, value = line.rsplit(" ", 1)
                got[name] = float(value)
        return got

    def webhook(outcome: str) -> str:
        return f'pixlm_delivery_records_total{{output="webhook",outcome="{outcome}"}}'

    try:
        got = scrape("cam-a", "cam-b", "cam-c")
        assert got == {
            webhook("delivered"): 1,
            webhook("refused"): 2,  # a 404, and the 401
            webhook("dropped"): 0,
            webhook("unsent"): 0,
            'pixlm_delivery_retries_total{output="webhook"}': 0,
            'pixlm_delivery_up{output="webhook"}': 0,
        }
        got = scrape("cam-a")
        assert got[webhook("delivered")] == 2 and got['pixlm_delivery_up{output="webhook"}'] == 1
    finally:
        outputs.close()
    assert (sink.stats.delivered, sink.stats.refused) == (2, 2)


def test_pixlm_run_reports_refusals_on_the_console_and_counts_them_once(tiny_bundle, tmp_path, peer):
    p = peer(lambda path, body, h: (404, {}) if json.loads(body)["type"] == "label" else (200, {}))
    out = tmp_path / "out.jsonl"
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "10",
        "--webhook", p.base + "/hook", "--jsonl", str(out), "-q", "--stats-json", str(tmp_path / "s.json"),
    )  # fmt: skip
    _, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    records = read_jsonl(out)
    labels = sum(r["type"] == "label" for r in records)
    statuses = sum(r["type"] == "status" for r in records)
    assert labels >= 4
    assert err.count("[output refused] webhook: a label event: HTTP 404") == 1, err
    summary = (
        f"webhook: {statuses} delivered, {labels} refused, 0 dropped at the queue bound, 0 unsent at exit"
    )
    assert summary in err, err
    # --stats-json: the same buckets the summary read, and the events by kind and source
    stats = json.loads((tmp_path / "s.json").read_text())
    assert stats["deliveries"] == [
        {"output": "webhook", "put": statuses + labels, "delivered": statuses, "refused": labels,
         "dropped": 0, "unsent": 0, "retries": 0, "failure": None},
    ]  # fmt: skip
    assert stats["events"]["label"] == {str(VTEST): labels} and stats["frames"] == 10


# -- signing ---------------------------------------------------------------------------------------


def verify(secret: bytes, body: bytes, header: str | None) -> bool:
    """What a receiver does (docs/runtime.md shows the same lines)."""
    expected = "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
    return header is not None and hmac.compare_digest(expected, header)


def test_webhook_bodies_are_signed_with_the_secret_from_the_environment(tiny_bundle, tmp_path, peer):
    secret = "s3cret, from a vault"
    checked: list[bool] = []

    def answer(path, body, headers):
        checked.append(verify(secret.encode(), body, headers.get("X-Pixlm-Signature")))
        return (200, {}) if checked[-1] else (401, {})

    p = peer(answer)
    out = tmp_path / "out.jsonl"
    env = {**os.environ, "PIXLM_WEBHOOK_SECRET": secret}
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "6",
        "--webhook", p.base + "/hook", "--jsonl", str(out), "-q", env=env,
    )  # fmt: skip
    _, err = run.communicate(timeout=240)
    assert run.returncode == 0, err
    sent = [r for r in read_jsonl(out) if r["type"] in ("anomaly", "label", "status")]
    assert checked == [True] * len(sent) and len(sent) >= 3
    assert f"webhook: {len(sent)} delivered, 0 refused" in err
    # a wrong secret: the receiver refuses (401), which is a failed output (exit 1), said at once
    env["PIXLM_WEBHOOK_SECRET"] = "another"
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--max-frames", "3", "--webhook", p.base + "/hook",
        "-q", env=env,
    )  # fmt: skip
    _, err = run.communicate(timeout=240)
    assert run.returncode == 1 and "HTTP 401" in err and "Error:" in err and "webhook" in err, err


@pytest.mark.parametrize(
    "args,env",
    [
        (["--webhook", "http://127.0.0.1:9/h", "--webhook-secret", ""], {}),  # an unset variable
        (["--webhook", "http://127.0.0.1:9/h"], {"PIXLM_WEBHOOK_SECRET": ""}),
        (["--webhook-secret", "x"], {}),  # a secret for no webhook
    ],
)
def test_an_empty_webhook_secret_or_one_without_webhook_is_a_usage_error(tiny_bundle, args, env):
    run = pixlm_run(str(VTEST), "--bundle", str(tiny_bundle), *args, env={**os.environ, **env})
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2 and "secret" in err, err


# -- MQTT failures that will not fix themselves ----------------------------------------------------


@pytest.fixture(scope="module")
def login_broker(tmp_path_factory):
    """A real Mosquitto that wants a user name and password (alice / secret)."""
    if shutil.which("mosquitto") is None:
        pytest.skip("needs Debian's mosquitto")
    d = tmp_path_factory.mktemp("broker")
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(d / "pw"), "alice", "secret"], check=True)
    port = free_port()
    conf = d / "mosquitto.conf"
    # "user root": as root, mosquitto would become user mosquitto, who cannot read pytest's folders
    conf.write_text(
        f"listener {port} 127.0.0.1\nuser root\nallow_anonymous false\npassword_file {d / 'pw'}\n"
    )
    p = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        raise AssertionError("mosquitto did not start")
    yield port
    p.kill()
    p.wait()


class Collect:
    """A sink that keeps every event record (what the JSON Lines would get)."""

    def __init__(self):
        self.events: list[dict] = []

    def write(self, fr):
        pass

    def event(self, record):
        self.events.append(record)

    def close(self):
        pass


@needs_mosquitto
@pytest.mark.parametrize(
    "url,said",
    [
        ("mqtt://127.0.0.1:{port}/t", "not authorised"),  # no login
        ("mqtt://alice:wrong@127.0.0.1:{port}/t", "not authorised"),
        ("mqtts://127.0.0.1:{port}/t", "TLS"),  # a plain port
        ("mqtt://no-such-host.invalid/t", "cannot resolve"),
    ],
)
def test_mqtt_failures_that_cannot_fix_themselves_are_said_at_once(login_broker, url, said):
    from pixlm.runtime.outputs.mqtt import MqttSink

    warnings: list[str] = []
    seen = Collect()
    outputs = Outputs([seen], on_warning=warnings.append)
    sink = MqttSink(url.format(port=login_broker))
    outputs.add(sink)
    deadline = time.monotonic() + 10
    while not warnings and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.event(record(0))
    t0 = time.monotonic()
    outputs.close()
    assert time.monotonic() - t0 < 2.0  # nothing to wait for: the broker will not take it
    assert len(warnings) == 1 and said in warnings[0], warnings
    status = [e for e in seen.events if e["type"] == "status"]
    assert [(e["source"], e["status"]) for e in status] == [("output:mqtt", "error")]
    assert said in status[0]["message"]
    assert list(outputs.failed()) == ["mqtt"] and sink.stats.unsent == 1


@needs_mosquitto
def test_mqtt_with_the_right_login_delivers(login_broker):
    from pixlm.runtime.outputs.mqtt import MqttSink

    warnings: list[str] = []
    outputs = Outputs(on_warning=warnings.append)
    sink = MqttSink(f"mqtt://alice:secret@127.0.0.1:{login_broker}/t")
    outputs.add(sink)
    for n in range(3):
        sink.event(record(n))
    outputs.close()
    assert (sink.stats.delivered, sink.stats.unsent, warnings, outputs.failed()) == (3, 0, [], {})


@needs_mosquitto
def test_pixlm_run_with_a_refused_mqtt_login_goes_on_and_exits_1(tiny_bundle, tmp_path, login_broker):
    out = tmp_path / "out.jsonl"
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "30",
        "--mqtt", f"mqtt://127.0.0.1:{login_broker}/pixlm", "--jsonl", str(out), "-q",
    )  # fmt: skip
    _, err = run.communicate(timeout=240)
    assert run.returncode == 1, err
    lines = err.splitlines()
    warned = [
        i
        for i, line in enumerate(lines)
        if line.startswith("[output failed] mqtt:") and "not authorised" in line
    ]
    summary = [i for i, line in enumerate(lines) if line.startswith("30 frames")]
    assert warned and summary and warned[0] < summary[0], err  # said during the run, not at the end
    assert lines[-1].startswith("Error:") and "mqtt" in lines[-1] and "not authorised" in lines[-1]
    records = read_jsonl(out)
    assert sum(r["type"] == "result" for r in records) == 30 * 4  # the stream went on
    failed = [r for r in records if r["type"] == "status" and r["source"] == "output:mqtt"]
    assert failed and failed[0]["status"] == "error"


# -- shutdown --------------------------------------------------------------------------------------


class HangingPeer:
    """Accepts connections and never answers: a webhook receiver that hangs."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.conns.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            c.close()


def start_stuck_run(bundle: Path, tmp_path: Path, hanging: HangingPeer) -> tuple[subprocess.Popen, Path]:
    """A run whose webhook hangs and whose broker is absent, streaming until stopped."""
    out = tmp_path / "out.jsonl"
    absent = free_port()
    run = pixlm_run(
        str(VTEST), "--bundle", str(bundle), "--grid", "2x2", "--realtime", "--loop", "0",
        "--webhook", hanging.url, "--mqtt", f"mqtt://127.0.0.1:{absent}/pixlm", "--jsonl", str(out), "-q",
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(out.read_text().splitlines() if out.exists() else []) < 40:
        assert time.monotonic() < deadline and run.poll() is None, "the run never streamed"
        time.sleep(0.1)
    time.sleep(1)  # events queued in both outputs, the webhook's first POST hanging
    return run, out


@pytest.mark.slow
def test_sigterm_closes_hanging_outputs_within_one_bound(tiny_bundle, tmp_path):
    hanging = HangingPeer()
    try:
        run, out = start_stuck_run(tiny_bundle, tmp_path, hanging)
        t0 = time.monotonic()
        run.send_signal(signal.SIGTERM)
        _, err = run.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        hanging.close()
    assert run.returncode == 143, err
    assert took < 8.0, f"SIGTERM took {took:.1f} s (Docker kills at 10 s)\n{err}"
    assert "webhook: 0 delivered" in err and "mqtt: 0 delivered" in err
    read_jsonl(out)  # whole lines


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_second_signal_exits_at_once(tiny_bundle, tmp_path, sig):
    hanging = HangingPeer()
    try:
        run, _ = start_stuck_run(tiny_bundle, tmp_path, hanging)
        run.send_signal(sig)
        time.sleep(1.0)  # now draining the outputs
        t0 = time.monotonic()
        run.send_signal(sig)
        _, err = run.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        hanging.close()
    assert run.returncode == 128 + sig, err
    assert took < 1.5, f"the second {sig.name} took {took:.1f} s\n{err}"
    assert "exiting now" in err

"""Events out, with real parts: snapshots on disk, a real HTTP receiver for webhooks, a real
Mosquitto broker killed and restarted mid-run, the live view in a real headless Chromium, and
/metrics scraped and parsed."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
from cameras import free_port

from conftest import VTEST, pixlm_run, read_jsonl
from pixlm.data import load_fashion_mnist
from pixlm.runtime.alerts import Alert, AlertBook, AlertRules, Phase
from pixlm.runtime.outputs.events import EventTracker
from pixlm.runtime.records import status_record
from pixlm.runtime.scoring import Result
from pixlm.runtime.sources import SourceEvent, source_slug
from pixlm.runtime.stream import FrameResult, Region, RegionResult

ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts"


def frame(index: int, hot: list[bool], labels: list[str]) -> FrameResult:
    regions = [
        RegionResult(Region(f"r{i}", 10 * i, 0, 10, 10), Result(lab, 0, 0.9, [(lab, 0.9)], 0.5), h)
        for i, (h, lab) in enumerate(zip(hot, labels, strict=True))
    ]
    return FrameResult("rtsp://cam/1", index, 100.0 + index, np.zeros((10, 20, 3), np.uint8), regions, 1.0)


def test_alert_phases_become_anomaly_events_and_labels_fire_on_change():
    """An alert's start, its rate-limited updates and its end are anomaly events with one id;
    labels fire on change. Scores 5 (hot) and 0 against a threshold of 1, one frame a second."""
    book = AlertBook(AlertRules(default=1.0, after_s=1.0, end_after_s=2.0, update_every_s=3.0))
    t = EventTracker()
    seen = []
    plan = [
        (0, "Bag"),
        (5, "Bag"),
        (5, "Bag"),
        (5, "Coat"),
        (5, "Coat"),
        (5, "Coat"),
        (0, "Coat"),
        (0, "Coat"),
    ]
    plan += [(0, "Coat"), (5, "Coat")]
    for i, (score, label) in enumerate(plan):
        fr = frame(i, [False], [label])
        fr.fps = 1.0
        rr = fr.regions[0]
        rr.alert = book.observe(fr.source, rr.region.name, float(i), np.full((2, 2), score, np.float32))
        rr.anomalous = rr.alert.hot
        seen += [(i, e["type"], e.get("phase")) for e in t.events(fr)]
    assert seen == [
        (0, "label", None),
        (2, "anomaly", "start"),  # hot at 1 and 2: surprising for after_s
        (3, "label", None),
        (5, "anomaly", "update"),  # at most one per update_every_s
        (7, "anomaly", "end"),  # last hot at 5 (the window [5, 6] holds a quiet frame): 2 s quiet
        # at 9 the window [8, 9] still holds a quiet frame: no new start yet
    ]
    events = []
    book2, t2 = (
        AlertBook(AlertRules(default=1.0, after_s=1.0, end_after_s=2.0, update_every_s=3.0)),
        EventTracker(),
    )
    for i, score in enumerate([5, 5, 5, 5, 5, 5, 0, 0, 0]):
        fr = frame(i, [False], ["Bag"])
        fr.fps = 1.0
        rr = fr.regions[0]
        rr.alert = book2.observe(fr.source, "r0", float(i), np.full((2, 2), score, np.float32))
        events += [e for e in t2.events(fr) if e["type"] == "anomaly"]
    assert [e["phase"] for e in events] == ["start", "update", "end"]
    assert len({e["alert_id"] for e in events}) == 1
    assert [e["duration_s"] for e in events] == [0.0, 3.0, 4.0] and events[-1]["started"] == 1.0
    assert source_slug("rtsp://admin:***@cam:8554/x") == "rtsp-admin-cam-8554-x"
    assert source_slug("/data/clips/clip.mp4") == "clip.mp4"


def test_every_record_keeps_its_fields_order_and_rounding():
    """The JSON every output carries, byte for byte: a JSON line, an MQTT payload and a webhook body
    are these objects, so a change here is a change to the schema (docs/runtime.md)."""
    res = Result("Bag", 3, 0.91234567, [("Bag", 0.91234567), ("Coat", 0.0512345678)], 2.123456789)
    res.anomaly_peak, res.ood_score, res.reused_tokens, res.known = 4.87654321, 12.3456789, 57, True
    region = Region("r0c1", 384, 0, 384, 288)
    fr = FrameResult(
        "rtsp://cam/1", 7, 1700000000.1234567, np.zeros((2, 2, 3), np.uint8), [], 12.34567, fps=10.0
    )
    alert = Alert("rtsp://cam/1/r0c1/1", 0.5, 4.87654321, 0.7, 0.5)
    started = Phase(3.3333333, True, "update", alert)
    fr.regions, fr.timings = (
        [RegionResult(region, res, True, started)],
        {"tokenize": 1.234567, "infer": 5.6789012},
    )
    head = (
        '"source":"rtsp://cam/1","frame":7,"timestamp":1700000000.123457,'
        '"region":{"name":"r0c1","xywh":[384,0,384,288]}'
    )
    want_result = (
        '{"type":"result",' + head + ',"label":"Bag","known":true,"score":0.912346,'
        '"top_k":[["Bag",0.912346],["Coat",0.051235]],"anomaly":2.123457,"anomaly_peak":4.876543,'
        '"ood_score":12.3457,"reused_tokens":57,"anomaly_event":true,"alert_score":3.333333,'
        '"latency_ms":12.346,"timings_ms":{"tokenize":1.2346,"infer":5.6789}}'
    )
    want_events = [  # an update 0.2 s after the start, at 10 frames/s: frame 7 is second 0.7
        '{"type":"anomaly",' + head + ',"phase":"update","alert_id":"rtsp://cam/1/r0c1/1",'
        '"alert_score":3.333333,"peak":4.876543,"started":0.5,"duration_s":0.2,"label":"Bag","known":true,'
        '"score":0.912346,"anomaly":2.123457,"anomaly_peak":4.876543,"snapshot":null,"crop":null}',
        '{"type":"label",' + head + ',"label":"Bag","previous":null,"score":0.912346}',
    ]
    status = SourceEvent("output:mqtt", "error", 1700000000.9876543, "broker refused the login")
    want_status = (
        '{"type":"status","source":"output:mqtt","status":"error","timestamp":1700000000.987654,'
        '"message":"broker refused the login"}'
    )

    def dumps(record: dict) -> str:
        return json.dumps(record, separators=(",", ":"))

    assert [dumps(r) for r in fr.records()] == [want_result]
    assert [dumps(e) for e in EventTracker().events(fr)] == want_events
    assert dumps(status_record(status)) == want_status


def run_to_end(*args: str, timeout: float = 240) -> tuple[subprocess.Popen, str]:
    p = pixlm_run(*args)
    _, err = p.communicate(timeout=timeout)
    return p, err


def events_of(records: list[dict]) -> list[dict]:
    return [r for r in records if r["type"] in ("anomaly", "label", "status")]


def key(e: dict) -> tuple:
    return (e["type"], e["source"], e.get("frame"), (e.get("region") or {}).get("name"), e["timestamp"])


def test_snapshots_are_written_and_named_in_the_events(tiny_bundle, tmp_path):
    out, snaps = tmp_path / "out.jsonl", tmp_path / "snaps"
    p, err = run_to_end(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "6",
        "--anomaly-threshold", "0", "--alert-after", "1ms",
        "--snapshots", str(snaps), "--jsonl", str(out), "-q",
    )  # fmt: skip
    assert p.returncode == 0, err
    records = read_jsonl(out)
    anomalies = [r for r in records if r["type"] == "anomaly"]
    assert [a["region"]["name"] for a in anomalies] == ["r0c0", "r0c1", "r1c0", "r1c1"]  # starts only
    assert all(a["frame"] == 1 and a["phase"] == "start" for a in anomalies)  # surprising since frame 0
    for a in anomalies:
        full, crop = cv2.imread(str(snaps / a["snapshot"])), cv2.imread(str(snaps / a["crop"]))
        assert full.shape == (576, 768, 3) and crop.shape == (288, 384, 3)
    assert sorted(f.name for f in snaps.iterdir()) == sorted(
        [a["snapshot"] for a in anomalies] + [a["crop"] for a in anomalies]
    )
    assert len([r for r in records if r["type"] == "label"]) >= 4
    assert "events: anomaly 4" in err and "4 snapshot(s)" in err


# -- webhooks: a real HTTP server that fails at first ------------------------------------------------


class Receiver:
    """A local HTTP server taking POSTs; the first ``fail`` answers are 503."""

    def __init__(self, fail: int):
        self.bodies: list[dict] = []
        self.answers: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                code = 503 if len(receiver.answers) < fail else 200
                receiver.answers.append(code)
                if code == 200:
                    receiver.bodies.append(body)
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/hook"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_webhook_posts_every_event_in_order_with_retries(tiny_bundle, tmp_path):
    receiver = Receiver(fail=3)
    out = tmp_path / "out.jsonl"
    try:
        p, err = run_to_end(
            str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--max-frames", "20",
            "--anomaly-threshold", "0.5", "--webhook", receiver.url, "--jsonl", str(out), "-q",
        )  # fmt: skip
    finally:
        receiver.close()
    assert p.returncode == 0, err
    sent = events_of(read_jsonl(out))
    assert len(sent) >= 5
    assert receiver.answers[:3] == [503, 503, 503]  # retried with backoff, then delivered
    assert [key(b) for b in receiver.bodies] == [key(e) for e in sent]  # all, once, in order
    assert f"webhook: {len(sent)} delivered" in err


# -- MQTT: a real Mosquitto broker, killed and restarted mid-run ---------------------------------------


def start_broker(conf: Path, log: Path) -> subprocess.Popen:
    p = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=log.open("ab"), stderr=subprocess.STDOUT)
    port = int(re.search(r"listener (\d+)", conf.read_text()).group(1))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            import socket

            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return p
        except OSError:
            time.sleep(0.1)
    raise AssertionError("mosquitto did not start")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Debian's mosquitto")
def test_mqtt_events_survive_a_broker_restart(tiny_bundle, tmp_path):
    import paho.mqtt.client as mqtt

    port = free_port()
    (tmp_path / "db").mkdir()
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
        f"persistence_location {tmp_path / 'db'}/\n"
    )
    broker = start_broker(conf, tmp_path / "broker.log")
    got: list[tuple[str, bytes, bool]] = []
    # A persistent subscriber session (clean_session False, QoS 1): the broker keeps its messages
    # across the restart, as a real consumer (a VMS, Home Assistant) would arrange.
    sub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="pixlm-test-sub", clean_session=False)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("pixlm/#", qos=1)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload, m.retain))
    sub.reconnect_delay_set(0.2, 1)
    sub.connect("127.0.0.1", port)
    sub.loop_start()
    # A "conveyor": two clothing items taking turns every 5 frames, paced at 30 fps for 15 s, so
    # label events keep coming while the broker is down.
    test = load_fashion_mnist(split="test")
    items = [test.images[list(test.labels).index(c)] for c in (1, 7)]  # a trouser, a sneaker
    folder = tmp_path / "conveyor"
    folder.mkdir()
    for i in range(450):
        cv2.imwrite(str(folder / f"{i:04d}.png"), cv2.resize(items[(i // 5) % 2], (112, 112)))
    out = tmp_path / "out.jsonl"
    run = pixlm_run(
        str(folder), "--bundle", str(tiny_bundle), "--realtime", "--no-unknown",
        "--mqtt", f"mqtt://127.0.0.1:{port}/pixlm", "--jsonl", str(out), "-q",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not (out.exists() and out.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(2)
        t_down = time.time()
        broker.send_signal(signal.SIGTERM)  # the broker goes away mid-run (saving its sessions)
        broker.wait(timeout=10)
        time.sleep(4)
        broker = start_broker(conf, tmp_path / "broker.log")
        t_up = time.time()
        _, err = run.communicate(timeout=120)
        assert run.returncode == 0, err
        sent = events_of(read_jsonl(out))
        assert sum(t_down < e["timestamp"] < t_up for e in sent) >= 3, "no events while the broker was down"

        def missing() -> list[tuple]:
            received = {key(json.loads(m)) for t, m, _ in list(got) if t != "pixlm/status"}
            return [key(e) for e in sent if key(e) not in received]

        deadline = time.monotonic() + 15
        while missing() and time.monotonic() < deadline:
            time.sleep(0.2)
        lost = missing()
        assert not lost, f"{len(lost)} of {len(sent)} events never arrived, e.g. {lost[:3]}"
        for t, m, _ in got:
            if t != "pixlm/status":
                e = json.loads(m)
                assert t == f"pixlm/{source_slug(e['source'])}/{e['type']}"
        assert "mqtt: " in err and "delivered" in err
        # the retained client status, as a late subscriber sees it: offline after a clean exit
        late: list[bytes] = []
        probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        probe.on_connect = lambda c, u, f, rc, p: c.subscribe("pixlm/status", qos=1)
        probe.on_message = lambda c, u, m: late.append(m.payload)
        probe.connect("127.0.0.1", port)
        probe.loop_start()
        deadline = time.monotonic() + 5
        while not late and time.monotonic() < deadline:
            time.sleep(0.1)
        probe.loop_stop()
        assert late == [b"offline"]
    finally:
        sub.loop_stop()
        if run.poll() is None:
            run.kill()
        broker.kill()
        broker.wait()


# -- the live view in a real browser, and /metrics -------------------------------------------------


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""
    except urllib.error.URLError:  # not listening yet
        return 0, b""


def parse_prometheus(text: str) -> dict[str, list[tuple[dict, float]]]:
    """The text exposition format, strictly: every sample line is NAME{LABELS} VALUE."""
    sample = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
    )
    families: dict[str, list[tuple[dict, float]]] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line:
            assert re.match(r"^# (HELP|TYPE) \S+ ", line) or not line, line
            continue
        m = sample.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        families.setdefault(m.group(1), []).append((labels, float(m.group(3))))
    return families


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_live_view_in_headless_chromium_and_metrics(tiny_bundle, tmp_path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    run = pixlm_run(
        str(VTEST), "--bundle", str(tiny_bundle), "--grid", "2x2", "--realtime", "--loop", "0",
        "--anomaly-threshold", "0", "--serve", f"127.0.0.1:{port}", "--serve-token", "s3cret", "-q",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while get(f"{base}/api/state?token=s3cret")[0] != 200 and time.monotonic() < deadline:
            time.sleep(0.3)
        time.sleep(3)  # a few frames and events
        assert get(f"{base}/")[0] == 401 and get(f"{base}/metrics")[0] == 401  # the token is required
        chromium = ["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        chromium += ["--virtual-time-budget=5000"]
        dom = subprocess.run(
            [*chromium, "--dump-dom", f"{base}/?token=s3cret"], capture_output=True, text=True, timeout=60
        ).stdout
        assert 'data-loaded="yes"' in dom, "the MJPEG stream never loaded in the browser"
        assert re.search(r'id="size-0">768x576<', dom)
        assert len(re.findall(r'<li class="(anomaly|label|status)"', dom)) >= 3, "no events on the page"
        # threshold 0: every tile has stayed surprising since its first second, its alert open
        assert re.search(r'id="open-count">4<', dom) and re.search(
            r'<ul id="alerts"><li class="anomaly">ALERT', dom
        )
        assert "[metrics]" in dom or "waiting for the first metrics line" in dom
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "live-view.png"
        subprocess.run(
            [
                *chromium,
                "--hide-scrollbars",
                "--window-size=1100,900",
                f"--screenshot={shot}",
                f"{base}/?token=s3cret",
            ],
            capture_output=True,
            timeout=60,
        )
        image = cv2.imread(str(shot))
        assert image is not None and image.shape[:2] == (900, 1100) and image.std() > 20

        status, body = get(f"{base}/metrics?token=s3cret")
        assert status == 200
        m = parse_prometheus(body.decode())
        frames = dict((s["source"], v) for s, v in m["pixlm_frames_total"])
        assert frames[str(VTEST)] > 0
        buckets = [v for s, v in m["pixlm_stage_seconds_bucket"] if s["stage"] == "infer"]
        assert (
            buckets == sorted(buckets)
            and buckets[-1] == dict((s["stage"], v) for s, v in m["pixlm_stage_seconds_count"])["infer"]
        )
        assert sum(v for s, v in m["pixlm_events_total"]) > 0
        assert m["pixlm_source_up"] == [({"source": str(VTEST)}, 1.0)]
        calls = dict((s["le"], v) for s, v in m["pixlm_engine_batch_regions_bucket"])
        assert calls["+Inf"] > 0 and calls["16"] == calls["+Inf"]  # never more than --batch 16
        assert {
            "pixlm_prefix_reuse_hits_total",
            "pixlm_dropped_frames_total",
            "pixlm_reconnects_total",
        } <= set(m)
    finally:
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    assert run.returncode == 130, err


def test_queued_delivery_bounds_orders_retries_and_drains():
    """The queue both network sinks share: oldest dropped beyond the bound (counted), delivery in
    order with retries, and a close while the peer is down that waits (without spinning) for at
    most drain_s and counts what is left."""
    from pixlm.runtime.outputs.delivery import QueuedDelivery

    class Peer(QueuedDelivery):
        def __init__(self):
            super().__init__(queue_size=5, drain_s=0.6)
            self.up, self.got, self.tries = False, [], 0

        def retry_delay(self, failures):
            return 0.05

        def deliver(self, record):
            self.tries += 1
            if self.up:
                self.got.append(record["n"])
            return self.up

    peer = Peer()
    peer.start()
    for n in range(8):
        peer.put({"n": n})
    assert peer.stats.dropped == 3  # 0, 1, 2: the oldest
    time.sleep(0.3)  # the peer is down: tries fail and are retried
    peer.up = True
    deadline = time.monotonic() + 5
    while peer.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert peer.got == [3, 4, 5, 6, 7] and peer.stats.retries >= 1
    peer.up = False
    peer.put({"n": 8})
    t0, tries = time.monotonic(), peer.tries
    peer.close_queue()
    assert time.monotonic() - t0 < 2.0 and peer.stats.unsent == 1
    assert peer.tries - tries <= 0.6 / 0.05 + 3  # backoff honoured while draining: no busy loop

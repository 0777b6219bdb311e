"""One statistics object per run: a real stream (real video, real recognizer, a real live server)
whose metrics line, ``/metrics`` and JSON all read the same ``RunStats``."""

from __future__ import annotations

import json
import re
import statistics
import urllib.request
import warnings

import pytest

from conftest import VTEST
from pixlm.runtime.outputs import Outputs
from pixlm.runtime.outputs.server import LiveServer
from pixlm.runtime.recognizer import Recognizer
from pixlm.runtime.stats import RateMeter, RunStats, StreamCounters
from pixlm.runtime.stream import Streamer


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text, strictly: (name, labels) -> value; every line a comment or NAME{LABELS} VALUE."""
    sample = re.compile(
        r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*\})? (\S+)$'
    )
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) \S+ ", line), line
            continue
        m = sample.match(line)
        assert m, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        assert (m.group(1), labels) not in out, f"a series twice: {line!r}"
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def test_rate_meter_counts_the_last_30_arrivals():
    meter = RateMeter()
    assert meter.fps() == 0.0
    meter.tick(5.0)
    assert meter.fps() == 0.0  # one arrival is no rate
    for i in range(1, 100):  # 100 arrivals, 10 a second, then 30 at 50 a second
        meter.tick(5.0 + i / 10)
    assert meter.fps() == pytest.approx(10.0)
    for i in range(1, 31):
        meter.tick(14.9 + i / 50)
    assert meter.fps() == pytest.approx(50.0)
    same = RateMeter()
    same.tick(1.0)
    same.tick(1.0)
    assert same.fps() == 0.0  # no time passed: no rate, not a division by zero


def test_the_line_the_metrics_and_the_json_read_one_snapshot(tiny_bundle, tmp_path):
    rec = Recognizer.open(tiny_bundle, backend="ort-cpu", precision="fp32")
    server = LiveServer("127.0.0.1:0", [str(VTEST)])
    outputs = Outputs([server])
    lines: list[str] = []
    streamer = Streamer(
        rec, [str(VTEST)], grid=(2, 2), max_frames=12, max_batch=8, anomaly_threshold=0.0,
        on_event=outputs.status, on_metrics=lines.append, metrics_every=1e9,
    )  # fmt: skip
    server.attach(streamer)
    latencies = []
    try:
        with streamer:
            for fr in streamer:
                latencies.append(fr.latency_ms)
                outputs.frame(fr)
        run = RunStats.of(streamer, outputs)
        with urllib.request.urlopen(f"{server.address}metrics", timeout=10) as r:
            scraped = samples(r.read().decode())
    finally:
        outputs.close()

    # the metrics line: one, at the end, over the whole run
    assert lines == [run.line()]
    assert f"fps {VTEST}=" in lines[0] and f"latency p50 {statistics.median(latencies):.1f} ms" in lines[0]
    assert run.frames == 12 and run.sources[0].frames == 12
    assert sum(size * n for size, n in run.engine_calls.items()) == 48  # 12 frames of 4 tiles
    assert max(run.engine_calls) <= 8
    quiet = run.line(since=run)  # nothing new since that snapshot: no rate, no latency
    assert f"{VTEST}=0.0" in quiet and "latency p50 - ms" in quiet and "infer 0.00" in quiet

    # /metrics, from the same counters
    src = frozenset({("source", str(VTEST))})
    assert scraped[("pixlm_frames_total", src)] == 12
    assert scraped[("pixlm_latency_seconds_count", src)] == 12
    for stage in ("tokenize", "infer", "post"):
        assert scraped[("pixlm_stage_seconds_count", frozenset({("stage", stage)}))] == 12
    assert scraped[("pixlm_engine_batch_regions_count", frozenset())] == sum(run.engine_calls.values())
    assert scraped[("pixlm_tokens_total", frozenset())] == rec.stats["tokens_total"] > 0
    assert scraped[("pixlm_prefix_reuse_hits_total", frozenset())] == rec.stats["reuse_hits"]
    events = {
        dict(labels)["kind"]: v for (name, labels), v in scraped.items() if name == "pixlm_events_total"
    }
    assert events == {k: v for k, v in outputs.counts.items() if v} and events["anomaly"] >= 4

    # the JSON: the same numbers over the whole run
    path = tmp_path / "stats.json"
    run.write_json(path)
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(run.to_dict())) and not list(tmp_path.glob(".*partial"))
    assert data["frames"] == 12 and data["sources"][0]["fps"] == pytest.approx(12 / run.seconds)
    assert data["ms_per_frame"]["infer"] == pytest.approx(run.stage_ms["infer"] / 12)
    assert data["prefix_reuse"] == {k: rec.stats[k] for k in data["prefix_reuse"]}
    assert data["events"]["anomaly"] == {str(VTEST): outputs.counts["anomaly"]}
    assert data["sources"][0]["reader"]["read"] >= 12 and data["deliveries"] == []


def test_moved_names_still_import_with_a_deprecation_warning():
    import pixlm.runtime.outputs.metrics as metrics
    import pixlm.runtime.stream as stream
    from pixlm.runtime import stats

    with pytest.warns(DeprecationWarning, match="stream.Metrics moved to pixlm.runtime.stats.StreamCounters"):
        assert stream.Metrics is StreamCounters
    for name in ("STAGE_BUCKETS", "LATENCY_BUCKETS"):
        with pytest.warns(DeprecationWarning, match=f"metrics.{name} moved to pixlm.runtime.stats.{name}"):
            assert getattr(metrics, name) is getattr(stats, name)
    with pytest.warns(DeprecationWarning, match="FleetMetrics is replaced by render"):
        old = metrics.FleetMetrics()
    assert old.render() == metrics.render(RunStats())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the types their old homes return still import there, quietly
        from pixlm.runtime.outputs.delivery import DeliveryStats
        from pixlm.runtime.outputs.metrics import Histogram
        from pixlm.runtime.sources import SourceStats
    assert (DeliveryStats, Histogram, SourceStats) == (
        stats.DeliveryStats,
        stats.Histogram,
        stats.SourceStats,
    )

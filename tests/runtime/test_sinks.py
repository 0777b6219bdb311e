"""Sinks under concurrency: results from the main thread, status events from reader threads."""

from __future__ import annotations

import json
import threading
import time

import numpy as np

from pixlm.runtime.outputs.jsonl import JsonlSink
from pixlm.runtime.records import status_record
from pixlm.runtime.scoring import Result
from pixlm.runtime.sources import SourceEvent
from pixlm.runtime.stream import FrameResult, Region, RegionResult


def test_jsonl_stays_line_valid_under_concurrent_events_and_close(tmp_path):
    """Eight reader threads emit status events while the main thread writes results and then
    closes the file; no thread may fail and every line must parse."""
    sink = JsonlSink(tmp_path / "out.jsonl")
    result = Result("Bag", 8, 0.9, [("Bag", 0.9)], 0.3)
    regions = [RegionResult(Region(f"r{i}", 0, 0, 8, 8), result, False) for i in range(64)]
    frame = FrameResult("cam", 0, time.time(), np.zeros((8, 8, 3), np.uint8), regions, 1.0)
    errors, stop = [], threading.Event()

    def reader(k: int) -> None:
        try:
            while not stop.is_set():
                sink.event(status_record(SourceEvent(f"cam{k}", "ok", time.time(), "x" * 3000)))
        except Exception as e:  # what a reader thread would have died of
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for _ in range(200):
        sink.write(frame)
    sink.close()  # while the readers are still emitting
    time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:1]
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    kinds = [json.loads(line)["type"] for line in lines]
    assert kinds.count("result") == 200 * 64 and kinds.count("status") > 0

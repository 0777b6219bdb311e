"""JSON Lines (``--jsonl``): every result and every event, one whole line each."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pixlm.runtime.stream import FrameResult


class JsonlSink:
    """One JSON object per line: a ``result`` per region of each frame, plus every event.

    Each line is written whole and flushed, so a reader (``tail -f``) never sees half a record.
    Results come from the main thread and status events from the sources' reader threads: one lock
    serialises them, and an event that arrives after ``close`` is dropped instead of raising.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise ValueError(f"{self.path}: cannot write JSON Lines ({e.strerror})") from e

    def write(self, fr: FrameResult) -> None:
        self._write("".join(json.dumps(r, separators=(",", ":")) + "\n" for r in fr.records()))

    def event(self, record: dict) -> None:
        self._write(json.dumps(record, separators=(",", ":")) + "\n")

    def _write(self, text: str) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.write(text)
                self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.flush()
                os.fsync(self._f.fileno())
                self._f.close()

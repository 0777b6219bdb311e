"""JSON Lines (``--jsonl``): every result and every event, one whole line each, in size-bounded files."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pixlm.runtime.stream import FrameResult


class JsonlSink:
    """One JSON object per line: a ``result`` per region of each frame, plus every event.

    A frame's lines (or an event's) go out in one unbuffered write, whole or not at all: when the
    disk is full the file is cut back to its last whole line and the ``OSError`` is raised for
    ``Outputs`` to count (the stream goes on); later records are written once there is space again.
    So a reader (``tail -f``) never sees half a record and the file always ends with a whole line.

    With ``max_bytes`` the file is rotated before a write would take it past the bound: ``out.jsonl``
    becomes ``out.jsonl.1``, ``.1`` becomes ``.2`` ... and the oldest beyond ``keep`` is deleted.

    Results come from the main thread and status events from the sources' reader threads: one lock
    serialises them, and an event that arrives after ``close`` is dropped instead of raising.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        max_bytes: int | None = None,
        keep: int = 3,
    ):
        self.path = Path(path)
        self.max_bytes, self.keep = max_bytes, keep
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise ValueError(f"{self.path}: cannot write JSON Lines ({e.strerror})") from e
        self._size = 0  # bytes of whole lines in the current file

    def write(self, fr: FrameResult) -> None:
        self._write([json.dumps(r, separators=(",", ":")) + "\n" for r in fr.records()])

    def event(self, record: dict) -> None:
        self._write([json.dumps(record, separators=(",", ":")) + "\n"])

    def _write(self, lines: list[str]) -> None:
        data = "".join(lines).encode()
        with self._lock:
            if self._closed or not data:
                return
            try:
                if self._f is None:  # a rotation could not open the new file: try again now
                    self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
                    self._size = self._f.tell()
                if self.max_bytes and self._size and self._size + len(data) > self.max_bytes:
                    self._rotate()
                view, done = memoryview(data), 0
                while done < len(data):
                    done += self._f.write(view[done:])
                self._size += len(data)
            except OSError as e:
                self._cut_back()
                raise OSError(e.errno, e.strerror, str(self.path)) from None

    def _cut_back(self) -> None:
        """Drop the part of a record that did reach the file: it ends with its last whole line."""
        if self._f is None:
            return
        try:
            os.ftruncate(self._f.fileno(), self._size)
            self._f.seek(self._size)
        except OSError:
            pass

    def _rotate(self) -> None:
        self._f.close()
        self._f = None
        rotated = [self.path.with_name(f"{self.path.name}.{i}") for i in range(1, self.keep + 1)]
        rotated[-1].unlink(missing_ok=True)
        for older, newer in zip(rotated[:0:-1], rotated[-2::-1], strict=True):  # .2 -> .3, .1 -> .2
            if newer.exists():
                os.replace(newer, older)
        os.replace(self.path, rotated[0])
        self._f = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed in close()
        self._size = 0

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._f is None:
                return
            try:
                os.fsync(self._f.fileno())
            except OSError:
                pass  # a pipe (--jsonl /dev/stdout) has nothing to sync; every line is already written
            self._f.close()

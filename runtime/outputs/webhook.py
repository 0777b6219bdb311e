"""``--webhook URL``: each event POSTed as JSON (the schema in events.py), retried with backoff.

A 2xx answer is delivery. A connection error, a timeout, 408, 429 or a 5xx is retried after 0.5,
1, 2 ... s (at most 30 s between tries), the event staying first in the bounded queue so order
holds; any other 4xx means the receiver refuses this event for good: it is dropped and counted
(``rejected``). Standard library only (urllib).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from pixlm import __version__
from pixlm.runtime.outputs.delivery import QueuedDelivery
from pixlm.runtime.outputs.events import KINDS
from pixlm.runtime.stream import FrameResult

log = logging.getLogger(__name__)
RETRY_STATUS = {408, 429}


class WebhookSink(QueuedDelivery):
    name = "webhook"

    def __init__(
        self, url: str, *, kinds: tuple[str, ...] = KINDS, queue_size: int = 1000, timeout_s: float = 5.0
    ):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"--webhook {url}: expected an http:// or https:// URL")
        super().__init__(queue_size=queue_size)
        self.url, self.kinds, self.timeout_s = url, kinds, timeout_s
        self.stats["rejected"] = 0
        self.start()

    def write(self, fr: FrameResult) -> None:
        pass

    def event(self, record: dict) -> None:
        if record["type"] in self.kinds:
            self.put(record)

    def close(self) -> None:
        self.close_queue()

    def deliver(self, record: dict) -> bool:
        body = json.dumps(record, separators=(",", ":")).encode()
        request = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": f"pixlm/{__version__}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return 200 <= answer.status < 300
        except urllib.error.HTTPError as e:
            if e.code in RETRY_STATUS or e.code >= 500:
                return False
            log.warning("webhook %s refused a %s event: HTTP %d", self.url, record["type"], e.code)
            self.stats["rejected"] += 1
            return True  # for good: taken off the queue
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
            return False

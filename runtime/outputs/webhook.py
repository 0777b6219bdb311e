"""``--webhook URL``: each event POSTed as JSON (the schema in events.py), retried with backoff.

What each answer means (standard library only, urllib; its own redirect handling is off, because it
turns a POST answered 301/302 into a GET without a body)::

    2xx, 303                          delivered (303: the receiver took the POST, the answer is elsewhere)
    301, 302, 307, 308 + Location     followed: the same POST with the same body and signature, at most
                                      5 hops, never from https to http
    408, 429, 5xx, no answer, timeout tried again after 0.5, 1, 2 ... s (at most 30 s between tries), the
                                      event staying first in the bounded queue so order holds
    401, 403                          refused, and the output is failed (not authorised) until a 2xx
    other 4xx and 3xx, a redirect     refused: counted, the first refusal of each kind said on the
    loop, a redirect without Location console

With a secret (``PIXLM_WEBHOOK_SECRET``), every POST carries ``X-Pixlm-Signature: sha256=<hex>``, the
HMAC-SHA256 of the exact body under that key, so the receiver can check who sent it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import urllib.error
import urllib.request
from urllib.parse import urljoin, urlsplit

from pixlm import __version__
from pixlm.runtime.outputs.delivery import QueuedDelivery, Refused
from pixlm.runtime.records import KINDS
from pixlm.runtime.stream import FrameResult

RETRY_STATUS = {408, 429}
FOLLOW_STATUS = {301, 302, 307, 308}
MAX_REDIRECTS = 5
SIGNATURE_HEADER = "X-Pixlm-Signature"
SECRET_ENV = "PIXLM_WEBHOOK_SECRET"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None  # every 3xx comes back as an HTTPError; deliver() decides


def signature(secret: bytes, body: bytes) -> str:
    """The ``X-Pixlm-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _check_url(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{what} {url}: expected an http:// or https:// URL")


class WebhookSink(QueuedDelivery):
    name = "webhook"

    def __init__(
        self,
        url: str,
        *,
        kinds: tuple[str, ...] = KINDS,
        queue_size: int = 1000,
        timeout_s: float = 5.0,
        secret: str | bytes | None = None,
    ):
        _check_url(url, "--webhook")
        if secret is not None and not secret:
            raise ValueError("the webhook secret is empty")
        super().__init__(queue_size=queue_size)
        self.url, self.kinds, self.timeout_s = url, kinds, timeout_s
        self.peer = urlsplit(url).netloc.rpartition("@")[2]  # host[:port]: said, never the URL's login
        self.secret = secret.encode() if isinstance(secret, str) else secret
        self._opener = urllib.request.build_opener(_NoRedirect)
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
        headers = {"Content-Type": "application/json", "User-Agent": f"pixlm/{__version__}"}
        if self.secret:
            headers[SIGNATURE_HEADER] = signature(self.secret, body)
        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            request = urllib.request.Request(url, data=body, method="POST", headers=headers)
            try:
                with self._opener.open(request, timeout=self.timeout_s):
                    pass  # urllib raises HTTPError for anything but 2xx
            except urllib.error.HTTPError as e:
                code, location = e.code, e.headers.get("Location")
                e.close()
                if code in FOLLOW_STATUS and location:
                    url = self._follow(url, location, code)
                    continue
                if code == 303:
                    break
                if code in RETRY_STATUS or code >= 500:
                    return False
                if code in (401, 403):
                    reason = f"HTTP {code} from {self.peer} (not authorised: check {SECRET_ENV} and the URL)"
                    self.fail(reason)
                    raise Refused(reason) from None
                raise Refused(
                    f"HTTP {code}" + (" without a Location" if code in FOLLOW_STATUS else "")
                ) from None
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError):
                return False
            break
        else:
            raise Refused(f"more than {MAX_REDIRECTS} redirects")
        self.recover(f"{self.peer} takes events again")
        return True

    @staticmethod
    def _follow(url: str, location: str, code: int) -> str:
        target = urljoin(url, location)
        try:
            _check_url(target, "redirect to")
        except ValueError:
            raise Refused(f"HTTP {code} to {location!r}, not an http(s) URL") from None
        if urlsplit(url).scheme == "https" and urlsplit(target).scheme == "http":
            raise Refused(f"HTTP {code} from https to plain http {target}, not followed")
        return target

"""``--mqtt mqtt://host:1883/pixlm``: events to an MQTT broker (paho-mqtt, imported when asked for).

Topics (``PREFIX`` from the URL's path, default ``pixlm``)::

    PREFIX/<source>/anomaly   PREFIX/<source>/label   PREFIX/<source>/status   (QoS 1, JSON: records.py)
    PREFIX/status             "online" / "offline", retained; "offline" is the last will

``<source>`` is the source's name made topic-safe (``sources.source_slug``). While the broker is
down, events wait in a bounded queue (``QueuedDelivery``) and go out in order once paho has
reconnected: at least once within the bound; the ones dropped beyond it are counted.

An outage (connection refused, a broker restarting) is waited out quietly. What will not fix itself
is said at once (``QueuedDelivery.fail``: the console, a status event, exit status 1 at the end):
the broker refusing the login ("not authorised", "bad user name or password"), a TLS handshake that
fails (``mqtts://`` at a plain port, a certificate not trusted), a host name that does not resolve.
paho keeps trying meanwhile, so a broker fixed during the run is used, and the failure cleared.
"""

from __future__ import annotations

import json
import socket
import ssl
import sys
import threading
import traceback
from urllib.parse import unquote, urlsplit

from pixlm.runtime.outputs.delivery import QueuedDelivery
from pixlm.runtime.records import KINDS
from pixlm.runtime.sources import source_slug
from pixlm.runtime.stream import FrameResult

PAHO_HINT = 'pip install "paho-mqtt>=2,<3" (or pixlm[mqtt])'
# CONNACK reason codes that a retry with the same settings cannot change: unsupported protocol
# version, client identifier not valid, bad user name or password, not authorised, bad auth method
REFUSED_FOR_GOOD = {0x84, 0x85, 0x86, 0x87, 0x8C}


def parse_mqtt_url(url: str) -> dict:
    """``mqtt[s]://[user[:password]@]host[:port][/prefix]`` -> connection settings."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(f"--mqtt {url}: expected mqtt://host[:port]/prefix (or mqtts:// for TLS)")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ValueError(f"--mqtt {url}: bad port") from None
    prefix = parts.path.strip("/") or "pixlm"
    if "+" in prefix or "#" in url:  # urlsplit reads "#..." as a fragment
        raise ValueError(f"--mqtt {url}: the topic prefix may not hold MQTT wildcards (+, #)")
    return {
        "host": parts.hostname,
        "port": port,
        "tls": parts.scheme == "mqtts",
        "username": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "prefix": prefix,
    }


class MqttSink(QueuedDelivery):
    name = "mqtt"

    def __init__(
        self,
        url: str,
        *,
        kinds: tuple[str, ...] = KINDS,
        queue_size: int = 1000,
        client_id: str | None = None,
        ack_timeout_s: float = 5.0,
    ):
        try:
            import paho.mqtt.client as mqtt
        except ImportError:
            raise ValueError(f"--mqtt needs paho-mqtt: {PAHO_HINT}") from None
        super().__init__(queue_size=queue_size)
        self.settings = s = parse_mqtt_url(url)
        self.kinds, self.ack_timeout_s = kinds, ack_timeout_s
        self.status_topic = f"{s['prefix']}/status"
        self._connected = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or "")
        if s["username"]:
            self.client.username_pw_set(s["username"], s["password"])
        if s["tls"]:
            self.client.tls_set()
        self.client.will_set(self.status_topic, "offline", qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=1, max_delay=10)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.connect_async(s["host"], s["port"], keepalive=15)
        self.client.loop_start()  # paho's network thread: connects, and reconnects after a loss
        self.start()

    @property
    def broker(self) -> str:
        return f"{self.settings['host']}:{self.settings['port']}"

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.publish(self.status_topic, "online", qos=1, retain=True)
            self._connected.set()
            self.recover(f"connected to {self.broker}")
        elif reason_code.value in REFUSED_FOR_GOOD:
            login = "without a user name" if not self.settings["username"] else "with the given login"
            self.fail(
                f"the broker {self.broker} refused the connection {login}: not authorised ({reason_code})"
            )

    def _on_connect_fail(self, client, userdata) -> None:
        """paho calls this inside its ``except OSError``: the exception says what went wrong."""
        e = sys.exc_info()[1]
        if isinstance(e, socket.gaierror):
            self.fail(f"cannot resolve the broker's host {self.settings['host']!r} ({e.strerror})")
        elif self.settings["tls"] and e is not None and _in_tls_handshake(e):
            self.fail(
                f"TLS handshake with {self.broker} failed ({e}): mqtts:// needs a TLS listener "
                "(usually port 8883) whose certificate this machine trusts"
            )
        # else an outage (refused, unreachable, timed out): paho tries again, events wait queued

    # -- the sink interface ------------------------------------------------------------------------
    def write(self, fr: FrameResult) -> None:
        pass  # per-region results stay in the JSON Lines; MQTT carries events

    def event(self, record: dict) -> None:
        if record["type"] in self.kinds:
            self.put(record)

    def close(self) -> None:
        self.close_queue()
        if self._connected.is_set():
            info = self.client.publish(self.status_topic, "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout=1)
            except (ValueError, RuntimeError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # -- delivery ---------------------------------------------------------------------------------
    def topic(self, record: dict) -> str:
        return f"{self.settings['prefix']}/{source_slug(record['source'])}/{record['type']}"

    def ready(self) -> bool:
        return self._connected.is_set()

    def retry_delay(self, failures: int) -> float:
        return 0.2  # paho reconnects on its own schedule; ready() gates the sender meanwhile

    def deliver(self, record: dict) -> bool:
        payload = json.dumps(record, separators=(",", ":"))
        info = self.client.publish(self.topic(record), payload, qos=1)
        if info.rc != 0:
            return False
        try:
            info.wait_for_publish(timeout=self.ack_timeout_s)
        except (ValueError, RuntimeError):  # not queued, or the connection went away
            return False
        return info.is_published()  # the broker's PUBACK arrived


def _in_tls_handshake(e: BaseException) -> bool:
    """A TLS error, or a connection reset during the handshake (a plain listener hanging up)."""
    frames = traceback.extract_tb(e.__traceback__)
    return isinstance(e, ssl.SSLError) or any(f.name == "do_handshake" for f in frames)

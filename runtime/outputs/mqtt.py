"""``--mqtt mqtt://host:1883/pixlm``: events to an MQTT broker (paho-mqtt, imported when asked for).

Topics (``PREFIX`` from the URL's path, default ``pixlm``)::

    PREFIX/<source>/anomaly   PREFIX/<source>/label   PREFIX/<source>/status   (QoS 1, JSON: events.py)
    PREFIX/status             "online" / "offline", retained; "offline" is the last will

``<source>`` is the source's name made topic-safe (``events.source_slug``). While the broker is
down, events wait in a bounded queue (``QueuedDelivery``) and go out in order once paho has
reconnected: at least once within the bound; the ones dropped beyond it are counted.
"""

from __future__ import annotations

import json
import threading
from urllib.parse import unquote, urlsplit

from pixlm.runtime.outputs.delivery import QueuedDelivery
from pixlm.runtime.outputs.events import KINDS, source_slug
from pixlm.runtime.stream import FrameResult

PAHO_HINT = 'pip install "paho-mqtt>=2,<3" (or pixlm[mqtt])'


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
        self.client.on_disconnect = lambda *a: self._connected.clear()
        self.client.connect_async(s["host"], s["port"], keepalive=15)
        self.client.loop_start()  # paho's network thread: connects, and reconnects after a loss
        self.start()

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if not reason_code.is_failure:
            client.publish(self.status_topic, "online", qos=1, retain=True)
            self._connected.set()

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
                info.wait_for_publish(timeout=2)
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

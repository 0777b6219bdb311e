"""Stream sources with a live view in the browser, /metrics and, optionally, events to MQTT: what
`pixlm run --serve --mqtt` does, from Python.

    python samples/live_view.py build/vtest-scene /usr/share/doc/opencv-doc/examples/data/vtest.avi \
        127.0.0.1:8080 [mqtt://127.0.0.1:1883/pixlm] [SECONDS]

Open http://127.0.0.1:8080/ while it runs: each source's overlay (heat map per tile), the latest
events, the metrics line. The clip plays at its own rate, in a loop, for SECONDS (default 60).
"""

import sys
import time

from pixlm import Recognizer
from pixlm.runtime.outputs import Outputs
from pixlm.runtime.outputs.server import LiveServer
from pixlm.runtime.stream import Streamer

bundle, uri, address = sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1:8080"
mqtt = sys.argv[4] if len(sys.argv) > 4 and sys.argv[4] != "-" else None
seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0

rec = Recognizer.open(bundle, precision="fp32")
server = LiveServer(address, [uri])
outputs = Outputs([server])
if mqtt:
    from pixlm.runtime.outputs.mqtt import MqttSink

    outputs.add(MqttSink(mqtt))
print(f"live view on {server.address}")
options = dict(grid=(6, 8), anomaly_threshold=3.0, anomaly_score="peak", nll_map=True, realtime=True, loop=0)
streamer = Streamer(rec, [uri], on_event=outputs.status, **options)
server.attach(streamer)  # adds the sources' and engine's counters to /metrics
end = time.monotonic() + seconds
try:
    with streamer:
        for fr in streamer:
            outputs.frame(fr)
            if time.monotonic() > end:
                break
finally:
    outputs.close()
print("events:", outputs.counts)

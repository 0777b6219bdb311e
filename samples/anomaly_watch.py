"""Watch a static camera for unusual things with a model of its scene, learned without labels.

    pixlm-export sdk/models/vtest-scene.pt --data vtest.avi --no-int8 --no-dynamic -o build/vtest-scene
    python samples/anomaly_watch.py build/vtest-scene /usr/share/doc/opencv-doc/examples/data/vtest.avi

The scene model learned vtest.avi's first 50% in 96x96 tiles (6x8 grid) without labels; its
bundle holds per-tile alert thresholds calibrated on frames 50-60%, which `rec.stream` applies on
its own, with the grid and frame stride they were made for. An alert starts when a tile has stayed
surprising for a second (a walker passes, a left object stays), updates while it stays, ends when
quiet: each phase is printed and written to events.jsonl, with JPEG snapshots in snapshots/
(`make demo` builds the bundle). A third argument overrides every tile's threshold (bits/px).
"""

import sys

from pixlm import Recognizer
from pixlm.runtime.outputs import CallbackSink, Outputs, SnapshotWriter
from pixlm.runtime.outputs.jsonl import JsonlSink

bundle = sys.argv[1] if len(sys.argv) > 1 else "build/vtest-scene"
uri = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
threshold = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] != "-" else None
frames = int(sys.argv[4]) if len(sys.argv) > 4 else 300


def show(event: dict) -> None:
    if event["type"] == "anomaly":
        where = f"frame {event['frame']} region {event['region']['name']}"
        seen = f"{event['phase']} {event['alert_id']}: {event['duration_s']:.1f} s, peak {event['peak']:.2f}"
        print(f"{where}: {seen}" + (f" -> snapshots/{event['snapshot']}" if event["snapshot"] else ""))


rec = Recognizer.open(bundle, precision="fp32")
outputs = Outputs(
    [JsonlSink("events.jsonl"), CallbackSink(lambda fr: None, show)], SnapshotWriter("snapshots")
)
stream = rec.stream([uri], anomaly_threshold=threshold, max_frames=frames)
try:
    for fr in stream:
        outputs.frame(fr)
finally:
    outputs.close()
s = rec.stats
print(
    f"{outputs.counts['anomaly']} anomaly events (alert phases); prefix reuse saved {s['tokens_saved']} of "
    f"{s['tokens_total']} tokens ({s['reuse_hits']} of {s['frames']} regions reused a prefix)"
)

"""Watch a static camera for unusual things with a model of its scene, learned without labels.

    pixlm-export sdk/models/vtest-scene.pt --data vtest.avi --no-int8 --no-dynamic -o build/vtest-scene
    python samples/anomaly_watch.py build/vtest-scene /usr/share/doc/opencv-doc/examples/data/vtest.avi 3.0

The scene model (`pixlm study scene`) learned vtest.avi's first 60% in 96x96 tiles. A region's
`anomaly_peak` is the surprise of its most surprising tenth of tokens, in bits per pixel; 2.8 found
90% of pasted objects in the study. Each time a region rises above the threshold: one anomaly
event, printed, written to events.jsonl with JPEG snapshots in snapshots/ (`make demo` builds the
bundle).
"""

import sys

from pixlm import Recognizer
from pixlm.runtime.outputs import CallbackSink, Outputs, SnapshotWriter
from pixlm.runtime.outputs.jsonl import JsonlSink

bundle = sys.argv[1] if len(sys.argv) > 1 else "build/vtest-scene"
uri = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
threshold = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
frames = int(sys.argv[4]) if len(sys.argv) > 4 else 300


def show(event: dict) -> None:
    if event["type"] == "anomaly":
        where = f"frame {event['frame']} region {event['region']['name']}"
        print(f"{where}: peak {event['anomaly_peak']:.2f} bits/px -> snapshots/{event['snapshot']}")


rec = Recognizer.open(bundle, precision="fp32")
outputs = Outputs(
    [JsonlSink("events.jsonl"), CallbackSink(lambda fr: None, show)], SnapshotWriter("snapshots")
)
stream = rec.stream([uri], grid=(6, 8), anomaly_threshold=threshold, anomaly_score="peak", max_frames=frames)
try:
    for fr in stream:
        outputs.frame(fr)
finally:
    outputs.close()
s = rec.stats
print(
    f"{outputs.counts['anomaly']} anomaly events; prefix reuse saved {s['tokens_saved']} of "
    f"{s['tokens_total']} tokens ({s['reuse_hits']} of {s['frames']} regions reused a prefix)"
)

"""Watch a static camera for unusual regions: the anomaly score is the model's surprise, in bits/pixel.

    python samples/anomaly_watch.py /usr/share/doc/opencv-doc/examples/data/vtest.avi 0.35

Streams the source in a 3x3 grid with KV prefix reuse and prints an event whenever a region's
score passes the threshold; ends with the prefix-reuse statistics.
"""

import sys

from pixlm.runtime.recognizer import Recognizer

uri = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
threshold = float(sys.argv[2]) if len(sys.argv) > 2 else 0.35

rec = Recognizer.open(precision="fp32")
events = 0
for fr in rec.stream([uri], grid=(3, 3), anomaly_threshold=threshold, max_frames=300):
    for rr in fr.regions:
        if rr.anomalous:
            events += 1
            print(f"frame {fr.index} region {rr.region.name}: {rr.result.anomaly:.3f} bits/px")
s = rec.stats
print(
    f"{events} events; prefix reuse saved {s['tokens_saved']} of {s['tokens_total']} tokens "
    f"({s['reuse_hits']} of {s['frames']} regions reused a prefix)"
)

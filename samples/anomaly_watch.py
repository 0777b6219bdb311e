"""Watch a static camera for unusual things with a model of its scene, learned without labels.

    pixlm-export sdk/models/vtest-scene.pt --data vtest.avi --no-int8 --no-dynamic -o build/vtest-scene
    python samples/anomaly_watch.py build/vtest-scene /usr/share/doc/opencv-doc/examples/data/vtest.avi 3.0

The scene model (`pixlm study scene`) learned vtest.avi's first 60% in 96x96 tiles. A region's
`anomaly_peak` is the surprise of its most surprising tenth of tokens, in bits per pixel; 2.8 found
90% of pasted objects in the study. Prints an event per region above the threshold (`make demo`
builds the bundle).
"""

import sys

from pixlm.runtime.recognizer import Recognizer

bundle = sys.argv[1] if len(sys.argv) > 1 else "build/vtest-scene"
uri = sys.argv[2] if len(sys.argv) > 2 else "/usr/share/doc/opencv-doc/examples/data/vtest.avi"
threshold = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0

rec = Recognizer.open(bundle, precision="fp32")
events = 0
stream = rec.stream([uri], grid=(6, 8), anomaly_threshold=threshold, anomaly_score="peak", max_frames=300)
for fr in stream:
    for rr in fr.regions:
        if rr.anomalous:
            events += 1
            print(f"frame {fr.index} region {rr.region.name}: peak {rr.result.anomaly_peak:.2f} bits/px")
s = rec.stats
print(
    f"{events} events; prefix reuse saved {s['tokens_saved']} of {s['tokens_total']} tokens "
    f"({s['reuse_hits']} of {s['frames']} regions reused a prefix)"
)
